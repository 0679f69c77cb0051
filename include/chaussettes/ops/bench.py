"""Benchmark of the operations API with 100k alerts on the topic (``bench/bench_ops.py``
imports ``run`` from here: ``from chaussettes.ops.bench import run``).

Each figure is the median of several calls through the ASGI app (in-process, no HTTP
server), with the tail cache off so every ``/api/alerts`` call reads Kafka (incrementally:
what arrived since the previous call); the cold figure is a fresh reader's first read.
"""

from __future__ import annotations

import statistics
import time

ALERTS = 100_000
RUNS = 7


def run(ctx) -> list[dict]:
    from fastapi.testclient import TestClient

    from chaussettes.ops import readers, samples
    from chaussettes.ops.app import _auth_dependency, create_app

    settings = ctx.settings.replace(topic_alerts=ctx.new_topic(1), home=ctx.tmp / "ops-bench")
    started = time.perf_counter()
    samples.publish(settings, samples.mixed_alerts(ALERTS))
    produce_s = time.perf_counter() - started
    samples.write_status(settings, samples.status_doc())
    app = create_app(settings, tail_cache_s=0)
    app.dependency_overrides[_auth_dependency()] = lambda: {"username": "bench"}
    client = TestClient(app)
    results = []
    for route, goal in (("/api/alerts", "< 1000"), ("/api/rates", "< 1000"), ("/api/health", "< 100"),
                        ("/api/versions", "< 200"), ("/", "< 100")):
        client.get(route)  # warm-up
        runs = []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            response = client.get(route)
            runs.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{route}: HTTP {response.status_code}: {response.text[:200]}")
        results.append({"name": f"ops API {route} latency ({ALERTS // 1000}k alerts on the topic)",
                        "value": round(statistics.median(runs), 1), "unit": "ms", "goal": goal,
                        "note": f"median of {RUNS}, max {max(runs):.0f} ms; reads the tail "
                                f"({client.get('/api/alerts?limit=0').json()['alerts_in_tail']} alerts)"
                                if route == "/api/alerts" else f"median of {RUNS}, max {max(runs):.0f} ms"})
    cold = []
    for _ in range(3):  # a fresh reader: the first page load after an API server start
        t0 = time.perf_counter()
        readers.alerts_view(readers.read_alerts_tail(settings))
        cold.append((time.perf_counter() - t0) * 1000)
    results.append({"name": f"ops alerts first read, cold ({ALERTS // 1000}k alerts on the topic)",
                    "value": round(statistics.median(cold), 1), "unit": "ms", "goal": "< 1000",
                    "note": f"median of 3, max {max(cold):.0f} ms; new consumer, tail of 5000"})
    results.append({"name": "ops bench: 100k alerts produced", "value": round(produce_s, 2), "unit": "s",
                    "goal": None, "note": "set-up, built with the detector's alert builder"})
    return results
