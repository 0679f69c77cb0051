"""The log generator and replayer: ``python -m chaussettes.generator --help``.

- ``traffic``: the traffic model (clients, URLs, statuses, misbehaving IPs/URLs), fast chunks
- ``scenario``: incident timelines (JSON/YAML) and their ground-truth labels
- ``sinks``: Kafka, console, TCP server, file
- ``replay``: replay of a real access log
- ``cli``: the command line (also ``jobs/generate_logs.py``)
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from chaussettes.generator.cli import main as cli_main

    return cli_main(argv)
