"""jobs/calibrate_thresholds.py on bad input: one-line error, non-zero exit, nothing written."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from test_calibration import MINUTES, T0, make_history, write_archive

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))
import calibrate_thresholds as job

END = (T0 + timedelta(minutes=MINUTES)).isoformat()


@pytest.fixture(scope="module")
def small_archive(spark, tmp_path_factory):
    """20 minutes of history: enough for a calibration with the test settings."""
    return write_archive(spark, make_history(seed=9, minutes=20), tmp_path_factory.mktemp("arch") / "a")


def run(argv, capsys, spark=None):
    code = job.main(argv, spark=spark)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("args, fragment", [
    (["--budget", "0"], "budget must be > 0"),
    (["--budget", "abc"], "not a number"),
    (["--oos-confidence", "1"], "oos-confidence"),
    (["--holdout", "1"], "holdout"),
    (["--start", "yesterday"], "not an ISO-8601 time"),
    (["--start", "2026-11-20T01:00:00Z", "--end", "2026-11-20T00:00:00Z"], "is not before --end"),
    (["--source", "s3"], "invalid choice"),
    (["--source", "files"], "needs --input"),
    (["--min-requests", "ip=x"], "expected auto"),
    (["--min-requests", "status=3"], "unknown kind"),
    (["--min-errors", "ip=0"], "min-errors for ip must be >= 1"),
    (["--min-errors", "auto"], "expected N or global=N"),
    (["--season", "monthly"], "invalid choice"),
    (["--pin", "/login=0.9"], "expected ip:KEY=RATE"),
    (["--pin", "url:/login=1"], "strictly between 0 and 1"),
    (["--window-length", "60", "--window-slide", "7"], "multiple of the slide"),
    (["--z-min", "50"], "z-min < z-max"),
    (["--surprise"], "unrecognized arguments"),
])
def test_usage_errors_exit_2_before_spark(args, fragment, capsys, tmp_path):
    out = tmp_path / "seuils.json"
    code, err = run([*args, "--output", str(out)], capsys)
    assert code == 2
    assert err.startswith("calibrate_thresholds: error:") and fragment in err and "\n" not in err
    assert not out.exists()


def test_usage_error_from_a_real_process(tmp_path):
    out = tmp_path / "seuils.json"
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "calibrate_thresholds.py"),
                           "--budget", "0", "--output", str(out)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "budget must be > 0" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_help_lists_the_interface(capsys):
    with pytest.raises(SystemExit) as exc:
        job.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--source", "--input", "--start", "--end", "--output", "--budget", "--min-errors", "--season",
                 "--holdout", "--key-min-requests", "--window-length", "--min-requests", "--pin"):
        assert flag in text


COMMON = ["--min-requests", "global=50,ip=10,url=10"]


def test_data_errors_exit_1_and_write_nothing(spark, small_archive, tmp_path, capsys):
    out = tmp_path / "seuils.json"
    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = tmp_path / "garbage.log"
    garbage.write_text("not a log line\n{\"bad\": json\n\n")
    cases = [
        (["--source", "archive", "--input", str(tmp_path / "nope")], "does not exist"),
        (["--source", "archive", "--input", str(empty)], "no readable Parquet history"),
        (["--source", "archive", "--input", str(small_archive), "--start", "2020-01-01T00:00:00Z",
          "--end", "2020-01-02T00:00:00Z"], "no event in archive"),
        (["--source", "archive", "--input", str(small_archive), "--start", T0.isoformat(),
          "--end", (T0 + timedelta(minutes=4)).isoformat()], "history too short"),
        (["--source", "files", "--input", str(garbage)], "no parseable line among 3"),
        (["--source", "files", "--input", str(tmp_path / "missing*.log")], "no log file"),
        # a client's flood in sample, stronger than any evidence allowed: the budget cannot be met
        (["--source", "archive", "--input", str(small_archive), "--z-max", "10"],
         "budget unreachable: the in-sample history has"),
        # the same flood in the held-out half: more incidents than chance allows at the budget
        (["--source", "archive", "--input", str(small_archive), "--holdout", "0.5", "--oos-confidence", "0.5"],
         "out of sample: 1 incidents in 0.01 days (ip 1)"),
    ]
    for args, fragment in cases:
        code, err = run([*args, *COMMON, "--output", str(out)], capsys, spark=spark)
        assert code == 1, (args, err)
        assert err.startswith("calibrate_thresholds: error:") and fragment in err, (args, err)
        assert "\n" not in err and "Traceback" not in err
        assert not out.exists()
    assert list(tmp_path.iterdir()) == [empty, garbage] or set(tmp_path.iterdir()) == {empty, garbage}


def test_a_good_run_writes_and_a_later_bad_run_keeps_the_file(spark, small_archive, tmp_path, capsys):
    out = tmp_path / "seuils.json"
    code = job.main(["--source", "archive", "--input", str(small_archive), *COMMON, "--output", str(out),
                     "--version", "12", "--budget", "500"], spark=spark)
    printed = capsys.readouterr().out
    assert code == 0, printed
    before = out.read_bytes()
    assert b'"version": 12' in before
    for word in ("rows", "windows", "baselines", "evidence   z", "chronic url /login", "validation", "written"):
        assert word in printed
    code, _ = run(["--source", "archive", "--input", str(small_archive), *COMMON, "--output", str(out),
                   "--z-max", "10"], capsys, spark=spark)
    assert code == 1 and out.read_bytes() == before  # a failed run never touches the published file
    # --dry-run computes and validates but writes nothing
    dry = tmp_path / "dry.json"
    assert job.main(["--input", str(small_archive), *COMMON, "--output", str(dry), "--dry-run"], spark=spark) == 0
    assert not dry.exists()
