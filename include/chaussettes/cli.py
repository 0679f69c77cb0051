"""`chaussettes` — the platform's command line.

    chaussettes stack up [--only NAME ...]   start the local platform
    chaussettes stack status                 health of each component
    chaussettes stack down                   stop everything it started
    chaussettes dist [--out DIR]             build the --py-files zip
    chaussettes jvm                          build the jar of the Java functions (needs a JDK)
    chaussettes settings                     print the settings in force
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chaussettes import settings as settings_mod


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chaussettes", description=__doc__.split("\n\n")[0].strip("` "),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", help="root of run, data, archive, checkpoints, artifacts (CHAUSSETTES_HOME)")
    sub = p.add_subparsers(dest="command", required=True)
    stack = sub.add_parser("stack", help="the local platform (no containers)")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--only", nargs="+", metavar="NAME",
                       help="components to act on (default: all)")
    dist = sub.add_parser("dist", help="build the zip shipped with spark-submit --py-files")
    dist.add_argument("--out", type=Path, default=None, help="output folder (default <home>/dist)")
    sub.add_parser("jvm", help="build the jar of the platform's Java functions (javac, from a JDK)")
    sub.add_parser("settings", help="print the settings in force")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = settings_mod.load(home=args.home)
        if args.command == "stack":
            from chaussettes.stack import manager

            if args.action == "up":
                manager.up(settings, set(args.only) if args.only else None)
            elif args.action == "down":
                manager.down(settings)
            else:
                rows = manager.status(settings)
                for name, health, detail in rows:
                    print(f"{name:13} {health:10} {detail}")
                return 0 if all(h == "healthy" for _, h, _ in rows) else 1
        elif args.command == "dist":
            from chaussettes.dist import build_zip

            print(build_zip(args.out or settings.home / "dist"))
        elif args.command == "jvm":
            from chaussettes import jvm

            print(jvm.build())
        else:
            for key, value in sorted(settings.as_env().items()):
                if "PASSWORD" in key and value:
                    value = "***"
                print(f"{key}={value}")
        return 0
    except (settings_mod.SettingsError, RuntimeError, OSError) as exc:
        print(f"chaussettes: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("chaussettes: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
