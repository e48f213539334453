"""A step that uses every service of its context, for tests/test_plugin_context.py."""

from __future__ import annotations

from typing import Any, ClassVar

from headrace.plugin import Batch, Options, Step, StepOutput

SEEN: dict[str, Any] = {"sessions": set(), "scratch": set(), "statuses": []}


class ProbeOptions(Options):
    url: str


class ContextProbe(Step):
    summary = "uses the logger, counters, scratch dir and shared HTTP session"
    Options: ClassVar[type[ProbeOptions]] = ProbeOptions
    options: ProbeOptions

    async def process_async(self, batch: Batch) -> StepOutput:
        session = await self.context.http_session()
        SEEN["sessions"].add(id(session))
        SEEN["session"] = session
        async with session.get(self.options.url) as reply:
            SEEN["statuses"].append(reply.status)
        scratch = self.context.scratch_dir
        (scratch / f"batch-{batch.records_before}.tmp").write_text("x")
        SEEN["scratch"].add(scratch)
        self.context.emit("records", batch.num_rows)
        self.context.emit("batches")
        self.context.logger.info("%s saw %d records", self.context.plugin_id, batch.num_rows)
        SEEN["stopping"] = self.context.stopping
        return StepOutput(batch)
