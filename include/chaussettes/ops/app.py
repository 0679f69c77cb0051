"""The operations page as a FastAPI app, mounted by the Airflow plugin under ``/chaussettes``.

Routes (all behind Airflow's authentication — the UI's ``_token`` cookie or a Bearer token
from ``POST /auth/token`` — and for a role that can read DAGs: the page shows client IPs,
which a login alone does not entitle anyone to; no ``/docs``, ``/redoc`` or ``/openapi.json``,
which FastAPI serves outside the app's dependencies and with scripts from a CDN)::

    GET /chaussettes/                          the page (HTML; fills itself from the API)
    GET /chaussettes/api/health                detector health from its status file
    GET /chaussettes/api/alerts?kind=ip&limit=50
                                               newest alerts first + counts per kind, last hour
    GET /chaussettes/api/rates                 global error rate per window + top IPs / URLs
    GET /chaussettes/api/incidents?limit=100   open incidents, then recently resolved; silenced or
                                               not (from Alertmanager), with links to it
    GET /chaussettes/api/versions              thresholds versions, which is current
    GET /chaussettes/api/versions/diff?a=1&b=2 leaf-by-leaf diff of two seuils.json

A section whose source is missing or down answers 200 with ``ok: false`` and a one-line
``error`` (503 for the alerts and the incidents when Kafka is unreachable), so the page always
renders. Alertmanager down only takes the silences away from the incidents (said in
``alertmanager.error``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse

from chaussettes import settings as settings_mod
from chaussettes.ops import readers

PAGE = Path(__file__).resolve().parent / "page.html"
TAIL_CACHE_S = 3.0  # one Kafka read serves the page's parallel calls (alerts + rates)


class _TailCache:
    """One incremental tailer per topic; its last read reused for a few seconds."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._tailers: dict[str, readers.AlertsTailer] = {}
        self._last: dict[str, tuple[float, dict]] = {}

    def get(self, settings) -> dict:
        key = f"{settings.bootstrap_servers}/{settings.topic_alerts}"
        with self._lock:
            hit = self._last.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]
            tailer = self._tailers.get(key)
            if tailer is None:
                tailer = self._tailers[key] = readers.AlertsTailer(settings)
            tail = tailer.read()
            self._last[key] = (time.monotonic(), tail)
            return tail


def _auth_dependency() -> Callable[..., Any]:
    """Airflow's login (``get_user`` validates the JWT, cookie or Bearer, with the auth manager),
    then the auth manager's own answer to "may this user read DAGs?"."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import get_user

    def can_read_dags(user=Depends(get_user)) -> None:  # noqa: B008 - FastAPI's idiom
        if not get_auth_manager().is_authorized_dag(method="GET", user=user):
            raise HTTPException(403, "the operations page needs a role that can read DAGs")

    return can_read_dags


def create_app(settings: settings_mod.Settings | None = None,
               settings_fn: Callable[[], settings_mod.Settings] | None = None,
               tail_cache_s: float = TAIL_CACHE_S) -> FastAPI:
    """The app. Settings are ``settings``, else ``settings_fn()``, else ``settings.load()`` —
    read on first use, so importing the plugin does no I/O."""
    state: dict[str, settings_mod.Settings] = {}
    if settings is not None:
        state["settings"] = settings

    def current_settings() -> settings_mod.Settings:
        if "settings" not in state:
            state["settings"] = (settings_fn or settings_mod.load)()
        return state["settings"]

    cache = _TailCache(tail_cache_s)
    app = FastAPI(
        title="Chaussettes operations",
        description="Stream health, alerts, error rates and thresholds versions (read-only).",
        dependencies=[Depends(_auth_dependency())],
        docs_url=None, redoc_url=None, openapi_url=None,
    )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"),
                            headers={"Cache-Control": "no-store"})

    @app.get("/api/health")
    def health() -> dict:
        """Detector health: running | stalled | dead | unknown, with the status facts."""
        s = current_settings()
        status = readers.read_status(s)
        status.pop("recent_global_windows", None)
        status["topic_alerts"] = s.topic_alerts
        status["bootstrap_servers"] = s.bootstrap_servers
        return status

    @app.get("/api/alerts")
    def alerts(kind: str | None = Query(None, description="global, ip or url (default: all)"),
               limit: int = Query(100, ge=0, le=5000)):
        """The newest alerts on the alerts topic, newest first, and counts per kind (last hour)."""
        if kind not in (None, "", "all") and kind not in readers.ALERT_KINDS:
            raise HTTPException(400, f"kind must be one of {', '.join(readers.ALERT_KINDS)}")
        view = readers.alerts_view(cache.get(current_settings()), kind=kind, limit=limit)
        return JSONResponse(view, status_code=503 if view["unreachable"] else 200)

    @app.get("/api/incidents")
    def incidents(limit: int = Query(100, ge=0, le=5000)):
        """Incidents from the alerts topic (open first), each marked silenced in Alertmanager or not."""
        s = current_settings()
        view = readers.incidents_view(s, cache.get(s), readers.read_silences(s), limit=limit)
        return JSONResponse(view, status_code=503 if view["unreachable"] else 200)

    @app.get("/api/rates")
    def rates() -> dict:
        """Global error rate per window (from the detector status) + top breaching IPs and URLs."""
        s = current_settings()
        return readers.rates_view(readers.read_status(s), cache.get(s))

    @app.get("/api/versions")
    def versions() -> dict:
        """Thresholds versions, newest first; version 0 is the package defaults."""
        s = current_settings()
        in_force = (readers.read_status(s).get("status") or {}).get("thresholds_version")
        return readers.read_versions(s, in_force=in_force)

    @app.get("/api/versions/diff")
    def versions_diff(a: int = Query(..., ge=0), b: int = Query(..., ge=0)) -> dict:
        """What changed from version a to version b (dotted paths of seuils.json)."""
        s = current_settings()
        doc_a, err_a = readers.thresholds_doc(s, a)
        doc_b, err_b = readers.thresholds_doc(s, b)
        if doc_a is None or doc_b is None:
            raise HTTPException(404, err_a or err_b)
        return {"a": a, "b": b, "changes": readers.diff_docs(doc_a, doc_b)}

    return app
