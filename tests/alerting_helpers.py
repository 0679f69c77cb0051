"""A real Alertmanager (Debian's binary) and a small webhook receiver, for the alerting tests.

``Alertmanager`` runs ``prometheus-alertmanager`` on a free port with the shipped
``alertmanager.yml`` (its webhook pointed at the test's receiver; route timings shortened
when a test asks) and can be stopped and started again on the same port and storage.
``WebhookReceiver`` is an HTTP server that records every notification Alertmanager sends.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from chaussettes import alertmanager as am
from chaussettes import procs
from chaussettes.settings import PACKAGE_DIR
from chaussettes.stack import alertmanager as stack_am

SHIPPED = PACKAGE_DIR / "alerting" / "alertmanager.yml"


class WebhookReceiver:
    """Records Alertmanager's webhook notifications: ``(received_at, payload)``."""

    def __init__(self):
        self.received: list[tuple[float, dict]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def notifications(self, **labels) -> list[dict]:
        """Payloads whose group labels include ``labels``."""
        with self._lock:
            got = [p for _, p in self.received]
        return [p for p in got if all(p.get("groupLabels", {}).get(k) == v for k, v in labels.items())]

    def wait_for(self, predicate, timeout_s: float) -> bool:
        return procs.wait_until(lambda: predicate(self), timeout_s, 0.2)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def am_config(webhook_url: str, out: Path, **route) -> Path:
    """The shipped alertmanager.yml with the webhook at ``webhook_url`` and route timings
    overridden (``group_wait="1s"``, ...)."""
    stack_am.render_config(SHIPPED, webhook_url, out)
    if route:
        doc = yaml.safe_load(out.read_text())
        doc["route"].update(route)
        out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


class Alertmanager:
    def __init__(self, directory: Path, config: Path, port: int | None = None):
        self.directory = Path(directory)
        self.config = config
        self.port = port or procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout_s: float = 30.0) -> Alertmanager:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = procs.start(stack_am.argv(self.config, self.directory / "data", self.port),
                                self.directory / "alertmanager.log")
        if not procs.wait_until(lambda: am.ready(self.url), timeout_s, 0.1):
            self.stop()
            raise RuntimeError(f"Alertmanager did not start: {procs.tail(self.directory / 'alertmanager.log')}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop_group(self.proc.pid, timeout_s=10)
            self.proc.wait(timeout=10)
            self.proc = None

    def alerts(self, **labels) -> list[dict]:
        return am.get_alerts(self.url, [f'{k}="{v}"' for k, v in labels.items()])
