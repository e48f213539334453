"""The validate step's three ways to check records, on the same CSV: the Arrow screen
(vectorised, jsonschema-rs only for flagged rows), jsonschema-rs on every record, and a
pydantic model on every record.

    .venv/bin/python benchmarks/bench_validate.py            # 1,000,000 rows, 3 repeats
    .venv/bin/python benchmarks/bench_validate.py --rows 200000 --repeat 1

The CSV (8 fields, about 1% invalid rows) is written to a temporary folder and read with
pyarrow into batches of 65,536 rows, as the csv source delivers them; each contender runs
the step's ``process`` over every batch in this process, so the figures are the validation
alone (no parsing, no sink). The schema is examples/validate-orders/schema.json. Prints the
median seconds, rows per second and the ratios to the vectorised run; not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
from pydantic import BaseModel, Field

from headrace.builtins.validation import ValidateStep
from headrace.plugin import Batch, PluginContext

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "validate-orders" / "schema.json"
BATCH = 65_536


class Order(BaseModel):
    """The schema's rules as a pydantic model (module-level: the step imports it by path)."""

    order_id: int = Field(ge=1)
    customer_email: str = Field(pattern=r"^[^@ ]+@[^@ ]+\.[a-z]{2,}$")
    country: str = Field(pattern="^(DE|FR|NL|SE|US)$")
    amount: float = Field(gt=0, le=10_000)
    quantity: int = Field(ge=1, le=100)
    status: str = Field(pattern="^(new|paid|shipped|cancelled)$")
    ordered_at: Any
    coupon: str | None = Field(default=None, max_length=12)


def write_csv(path: Path, rows: int, seed: int = 6) -> None:
    rng = random.Random(seed)
    countries, statuses = ["DE", "FR", "NL", "SE", "US"], ["new", "paid", "shipped", "cancelled"]
    with path.open("w", encoding="utf-8") as f:
        f.write("order_id,customer_email,country,amount,quantity,status,ordered_at,coupon\n")
        for i in range(1, rows + 1):
            amount = f"{rng.uniform(1, 500):.2f}" if rng.random() > 0.005 else "-3.00"
            email = f"c{rng.randrange(9999)}@example.com" if rng.random() > 0.005 else "nope"
            f.write(f"{i},{email},{rng.choice(countries)},{amount},{rng.randrange(1, 20)},"
                    f"{rng.choice(statuses)},2024-{rng.randrange(1, 13):02d}-"
                    f"{rng.randrange(1, 29):02d}T10:00:00,{rng.choice(['', 'SPRING10'])}\n")


def batches(path: Path) -> list[Batch]:
    table = pacsv.read_csv(path).combine_chunks()
    return [Batch.from_arrow(b) for b in table.to_batches(max_chunksize=BATCH)]


def step(options: dict[str, Any]) -> ValidateStep:
    context = PluginContext(plugin_id="validate", base_dir=Path(__file__).parent)
    return ValidateStep(ValidateStep.Options.model_validate(options), context)


def measure(contender: ValidateStep, data: list[Batch], repeat: int) -> tuple[float, int]:
    times, invalid = [], 0
    contender.process(Batch.from_arrow(data[0].to_arrow().slice(0, 1000)))  # warm up
    for _ in range(repeat):
        # A fresh Batch per run: a rows conversion cached by an earlier run would flatter it.
        fresh = [Batch.from_arrow(b.to_arrow()) for b in data]
        started = time.perf_counter()
        invalid = sum(len(contender.process(b).dead) for b in fresh)
        times.append(time.perf_counter() - started)
    return statistics.median(times), invalid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    contenders = {
        "vectorised (Arrow screen + jsonschema-rs)": step({"schema": schema}),
        "jsonschema-rs per record": step({"schema": schema, "vectorize": False}),
        "pydantic per record": step({"model": "bench_validate:Order"}),
    }
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as folder:
        path = Path(folder) / "orders.csv"
        write_csv(path, args.rows)
        data = batches(path)
    print(f"{args.rows:,} rows, 8 fields, batches of {BATCH:,}; median of {args.repeat}")
    results = {name: measure(c, data, args.repeat) for name, c in contenders.items()}
    base = next(iter(results.values()))[0]
    for name, (seconds, invalid) in results.items():
        print(f"  {name:44} {seconds:7.2f} s  {args.rows / seconds / 1e6:6.2f} M rows/s  "
              f"x{seconds / base:5.1f}  ({invalid:,} invalid)")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).parent))  # the model's module, by import path
    main()
