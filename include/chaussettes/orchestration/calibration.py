"""The calibration DAG's steps as plain functions: plan the job, check a candidate, publish it.

Kept apart from the DAG file so that the DAG parses without I/O and these are testable.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from chaussettes.orchestration import common

# Job flag for each form field (jobs/calibrate_thresholds.py --help).
JOB_FLAGS = {
    "window_length_s": "--window-length",
    "window_slide_s": "--window-slide",
    "budget": "--budget",
}
MIN_REQUESTS_FIELDS = {"global": "min_requests_global", "ip": "min_requests_ip", "url": "min_requests_url"}
# History a run reads unless its form says otherwise; the housekeeping DAG never deletes it.
LOOKBACK_HOURS = 24


class CandidateRejected(Exception):
    """The candidate is not good enough to become current; the message has the figures."""


def history_range(params: dict[str, Any], context) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the history: end = the form's history_end, else the run's data interval
    end; start = end − lookback_hours."""
    end = common.parse_when(params["history_end"]) if params.get("history_end") else common.run_end(context)
    hours = int(params.get("lookback_hours") or LOOKBACK_HOURS)
    if hours < 1:
        raise ValueError(f"lookback_hours must be at least 1, got {hours}")
    return end - dt.timedelta(hours=hours), end


def plan(params: dict[str, Any], context, settings) -> dict[str, Any]:
    """Everything the run needs: range, input, candidate path, the job's arguments."""
    from chaussettes import artifacts
    from chaussettes.orchestration import history

    start, end = history_range(params, context)
    source = params.get("source") or "archive"
    if source not in history.SOURCES:
        raise ValueError(f"unknown history source {source!r}: expected one of {', '.join(history.SOURCES)}")
    input_ = params.get("input") or history.default_input(settings, source)
    if source == "files" and not input_:
        raise ValueError("the files source needs an input path (form field 'input')")
    run_id = getattr(context.get("dag_run"), "run_id", None) or "run"
    candidate = artifacts.store_root(settings) / artifacts.CANDIDATES_DIR / f"{common.safe_name(run_id)}.json"
    iso = lambda t: t.isoformat().replace("+00:00", "Z")
    args = ["--source", source, "--input", str(input_), "--start", iso(start), "--end", iso(end),
            "--output", str(candidate)]
    for field, flag in JOB_FLAGS.items():
        value = params.get(field)
        if value is not None and value != "":
            args += [flag, str(value)]
    # --min-requests global=N,ip=N,url=N; an empty form field = derived by the job ("auto")
    mins = {kind: params.get(field) for kind, field in MIN_REQUESTS_FIELDS.items()}
    args += ["--min-requests", ",".join(f"{k}={'auto' if v in (None, '') else int(v)}"
                                        for k, v in mins.items())]
    from chaussettes import sparkconf
    from chaussettes.supervisor import calibration_cores

    # On a standalone cluster the streaming detector keeps its cores; ignored by local[*].
    spark_conf = {**sparkconf.JVM_CONF, "spark.cores.max": str(calibration_cores(settings))}
    return {"start": iso(start), "end": iso(end), "source": source, "input": str(input_),
            "candidate": str(candidate), "application_args": args, "spark_conf": spark_conf}


def check_candidate(path: str | Path, *, budget: float, min_evaluations: int = 1,
                    max_out_of_sample: float | None = None) -> dict:
    """Schema + validation figures of a candidate (the evidence rule, schema 2): in-sample
    incidents a day within the budget, enough judged windows, the held-out tail within what
    chance allows at that budget and its alert rate under ``max_out_of_sample``. Returns the
    figures; raises CandidateRejected."""
    from chaussettes import thresholds

    try:
        loaded = thresholds.load(path)
    except thresholds.ThresholdsError as exc:
        raise CandidateRejected(f"candidate is not a valid seuils.json: {exc}") from None
    doc = loaded.doc
    if loaded.rule != "evidence":
        raise CandidateRejected(f"candidate uses the {loaded.rule} rule (schema {loaded.schema_version}); "
                                "the calibration writes the evidence rule (schema 2)")
    v = doc.get("validation") or {}
    per_day = v.get("incidents_per_day")
    evaluations = v.get("evaluations")
    oos, allowed = v.get("incidents_out_of_sample"), v.get("allowed_out_of_sample")
    figures = {
        "incidents_per_day": per_day, "incidents": v.get("incidents"), "budget": budget,
        "incidents_out_of_sample": oos, "allowed_out_of_sample": allowed,
        "alert_rate": v.get("alert_rate"), "alert_rate_out_of_sample": v.get("alert_rate_out_of_sample"),
        "evaluations": evaluations, "z": doc["evidence"]["z"], "season": doc["evidence"]["season"],
        "ip_keys": len(doc["ip"]["overrides"]), "url_keys": len(doc["url"]["overrides"]),
        "chronic": sorted(k for kind in ("ip", "url") for k in doc["evidence"].get("chronic", {}).get(kind, {})),
        "rows": (doc.get("calibration") or {}).get("rows"),
    }
    problems = []
    if not isinstance(per_day, (int, float)):
        problems.append("no in-sample incidents_per_day in its validation figures")
    elif per_day > budget + 1e-9:
        problems.append(f"{per_day:.2f} incidents a day in sample, over the budget of {budget:g}")
    if not isinstance(evaluations, (int, float)) or evaluations < min_evaluations:
        problems.append(f"{evaluations} evaluations judged, fewer than the {min_evaluations} required")
    if isinstance(oos, int) and isinstance(allowed, int) and oos > allowed:
        problems.append(f"{oos} incidents out of sample where the budget allows {allowed} by chance")
    rate = v.get("alert_rate_out_of_sample")
    if max_out_of_sample is not None and isinstance(rate, (int, float)) and rate > max_out_of_sample:
        problems.append(f"out-of-sample alert_rate {rate:.4%} is above the {max_out_of_sample:.4%} allowed")
    if problems:
        raise CandidateRejected("candidate rejected: " + "; ".join(problems) + f" | figures: {figures}")
    return figures


def publish(candidate: str | Path, settings, context, figures: dict | None = None) -> dict:
    """Store the candidate as the next version and make it current; returns the asset extra."""
    from chaussettes import artifacts

    store = artifacts.ThresholdsStore.from_settings(settings)
    version = store.publish(Path(candidate), run=common.run_info(context),
                            extra_meta={"figures": figures or {}})
    return {
        "action": "publish", "version": version.version, "path": str(version.thresholds_path),
        "sha256": version.meta["sha256"], "validation": version.meta.get("validation"),
        "figures": figures or {}, "run_id": common.run_info(context)["run_id"],
    }


_ZIP_PROBE = (
    "import chaussettes, chaussettes.thresholds as t, sys; "
    "assert chaussettes.__file__.startswith(sys.argv[1]), chaussettes.__file__; "
    "t.schema(); t.load_default()"
)


def package_for_spark(settings) -> tuple[str, str]:
    """(zip path for --py-files, note). The zip is built by ``chaussettes.dist.build_zip``.

    The driver imports the package from the zip first (Spark puts --py-files ahead of
    site-packages), so the zip is probed once: when the package cannot read its own data
    files from a zip (schema, defaults), shipping it would break the job; the zip is then
    not shipped (local and same-machine masters use the installed package) and the note says so.
    """
    import os
    import subprocess
    import sys
    import tempfile

    from chaussettes import dist

    target = dist.build_zip(Path(settings.run_dir) / "dist")
    env = {**os.environ, "PYTHONPATH": str(target)}
    with tempfile.TemporaryDirectory() as cwd:
        probe = subprocess.run([sys.executable, "-c", _ZIP_PROBE, str(target)], env=env, cwd=cwd,
                               capture_output=True, text=True, timeout=120, check=False)
    if probe.returncode == 0:
        return str(target), f"shipping {target} with --py-files"
    reason = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
    return "", (f"NOT shipping {target}: the package does not work from a zip ({reason}); "
                f"the installed package is used")
