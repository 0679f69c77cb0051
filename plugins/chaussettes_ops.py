"""Airflow plugin: the Chaussettes operations page inside the Airflow UI.

Mounts ``chaussettes.ops.app`` under ``/chaussettes`` in Airflow's API server (behind
Airflow's login: the routes depend on ``airflow.api_fastapi.core_api.security.get_user``)
and adds a "Chaussettes" entry to the Browse menu, which shows the page in an iframe at
``/plugin/chaussettes``. Settings come from the ``CHAUSSETTES_*`` environment of the API
server, read on the first request (importing this file does no I/O).
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from chaussettes.ops.app import create_app

URL_PREFIX = "/chaussettes"


class ChaussettesOpsPlugin(AirflowPlugin):
    name = "chaussettes_ops"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "Chaussettes operations"},
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Chaussettes",
            "href": "chaussettes/",  # relative to the UI's base URL; must end with "/"
            "destination": "nav",
            "url_route": "chaussettes",
            "category": "browse",
        },
    ]
