#!/usr/bin/env python
"""Synthetic HTTP access logs into Kafka (or stdout, a TCP server, a file), or the replay
of a real access log. Thin entry point of ``chaussettes.generator`` (see ``--help``)::

    python jobs/generate_logs.py --rate 200 --bad-ips 2 --bad-urls 1
    python jobs/generate_logs.py --sink console --count 5 --seed 1
    python jobs/generate_logs.py --start-time -2h --scenario incidents.yaml --labels labels.json
    python jobs/generate_logs.py --replay access.log.gz --speed 10
"""

import sys
from pathlib import Path

try:
    from chaussettes.generator.cli import main
except ModuleNotFoundError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))
    from chaussettes.generator.cli import main

if __name__ == "__main__":
    sys.exit(main())
