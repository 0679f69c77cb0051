"""Prometheus Alertmanager in the local stack: Debian's ``prometheus-alertmanager`` (0.25,
installed by scripts/sysdeps.sh) on ``127.0.0.1:<alertmanager_port>``, clustering off.

Its configuration is the shipped ``chaussettes/alerting/alertmanager.yml`` (or
``CHAUSSETTES_ALERTMANAGER_CONFIG``), copied into ``<run_dir>/alertmanager/`` with the default
receiver's webhook set to ``CHAUSSETTES_ALERT_WEBHOOK_URL`` when that is given. Silences and
the notification log live in ``<run_dir>/alertmanager/data``, so they survive a restart.
Debian's package ships no web UI: silences go through ``amtool`` or the API (compose's
``prom/alertmanager`` has the UI).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from chaussettes import alertmanager
from chaussettes.settings import Settings
from chaussettes.stack.base import Component

BINARY = "prometheus-alertmanager"


def binary(required: bool = True) -> str:
    found = shutil.which(BINARY) or shutil.which("alertmanager")
    if found is None and required:
        raise RuntimeError(f"{BINARY} is missing: apt-get install -y prometheus-alertmanager (make sysdeps)")
    return found or BINARY


def argv(config: Path, storage: Path, port: int, external_url: str | None = None,
         required: bool = True) -> list[str]:
    return [binary(required), f"--config.file={config}", f"--storage.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
            f"--web.external-url={external_url or f'http://127.0.0.1:{port}'}"]


def render_config(source: Path, webhook_url: str | None, out: Path) -> Path:
    """``source`` with the webhook receivers' URLs set to ``webhook_url`` (when given), to ``out``."""
    text = Path(source).read_text(encoding="utf-8")
    if webhook_url:
        doc = yaml.safe_load(text)
        for receiver in doc.get("receivers") or ():
            for hook in receiver.get("webhook_configs") or ():
                hook["url"] = webhook_url
        text = (f"# Generated from {source} with the webhook URL from CHAUSSETTES_ALERT_WEBHOOK_URL;\n"
                f"# edit that file (or the setting), not this copy.\n" + yaml.safe_dump(doc, sort_keys=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def state_dir(settings: Settings) -> Path:
    return settings.run_dir / "alertmanager"


def component(settings: Settings) -> Component:
    directory = state_dir(settings)
    config = directory / "alertmanager.yml"

    def prepare() -> None:
        binary()  # one clear line when the package is missing
        render_config(settings.alertmanager_config, settings.alert_webhook_url, config)
        (directory / "data").mkdir(parents=True, exist_ok=True)

    return Component(
        name="alertmanager",
        argv=argv(config, directory / "data", settings.alertmanager_port, settings.alertmanager_ui_url,
                  required=False),
        ports=[(settings.alertmanager_port, "CHAUSSETTES_ALERTMANAGER_PORT")],
        healthy=lambda: alertmanager.ready(f"http://127.0.0.1:{settings.alertmanager_port}"),
        start_timeout_s=30.0,
        prepare=prepare,
        urls=[(f"http://127.0.0.1:{settings.alertmanager_port}/  (API v2; silences: amtool "
               f"--alertmanager.url=http://127.0.0.1:{settings.alertmanager_port} silence add ...)")],
        notes=[f"config {config} (from {settings.alertmanager_config})"],
    )
