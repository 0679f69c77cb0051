"""Every DAG in dags/ parses with no service running and follows the house rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPECTED_DAGS = {"calibrate_thresholds", "rollback_thresholds", "streaming_detector", "housekeeping"}

INSPECT = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({
    "errors": {k: v[-500:] for k, v in bag.import_errors.items()},
    "dags": {d.dag_id: {
        "fileloc": d.fileloc, "tags": sorted(d.tags), "doc_md": d.doc_md or "",
        "catchup": d.catchup,
        "tasks": {t.task_id: {"retries": t.retries, "doc": bool(t.doc_md or t.doc)} for t in d.tasks},
    } for d in bag.dags.values()},
}))
"""


@pytest.fixture(scope="module")
def dagbag(airflow_env):
    out = subprocess.run([sys.executable, "-c", INSPECT, str(REPO / "dags")], env=airflow_env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_import_errors(dagbag):
    assert dagbag["errors"] == {}


def test_the_platform_dags_are_there(dagbag):
    assert EXPECTED_DAGS <= set(dagbag["dags"])


def test_one_dag_per_file_named_after_it(dagbag):
    for dag_id, dag in dagbag["dags"].items():
        assert Path(dag["fileloc"]).stem == dag_id


def test_house_rules(dagbag):
    for dag_id, dag in dagbag["dags"].items():
        assert dag["tags"], f"{dag_id} has no tags"
        assert len(dag["doc_md"]) > 80, f"{dag_id} has no Markdown doc"
        assert dag["catchup"] is False, f"{dag_id} catches up"
        for task_id, task in dag["tasks"].items():
            assert task["retries"] >= 1, f"{dag_id}.{task_id} has no retries"
