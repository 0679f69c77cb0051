#!/usr/bin/env python3
"""Write .env for docker-compose from .env.example, with a fresh random value for every
secret: a variable whose name ends in PASSWORD, SECRET or KEY and whose example value is empty
(or the old placeholder ``CHANGE_ME``). Standard library only: runs before any virtualenv exists.

    python3 docker/gen_env.py [--example .env.example] [--output .env] [--force]

The file is created with mode 0600. An existing .env is kept unless --force (rotating
secrets needs the volumes that stored them recreated: Postgres, the Kafka SCRAM users).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import sys
from pathlib import Path

PLACEHOLDER = "CHANGE_ME"
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|KEY)$")
REPO = Path(__file__).resolve().parents[1]


def value_for(name: str) -> str:
    if name.endswith("FERNET_KEY"):
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    # URL-safe characters only: the values go into SCRAM configs and connection URIs.
    return secrets.token_urlsafe(24)


def is_secret(name: str, value: str) -> bool:
    return bool(SECRET_NAME.search(name)) and value.strip() in ("", PLACEHOLDER)


def render(example: str) -> tuple[str, int]:
    """The .env text and how many secrets it generated."""
    out, count = [], 0
    for line in example.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and is_secret(name.strip(), value):
            line = f"{name}={value_for(name.strip())}"
            count += 1
        out.append(line)
    return "\n".join(out) + "\n", count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", type=Path, default=REPO / ".env.example")
    parser.add_argument("--output", type=Path, default=REPO / ".env")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)
    try:
        example = args.example.read_text()
    except OSError as exc:
        print(f"error: cannot read {args.example}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.output.exists() and not args.force:
        print(f"{args.output} exists: kept (use --force to regenerate every secret)")
        return 0
    tmp = args.output.with_name(args.output.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    text, count = render(example)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, args.output)
    print(f"wrote {args.output} (mode 0600) with {count} generated secrets; never commit it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
