"""Prometheus metrics for ``headrace run --metrics-port``: an observer that folds engine events
into its own registry, and a small HTTP endpoint serving ``/metrics`` and ``/healthz`` from a
daemon thread while the run lasts.

prometheus_client is imported here and nowhere below the CLI (``tests/test_layers.py``). Every
metric name is listed in ``docs/metrics.md``; keep the two in step.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.process_collector import ProcessCollector

from headrace._version import __version__
from headrace.engine import (
    BatchProcessed,
    BatchRead,
    BatchWritten,
    BreakerChanged,
    CheckpointCommitted,
    Event,
    RateLimited,
    RetryScheduled,
    RunFinished,
    RunStarted,
    Sampled,
    StopRequested,
)
from headrace.errors import ConfigError

logger = logging.getLogger("headrace.cli.metrics")

NAMESPACE = "headrace"
# headrace_breaker_state: the value of each state.
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
# headrace_run_status{status}: exactly one of these is 1.
RUN_STATUSES = ("starting", "running", "stopping", "ok", "failed", "interrupted")
# Seconds per batch, 1 ms to 60 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class MetricsObserver:
    """Engine events as Prometheus metrics in a registry of its own (never the global one).

    Counters only ever add what events report, so at ``RunFinished`` they equal the summary:
    ``records_in`` is ``source_records_read``, ``records_out`` is ``sink_records_written``,
    ``records_filtered`` the sum of ``step_records_filtered`` and ``records_dead`` that of
    ``step_records_dead`` plus ``source_records_rejected``. Calls are quick and never raise.
    """

    def __init__(self, pipeline: str = "", *, registry: CollectorRegistry | None = None,
                 process: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.pipeline = pipeline
        self.status = "starting"
        self._clock = clock
        self._failures = 0
        r = self.registry

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(name, doc, list(labels), namespace=NAMESPACE, registry=r)

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
            return Gauge(name, doc, list(labels), namespace=NAMESPACE, registry=r)

        self.source_read = counter("source_records_read", "Records the source read, rejected "
                                   "ones included (the summary's records_in).")
        self.source_rejected = counter("source_records_rejected", "Records the source could "
                                       "not decode, dead-lettered before the first step.")
        self.sink_written = counter("sink_records_written", "Records the sink wrote "
                                    "(the summary's records_out).")
        self.step_in = counter("step_records_in", "Records into a step.", ["step"])
        self.step_out = counter("step_records_out", "Records out of a step.", ["step"])
        self.step_filtered = counter("step_records_filtered", "Records a step dropped on "
                                     "purpose (a filter, on_error: skip).", ["step"])
        self.step_dead = counter("step_records_dead", "Records a step dead-lettered.", ["step"])
        self.retries = counter("step_retries", "Calls retried after a transient error, by "
                               "error class.", ["step", "reason"])
        self.latency = Histogram("step_batch_duration_seconds", "Seconds a step took per batch.",
                                 ["step"], namespace=NAMESPACE, registry=r,
                                 buckets=LATENCY_BUCKETS)
        self.in_flight = gauge("step_in_flight", "Calls in flight in a step.", ["step"])
        self.plugin_counts = counter("plugin", "Counters plugins keep (context.emit).",
                                     ["plugin", "name"])
        self._plugin_seen: dict[tuple[str, str], float] = {}
        self.edge_queued = gauge("edge_queued_batches", "Batches waiting on an edge "
                                 "(channel) between two stages.", ["edge"])
        self.edge_capacity = gauge("edge_capacity_batches", "Batches an edge can hold.",
                                   ["edge"])
        self.breaker_state = gauge("breaker_state", "Circuit breaker state: 0 closed, "
                                   "1 half_open, 2 open.", ["step", "key"])
        self.breaker_changes = counter("breaker_transitions", "Breaker state changes, by the "
                                       "state entered.", ["step", "key", "state"])
        self.rate_waits = counter("step_rate_limited", "Calls that waited for their rate "
                                  "limit.", ["step"])
        self.rate_wait_seconds = counter("step_rate_limit_wait_seconds", "Seconds calls "
                                         "waited for their rate limit.", ["step"])
        self.checkpoint_position = gauge("checkpoint_position", "Source position before which "
                                         "every record is durably in the sink or dead-lettered.")
        self.checkpoint_records = gauge("checkpoint_records", "Source records committed, this "
                                        "run and the runs it resumes.")
        self.run_status = gauge("run_status", "1 for the run's current status.", ["status"])
        self.run_started = gauge("run_start_time_seconds", "Unix time the run started.")
        self.run_info = Info("run", "The pipeline and headrace version.", namespace=NAMESPACE,
                             registry=r)
        self.run_info.info({"pipeline": pipeline, "version": __version__})
        for status in RUN_STATUSES:
            self.run_status.labels(status).set(1 if status == self.status else 0)
        if process:  # headrace_process_resident_memory_bytes and friends (Linux /proc)
            ProcessCollector(namespace=NAMESPACE, registry=r)
        self._handlers: dict[type, Callable[[Any], None]] = {
            RunStarted: self._run_started, BatchRead: self._batch_read,
            BatchProcessed: self._batch_processed, BatchWritten: self._batch_written,
            RetryScheduled: self._retry, BreakerChanged: self._breaker,
            RateLimited: self._rate_limited, Sampled: self._sampled,
            CheckpointCommitted: self._checkpoint, StopRequested: self._stop,
            RunFinished: self._run_finished,
        }

    def __call__(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is None:
            return
        try:
            handler(event)
        except Exception:  # an observer must not break the run; say so once, then count
            self._failures += 1
            if self._failures == 1:
                logger.warning("metrics: cannot record %s", type(event).__name__,
                               exc_info=True)

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` answers: ``ok`` while the run goes on, ``stopping`` after."""
        running = self.status in ("starting", "running")
        return {"status": "ok" if running else "stopping", "run": self.status,
                "pipeline": self.pipeline}

    def _set_status(self, status: str) -> None:
        self.run_status.labels(self.status).set(0)
        self.status = status
        self.run_status.labels(status).set(1)

    def _run_started(self, event: RunStarted) -> None:
        if event.pipeline != self.pipeline:
            self.pipeline = event.pipeline
            self.run_info.info({"pipeline": event.pipeline, "version": __version__})
        self.run_started.set(self._clock())
        for step in event.step_ids:  # every step's series exists from the start, at 0
            for metric in (self.step_in, self.step_out, self.step_filtered, self.step_dead,
                           self.latency, self.in_flight):
                metric.labels(step)
        self._set_status("running")

    def _batch_read(self, event: BatchRead) -> None:
        self.source_read.inc(event.records + event.rejected)
        if event.rejected:
            self.source_rejected.inc(event.rejected)

    def _batch_processed(self, event: BatchProcessed) -> None:
        step = event.step_id
        self.step_in.labels(step).inc(event.records_in)
        self.step_out.labels(step).inc(event.records_out)
        if event.filtered:
            self.step_filtered.labels(step).inc(event.filtered)
        if event.dead:
            self.step_dead.labels(step).inc(event.dead)
        self.latency.labels(step).observe(max(event.seconds, 0.0))

    def _batch_written(self, event: BatchWritten) -> None:
        self.sink_written.inc(event.records)

    def _retry(self, event: RetryScheduled) -> None:
        self.retries.labels(event.step_id, event.reason).inc()

    def _breaker(self, event: BreakerChanged) -> None:
        state = event.state.replace("-", "_")
        value = BREAKER_STATES.get(state)
        if value is None:
            logger.debug("metrics: unknown breaker state %r", event.state)
            return
        self.breaker_state.labels(event.step_id, event.key).set(value)
        self.breaker_changes.labels(event.step_id, event.key, state).inc()

    def _rate_limited(self, event: RateLimited) -> None:
        self.rate_waits.labels(event.step_id).inc()
        self.rate_wait_seconds.labels(event.step_id).inc(max(event.seconds, 0.0))

    def _sampled(self, event: Sampled) -> None:
        for edge in event.edges:
            self.edge_queued.labels(edge.edge).set(edge.queued)
            self.edge_capacity.labels(edge.edge).set(edge.capacity)
        for step, calls in event.in_flight:
            self.in_flight.labels(step).set(calls)
        self._plugin_totals(event.plugin_metrics)

    def _plugin_totals(self, totals: Iterable[tuple[str, str, float]]) -> None:
        # Plugins keep totals; the counter adds what is new since the last sample.
        for plugin, name, total in totals:
            new = total - self._plugin_seen.get((plugin, name), 0.0)
            if new > 0:
                self.plugin_counts.labels(plugin, name).inc(new)
                self._plugin_seen[(plugin, name)] = total

    def _checkpoint(self, event: CheckpointCommitted) -> None:
        self.checkpoint_position.set(event.position)
        self.checkpoint_records.set(event.records)

    def _stop(self, event: StopRequested) -> None:
        if self.status in ("starting", "running"):
            self._set_status("stopping")

    def _run_finished(self, event: RunFinished) -> None:
        self._set_status(str(event.summary.get("status", "failed")))
        metrics = event.summary.get("plugin_metrics", {})
        self._plugin_totals((plugin, name, total) for plugin, counts in metrics.items()
                            for name, total in counts.items())
        for step in self._known_steps():
            self.in_flight.labels(step).set(0)
        differences = self.differences(event.summary)
        if differences:
            log = logger.debug if event.summary.get("output_discarded") else logger.warning
            log("metrics disagree with the run summary: %s", "; ".join(differences))

    def _known_steps(self) -> list[str]:
        return [s.labels["step"] for s in self._samples() if s.name == "headrace_step_in_flight"]

    def _samples(self) -> list[Any]:
        return [s for family in self.registry.collect() for s in family.samples]

    def totals(self) -> dict[str, Any]:
        """The counters in the summary's shape: records_in/out/filtered/dead, and per step
        in/out/filtered/dead/retries/batches."""
        steps: dict[str, dict[str, int]] = {}
        flat: dict[str, float] = {}
        fields = {"headrace_step_records_in_total": "in",
                  "headrace_step_records_out_total": "out",
                  "headrace_step_records_filtered_total": "filtered",
                  "headrace_step_records_dead_total": "dead",
                  "headrace_step_retries_total": "retries",
                  "headrace_step_batch_duration_seconds_count": "batches"}
        for sample in self._samples():
            if sample.name in fields:
                step = steps.setdefault(sample.labels["step"], dict.fromkeys(fields.values(), 0))
                step[fields[sample.name]] += int(sample.value)
            elif not sample.labels:
                flat[sample.name] = sample.value
        rejected = int(flat.get("headrace_source_records_rejected_total", 0))
        return {
            "records_in": int(flat.get("headrace_source_records_read_total", 0)),
            "records_out": int(flat.get("headrace_sink_records_written_total", 0)),
            "records_filtered": sum(s["filtered"] for s in steps.values()),
            "records_dead": rejected + sum(s["dead"] for s in steps.values()),
            "steps": steps,
        }

    def differences(self, summary: dict[str, Any]) -> list[str]:
        """Where the counters and a run summary disagree; empty when they agree."""
        totals = self.totals()
        found = [f"{key}: metrics {totals[key]}, summary {summary[key]}"
                 for key in ("records_in", "records_out", "records_filtered", "records_dead")
                 if key in summary and totals[key] != summary[key]]
        for step in summary.get("steps", []):
            counted = totals["steps"].get(step.get("id"), {})
            for key in ("in", "out", "filtered", "dead", "retries", "batches"):
                if key in step and counted.get(key, 0) != step[key]:
                    found.append(f"step {step['id']} {key}: metrics {counted.get(key, 0)}, "
                                 f"summary {step[key]}")
        return found


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: it would interleave with the progress display."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck client never holds up the end of the run

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can wait on DNS for seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


def _wsgi_app(observer: MetricsObserver) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(observer.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        if path == "/healthz":
            status, body = "200 OK", json.dumps(observer.health()).encode()
            content_type = "application/json"
        else:
            status, body = "404 Not Found", b"not found: try /metrics or /healthz\n"
            content_type = "text/plain; charset=utf-8"
        start_response(status, [("Content-Type", content_type),
                                ("Content-Length", str(len(body)))])
        return [body]

    return app


class MetricsServer:
    """``/metrics`` and ``/healthz`` for ``observer``, served from a daemon thread.

    Listening starts in the constructor, so a port in use is a ``ConfigError`` before the run
    starts; ``close()`` stops serving and joins the thread (idempotent).
    """

    def __init__(self, observer: MetricsObserver, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.observer = observer
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                        flags=socket.AI_PASSIVE)[0][0]
            server_class = type("_Server", (_Server,), {"address_family": family})
            self._httpd: WSGIServer = make_server(
                host, port, _wsgi_app(observer), server_class=server_class,
                handler_class=_QuietHandler)
        except socket.gaierror as exc:
            raise ConfigError(f"--metrics-host {host}: {exc.strerror or exc}",
                              hint="an address such as 127.0.0.1, 0.0.0.0 or ::1") from exc
        except OSError as exc:
            raise ConfigError(f"--metrics-port: cannot listen on {host}:{port}: "
                              f"{exc.strerror or exc}",
                              hint="choose another --metrics-port, or 0 for any free port"
                              ) from exc
        self.host = host
        self.port: int = self._httpd.server_port
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.02},  # close() waits one
                                        name="headrace-metrics", daemon=True)
        self._thread.start()
        self.closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self, timeout: float = 5.0) -> None:
        if self.closed:
            return
        self.closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
