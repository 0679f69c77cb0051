"""Operations page: API latency with 100k alerts on the topic (code in chaussettes.ops.bench)."""

from chaussettes.ops.bench import run  # noqa: F401
