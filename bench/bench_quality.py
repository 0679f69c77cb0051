"""Detection quality, the old rule against the new one in the same run, on labelled traffic.

Two traffics, each a clean history to calibrate on and a later test period with the
labelled incidents of a shipped scenario:

- ``small-site``: ``--profile small-site`` (about 3 lines/s with a day/night cycle, 3000
  clients, crawlers, a /login answering 401s), 7 days of history (hourly baselines) and a
  day with ``--scenario small-site`` (a scanner, an API outage, credential stuffing, a bad
  deploy, /login down, a traffic surge that must not alert);
- ``default``: the generator's defaults at 100 lines/s with 2 misbehaving IPs (80% errors)
  and a failing URL all along, 6 hours of history and an hour with ``--scenario example``.

Rules compared, each replayed on the test period's windows (``windows.block_windows``) by
``judge.evaluate`` — the detector's form:

- ``old-defaults``: the rate rule with the shipped ``default_seuils.json``;
- ``old-calibrated``: the rate rule calibrated on the history by the calibration this issue
  replaced (its module as it was at ``LEGACY_COMMIT``, read from git: nothing of it kept in
  the package);
- ``new``: the evidence rule calibrated on the history by ``jobs/calibrate_thresholds.py``.

Incidents are counted as the detector makes them: the windows replayed through
``chaussettes.incidents.IncidentBook`` (consecutive breaching windows of one (kind, key),
resolved after ``resolve_after`` windows without a breach or a window length without
traffic). Figures per traffic and rule: labelled incidents alerted within two windows (the
first breaching window of the incident's kind and key ends at most two window lengths
after it starts; goal: all), incidents outside the labelled incidents per simulated day
(goal <= 1; an incident during a traffic surge counts as false), and, on the default
traffic, the incidents of its always-misbehaving keys (the new rule's chronic keys).

Run alone: ``python bench/bench_quality.py [--only small-site|default]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GENERATOR = REPO / "jobs" / "generate_logs.py"
LEGACY_COMMIT = "1ad1c507a405ad7635bd6e4d91f4a8875c50fdc1"  # calibration.py before the evidence rule
LEGACY_PATH = "include/chaussettes/calibration.py"
T0 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday


def generate(path: Path, start: datetime, duration: str, seed: int, *flags: str) -> dict:
    r = subprocess.run([sys.executable, str(GENERATOR), "--output", str(path), "--start-time", start.isoformat(),
                        "--duration", duration, "--seed", str(seed), "--progress-interval", "0", *flags],
                       capture_output=True, text=True, timeout=1800, check=False)
    if r.returncode:
        raise RuntimeError(f"generator failed: {r.stderr[-500:]}")
    return {"stderr": r.stderr}


TRAFFICS = {
    "small-site": {"flags": ["--profile", "small-site"], "history_s": 7 * 86400, "test_s": 86400,
                   "scenario": "small_site_scenario.json", "seed": 100},
    "default": {"flags": ["--rate", "100", "--bad-ips", "2", "--ip-error-rate", "0.8", "--bad-urls", "1"],
                "history_s": 6 * 3600, "test_s": 3600, "scenario": "example_scenario.json", "seed": 200},
}


def make_traffic(name: str, tmp: Path) -> dict:
    """One generator run: the history, then the test period with the scenario's incidents
    (its offsets moved past the history) — the same clients, crawlers and misbehaving keys
    all along. Two files, split at the end of the history."""
    from chaussettes import generator

    spec = TRAFFICS[name]
    tmp.mkdir(parents=True, exist_ok=True)
    scenario = json.loads((Path(generator.__file__).parent / spec["scenario"]).read_text())
    for incident in scenario["incidents"]:
        incident["start"] = float(incident["start"]) + spec["history_s"]
    shifted, labels, log = tmp / f"{name}-scenario.json", tmp / f"{name}-labels.json", tmp / f"{name}.log"
    shifted.write_text(json.dumps(scenario))
    out = generate(log, T0, str(spec["history_s"] + spec["test_s"]), spec["seed"], *spec["flags"],
                   "--format", "json", "--scenario", str(shifted), "--labels", str(labels))
    test_start = T0 + timedelta(seconds=spec["history_s"])
    history, test = tmp / f"{name}-history", tmp / f"{name}-test"
    history.mkdir(exist_ok=True)
    test.mkdir(exist_ok=True)
    cut = '{"timestamp": "' + test_start.strftime("%Y-%m-%dT%H:%M:%S")  # lines are in time order
    with log.open() as lines, (history / "history.log").open("w") as before, (test / "test.log").open("w") as after:
        target = before
        for line in lines:
            if target is before and line >= cut:
                target = after
            target.write(line)
    log.unlink()
    bad = []
    for line in out["stderr"].splitlines():  # "misbehaving IPs: a, b; failing URLs: /x"
        if "misbehaving IPs:" in line:
            ips, _, urls = line.split("misbehaving IPs:", 1)[1].partition("; failing URLs:")
            bad += [("ip", k.strip()) for k in ips.split(",") if k.strip() not in ("", "-")]
            bad += [("url", k.strip()) for k in urls.split(",") if k.strip() not in ("", "-")]
    return {"history": history, "history_start": T0, "history_end": test_start, "test": test, "test_start": test_start,
            "test_end": test_start + timedelta(seconds=spec["test_s"]), "labels": json.loads(labels.read_text()),
            "bad_keys": bad}


def _parsed(spark, lines):
    from chaussettes import sparkparse

    fast, good, keep = sparkparse.fast_parts(lines, "value")
    return sparkparse.events_of(good.unionByName(sparkparse.full_rules_of(fast, keep)))


def calibrate_new(spark, traffic: dict, out: Path):
    sys.path.insert(0, str(REPO / "jobs"))
    import calibrate_thresholds as job
    from chaussettes import thresholds as th

    summary = out.with_suffix(".summary.json")
    argv = ["--source", "files", "--input", str(traffic["history"]), "--start", traffic["history_start"].isoformat(),
            "--end", traffic["history_end"].isoformat(), "--output", str(out), "--summary-json", str(summary)]
    if job.main(argv, spark=spark) != 0:
        raise RuntimeError("the calibration failed")
    return th.load(out)


def legacy_calibration():
    """The calibration module this issue replaced, as it was at LEGACY_COMMIT, with the one
    judge helper it used that went with it (``_legacy_replay_counts``)."""
    from chaussettes import judge

    source = subprocess.run(["git", "-C", str(REPO), "show", f"{LEGACY_COMMIT}:{LEGACY_PATH}"],
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("legacy_calibration")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{LEGACY_COMMIT[:8]}:{LEGACY_PATH}", "exec"), module.__dict__)  # noqa: S102
    module.judge_mod = types.SimpleNamespace(judge=judge.judge, replay_counts=_legacy_replay_counts)
    return module


def _legacy_replay_counts(judged_df, by=None, weight=None):
    """``judge.replay_counts`` as it was at LEGACY_COMMIT (the old calibration's replay)."""
    from pyspark.sql import functions as F

    by = list(by or [])
    w = F.col(weight).cast("long") if weight else F.lit(1).cast("long")
    rows = []
    for row in judged_df.groupBy(*by).agg(
            F.sum(F.when(F.col("judged"), w).otherwise(F.lit(0))).alias("evaluations"),
            F.sum(F.when(F.col("breach"), w).otherwise(F.lit(0))).alias("alerts")).collect():
        d = row.asDict()
        d["evaluations"], d["alerts"] = int(d["evaluations"] or 0), int(d["alerts"] or 0)
        d["alert_rate"] = d["alerts"] / d["evaluations"] if d["evaluations"] else None
        rows.append(d)
    return rows


def calibrate_old(spark, traffic: dict):
    from chaussettes import thresholds as th

    legacy = legacy_calibration()
    events = _parsed(spark, spark.read.text(str(traffic["history"])))
    result = legacy.calibrate(events, legacy.Params(), start=traffic["history_start"], end=traffic["history_end"],
                              version=1)
    return th.Thresholds.from_doc(result.doc)


def test_windows(spark, traffic: dict, length: int = 60, slide: int = 10) -> dict:
    """Every window of the test period (gid, key, start in slides, requests, errors)."""
    from chaussettes import windows

    steps = length // slide
    events = _parsed(spark, spark.read.text(str(traffic["test"])))
    first = int(traffic["test_start"].timestamp()) // slide
    last = (int(traffic["test_end"].timestamp()) - length) // slide
    blocks = windows.block_neighbours(windows.block_sums(events, slide, steps, 400), steps)
    table = windows.block_windows(blocks, steps, first, last).toArrow()
    v = table.column("v").to_numpy()
    kind = np.array(["", "ip", "url", "global"], dtype=object)[table.column("gid").to_numpy()]
    return {"kind": kind, "key": np.asarray(table.column("key").to_pylist(), dtype=object),
            "s": table.column("s").to_numpy(), "requests": v & windows.REQUESTS_MASK,
            "errors": v >> windows.ERROR_BIT, "slide": slide, "length": length}


def judge_all(thresholds, wins: dict) -> dict:
    """judge.evaluate's verdicts (judged, breach, level, threshold) of every window, one kind at a time."""
    from chaussettes import judge

    n = len(wins["s"])
    out = {"judged": np.zeros(n, dtype=bool), "breach": np.zeros(n, dtype=bool),
           "level": np.zeros(n, dtype=np.int8), "threshold": np.zeros(n, dtype=np.float64)}
    for kind in ("global", "ip", "url"):
        m = wins["kind"] == kind
        v = judge.evaluate(thresholds, kind, wins["key"][m], wins["requests"][m], wins["errors"][m],
                           window_start=wins["s"][m] * wins["slide"])
        for name, values in out.items():
            values[m] = getattr(v, name)
    return out


def detector_incidents(wins: dict, verdicts: dict, resolve_after: int) -> list[tuple]:
    """Incidents as the detector makes them: the windows of the keys that ever breach,
    replayed in event-time order through ``chaussettes.incidents.IncidentBook`` (the
    detector's own rules). Each: (kind, key, first breaching start, last breaching start),
    starts in slides."""
    import pandas as pd
    from chaussettes.incidents import IncidentBook

    slide, length = wins["slide"], wins["length"]
    breach = verdicts["breach"]
    if not breach.any():
        return []
    hit = set(zip(wins["kind"][breach], wins["key"][breach]))
    sel = np.array([pair in hit for pair in zip(wins["kind"], wins["key"])])
    frame = pd.DataFrame({"kind": wins["kind"][sel], "key": wins["key"][sel], "s": wins["s"][sel],
                          "requests": wins["requests"][sel], "errors": wins["errors"][sel],
                          "breach": breach[sel], "level": verdicts["level"][sel],
                          "threshold": verdicts["threshold"][sel]})
    frame["window_start"] = frame["s"] * slide
    frame["window_end"] = frame["window_start"] + length
    frame["error_rate"] = frame["errors"] / frame["requests"].clip(lower=1)
    out = []
    for kind, rows in frame.groupby("kind"):
        book = IncidentBook(kind, length, slide, resolve_after)
        for s, batch in rows.groupby("s", sort=True):
            closing = {key: (inc.first_window_start, inc.last_window_start) for key, inc in book.open.items()}
            for event in book.resolve_due(int(s) * slide):  # the watermark has reached this window's start
                first, last = closing[event["key"]]
                out.append((kind, event["key"], first // slide, last // slide))
            book.apply(batch)
            # the window starting at s has requests in one of its slides: at least its first
            book.saw_traffic(dict(zip(batch["key"], batch["window_start"].astype(int))))
        out += [(kind, key, inc.first_window_start // slide, inc.last_window_start // slide)
                for key, inc in book.open.items()]
    return out


def score(incidents: list[tuple], traffic: dict, wins: dict, breach: np.ndarray, resolve_after: int) -> dict:
    """A labelled incident is alerted within two windows when a window of its kind and key
    (any key for global) breaches and ends at most two window lengths after it starts (an
    incident of that key already open then counts: it is alerting). An incident of the
    replay is false when it overlaps no labelled incident that should alert."""
    slide, length = wins["slide"], wins["length"]
    labels = [(i, datetime.fromisoformat(i["start"]).timestamp(), datetime.fromisoformat(i["end"]).timestamp())
              for i in traffic["labels"]["incidents"]]
    expected = [(i, a, b) for i, a, b in labels if i["alert_kind"]]
    ends = wins["s"] * slide + length
    detected = []
    for inc, a, _ in expected:
        m = breach & (wins["kind"] == inc["alert_kind"]) & (ends > a) & (ends <= a + 2 * length)
        if inc["alert_kind"] != "global":
            m &= wins["key"] == inc["entity"]
        if m.any():
            detected.append(inc["name"])
    during = [(a - length, b + length + resolve_after * slide) for i, a, b in expected]
    bad = set(map(tuple, traffic["bad_keys"]))
    false, chronic = [], []
    for x in incidents:
        start, end = x[2] * slide, x[3] * slide + length
        if (x[0], x[1]) in bad:
            chronic.append(x)
        elif not any(start < hi and end > lo for lo, hi in during):
            false.append(x)
    days = (traffic["test_end"] - traffic["test_start"]).total_seconds() / 86400
    return {"detected": detected, "expected": [i["name"] for i, _, _ in expected], "false": false,
            "false_per_day": len(false) / days, "chronic": chronic, "incidents": len(incidents), "days": days}


def evaluate_traffic(spark, name: str, tmp: Path) -> list[dict]:
    from chaussettes import thresholds as th

    t = time.perf_counter()
    traffic = make_traffic(name, tmp)
    gen_s = time.perf_counter() - t
    wins = test_windows(spark, traffic)
    rules = {"old-defaults": th.load_default()}
    t = time.perf_counter()
    try:
        rules["old-calibrated"] = calibrate_old(spark, traffic)
    except Exception as exc:  # noqa: BLE001 - reported, the other rules still run
        print(f"{name}: the old calibration failed: {' '.join(str(exc).split())[:300]}", flush=True)
    old_s = time.perf_counter() - t
    t = time.perf_counter()
    rules["new"] = calibrate_new(spark, traffic, tmp / f"{name}-seuils.json")
    new_s = time.perf_counter() - t
    rows = []
    for rule, thresholds in rules.items():
        verdicts = judge_all(thresholds, wins)
        judged, breach = verdicts["judged"], verdicts["breach"]
        incidents = detector_incidents(wins, verdicts, thresholds.resolve_after)
        s = score(incidents, traffic, wins, breach, thresholds.resolve_after)
        examples = "; ".join(f"{k} {key}" for k, key, *_ in s["false"][:4])
        note = (f"{len(s['detected'])}/{len(s['expected'])} labelled incidents within two windows "
                f"(missed: {', '.join(sorted(set(s['expected']) - set(s['detected']))) or 'none'}); "
                f"{len(s['false'])} false incidents in {s['days']:g} simulated days"
                + (f" (e.g. {examples})" if examples else "")
                + (f"; {len(s['chronic'])} incidents of the always-misbehaving keys" if traffic["bad_keys"] else "")
                + f"; {int(breach.sum())} breaching of {int(judged.sum())} judged windows")
        rows.append({"name": f"quality_{name}_{rule}_detected", "value": len(s["detected"]),
                     "unit": f"of {len(s['expected'])}", "goal": "all", "note": note})
        rows.append({"name": f"quality_{name}_{rule}_false_per_day", "value": round(s["false_per_day"], 2),
                     "unit": "incidents/day", "goal": "<= 1", "note": f"{rule} rule on the {name} test period"})
    z = rules["new"].z
    rows.append({"name": f"quality_{name}_calibration", "value": round(new_s, 1), "unit": "s", "goal": None,
                 "note": f"new calibration on the history: z {z:g}, season {rules['new'].season}, "
                         f"{len(rules['new'].overrides('ip'))} + {len(rules['new'].overrides('url'))} keyed baselines, "
                         f"chronic {sorted(rules['new'].chronic('url')) + sorted(rules['new'].chronic('ip'))}; "
                         f"old calibration {old_s:.0f} s; traffic generated in {gen_s:.0f} s"})
    return rows


def run(ctx, only: list[str] | None = None) -> list[dict]:
    spark = ctx.spark()
    rows = []
    for name in only or list(TRAFFICS):
        rows += evaluate_traffic(spark, name, Path(ctx.tmp) / "quality")
    return rows


if __name__ == "__main__":
    import argparse

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import run_alone

    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="+", choices=list(TRAFFICS))
    a = ap.parse_args()
    run_alone(run, a.only)
