"""What security and durability cost on the local broker.

- Mutual TLS through the socat proxy vs plaintext: produce and consume msgs/s of the same
  confluent-kafka code (bench/kafka_raw.py, ~200-byte messages, 4 partitions), each against a
  Tansu of its own, best of two rounds; the figure that matters is the ratio.
- Durable (``s3://`` on a local SeaweedFS) vs memory storage: produce (and consume) msgs/s.
"""

from __future__ import annotations

import os
import uuid

import kafka_raw
from chaussettes import procs, security
from chaussettes import settings as settings_mod
from chaussettes.broker import broker_argv
from chaussettes.stack import s3
from chaussettes.topics import ensure_topics

TLS_MESSAGES = 300_000
DURABLE_MESSAGES = 100_000
ROUNDS = 2


def _topic(settings, partitions: int = 4) -> str:
    name = f"bench-sec-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, {name: partitions})
    return name


def _rates(settings, count: int) -> tuple[float, float]:
    best_p = best_c = 0.0
    for _ in range(ROUNDS):
        topic = _topic(settings)
        best_p = max(best_p, kafka_raw.produce_rate(settings, topic, count))
        best_c = max(best_c, kafka_raw.consume_rate(settings, topic, 4, count))
    return best_p, best_c


def tls_figures(ctx) -> list[dict]:
    home = ctx.tmp / "bench-security"
    base = settings_mod.load(env={}, home=home, kafka_port=procs.free_port(),
                             kafka_tls_port=procs.free_port(), kafka_timeout_s=10.0)
    pki = security.ensure_pki(security.tls_dir(base))
    logs = home / "logs"
    broker = procs.start(broker_argv(base.kafka_port, advertised_port=base.kafka_tls_port),
                         logs / "broker-tls.log")
    proxy = procs.start(security.tls_proxy_argv(base.kafka_tls_port, base.kafka_port, pki),
                        logs / "socat.log")
    plain_broker = procs.start(broker_argv(port := procs.free_port()), logs / "broker-plain.log")
    try:
        for p in (base.kafka_port, base.kafka_tls_port, port):
            if not procs.wait_until(lambda p=p: procs.port_open(p), 20):
                raise RuntimeError(f"port {p} did not open")
        plain = base.replace(bootstrap_servers=f"127.0.0.1:{port}")
        tls = security.secured_settings(base, "generator")
        plain_p, plain_c = _rates(plain, TLS_MESSAGES)
        tls_p, tls_c = _rates(tls, TLS_MESSAGES)
    finally:
        for proc in (proxy, broker, plain_broker):
            procs.stop_group(proc.pid, 5)
    note = (f"{TLS_MESSAGES:,} x {kafka_raw.MESSAGE_BYTES} B, 4 partitions, best of {ROUNDS}; "
            "socat OPENSSL-LISTEN fork, TLS 1.3, EC P-256 client certificates")
    return [
        {"name": "TLS proxy produce", "value": round(tls_p), "unit": "msgs/s", "goal": None, "note": note},
        {"name": "TLS proxy consume", "value": round(tls_c), "unit": "msgs/s", "goal": None, "note": note},
        {"name": "plaintext produce (same run)", "value": round(plain_p), "unit": "msgs/s", "goal": None,
         "note": note},
        {"name": "plaintext consume (same run)", "value": round(plain_c), "unit": "msgs/s", "goal": None,
         "note": note},
        {"name": "TLS / plaintext produce", "value": round(tls_p / plain_p, 3), "unit": "ratio",
         "goal": ">= 0.5", "note": "mutual TLS through the proxy vs plaintext"},
        {"name": "TLS / plaintext consume", "value": round(tls_c / plain_c, 3), "unit": "ratio",
         "goal": ">= 0.5", "note": "mutual TLS through the proxy vs plaintext"},
    ]


def durable_figures(ctx) -> list[dict]:
    home = ctx.tmp / "bench-durable"
    s = settings_mod.load(env={}, home=home, kafka_timeout_s=10.0)
    base = s3.free_base_port()
    logs = home / "logs"
    weed = s3.start_server(s, base, logs / "weed.log")
    broker = None
    try:
        port = procs.free_port()
        broker = procs.start(broker_argv(port, storage=s3.broker_storage()), logs / "broker-s3.log",
                             env={**os.environ, **s3.broker_env(s, base)})
        if not procs.wait_until(lambda: procs.port_open(port), 20):
            raise RuntimeError("durable broker did not start")
        d_produce, d_consume = _rates(s.replace(bootstrap_servers=f"127.0.0.1:{port}"), DURABLE_MESSAGES)
    finally:
        if broker is not None:
            procs.stop_group(broker.pid, 5)
        procs.stop_group(weed.pid, 5)
    m_produce, m_consume = _rates(ctx.settings, DURABLE_MESSAGES)
    note = (f"{DURABLE_MESSAGES:,} x {kafka_raw.MESSAGE_BYTES} B, 4 partitions, best of {ROUNDS}; "
            "s3:// on weed mini (local disk)")
    return [
        {"name": "durable (s3) produce", "value": round(d_produce), "unit": "msgs/s", "goal": None, "note": note},
        {"name": "durable (s3) consume", "value": round(d_consume), "unit": "msgs/s", "goal": None, "note": note},
        {"name": "memory produce (same run)", "value": round(m_produce), "unit": "msgs/s", "goal": None,
         "note": note},
        {"name": "durable / memory produce", "value": round(d_produce / m_produce, 3), "unit": "ratio",
         "goal": None, "note": "the price of surviving a broker restart"},
        {"name": "durable / memory consume", "value": round(d_consume / m_consume, 3), "unit": "ratio",
         "goal": None, "note": note},
    ]


def run(ctx) -> list[dict]:
    return tls_figures(ctx) + durable_figures(ctx)
