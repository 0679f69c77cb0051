"""The local platform, one machine, no containers: `chaussettes stack up|down|status`."""

from __future__ import annotations

import importlib

from chaussettes.settings import Settings
from chaussettes.stack.base import Component

# Start order; stopped in reverse. A module may return None (switched off by the
# settings), one component or a list. Modules not present yet are skipped.
COMPONENT_MODULES = ("s3", "kafka", "tls", "alertmanager", "relay", "spark", "airflow", "generator", "detector")


def components(settings: Settings, only: set[str] | None = None) -> list[Component]:
    found: list[Component] = []
    for name in COMPONENT_MODULES:
        try:
            module = importlib.import_module(f"chaussettes.stack.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"chaussettes.stack.{name}":
                continue
            raise
        made = module.component(settings)
        if made is None:
            continue
        for comp in made if isinstance(made, list) else [made]:
            if only is None or comp.name in only:
                found.append(comp)
    return found
