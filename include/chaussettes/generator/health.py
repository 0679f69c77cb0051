"""Container healthcheck: ``python -m chaussettes.generator.health [--status-file PATH] [--max-age S]``.

Exit 0 when the generator's heartbeat says ``running`` and was rewritten less than
``--max-age`` seconds ago (default 10), else 1 with one line saying why.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def check(path: Path, max_age_s: float = 10.0) -> str | None:
    """None when healthy, else the reason."""
    try:
        age = time.time() - path.stat().st_mtime
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return f"no heartbeat at {path}"
    except (OSError, ValueError) as exc:
        return f"unreadable heartbeat {path}: {exc}"
    if doc.get("state") != "running":
        return f"generator {doc.get('state')}: {doc.get('error') or 'not running'}"
    if age > max_age_s:
        return f"heartbeat {path} is {age:.0f}s old"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaussettes.generator.health", description=__doc__)
    parser.add_argument("--status-file", type=Path, help="default: settings.generator_status_path")
    parser.add_argument("--max-age", type=float, default=10.0)
    args = parser.parse_args(argv)
    path = args.status_file
    if path is None:
        from chaussettes import settings

        path = settings.load().generator_status_path
    reason = check(path, args.max_age)
    if reason:
        print(f"unhealthy: {reason}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
