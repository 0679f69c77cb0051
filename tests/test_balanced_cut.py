"""spark_kafka.reader.balanced_cut: a capped micro-batch cuts every partition at about the
same record time, also when one partition is denser (a flood keyed by its client)."""

from __future__ import annotations

import bisect

from chaussettes.spark_kafka.reader import balanced_cut


def make(parts):
    probes = []

    def timestamps_at(wanted):
        probes.append(wanted)
        return {tp: parts[tp][off] for tp, off in wanted.items()}
    return timestamps_at, probes


def time_of_cut(times, cut):
    return times[cut - 1] if cut else None


def test_a_dense_partition_is_cut_at_the_same_time_as_the_others():
    # 4 partitions of 10 records/s over 100 s; partition 3 also has a flood of 90/s from 40 s to 70 s
    parts = {("t", p): [i * 100 for i in range(1000)] for p in range(3)}
    flood = sorted([i * 100 for i in range(1000)] + [40_000 + i * 11 for i in range(2700)])
    parts[("t", 3)] = flood
    begin = {tp: 0 for tp in parts}
    end = {tp: len(t) for tp, t in parts.items()}
    timestamp_at, probes = make(parts)
    cut = balanced_cut(begin, end, 3000, timestamp_at)
    assert sum(cut[tp] - begin[tp] for tp in parts) <= 3000
    assert sum(cut[tp] - begin[tp] for tp in parts) >= 2700  # the cap is (nearly) used
    times = [time_of_cut(parts[tp], cut[tp]) for tp in parts]
    assert max(times) - min(times) <= 1000, times  # within a second of record time
    assert len(probes) <= 4  # round trips: both ends of the lags, then up to 2 refinements
    # the proportional cut (without record times) reads the flood's partition far ahead
    blind = balanced_cut(begin, end, 3000, lambda wanted: dict.fromkeys(wanted))
    blind_times = [time_of_cut(parts[tp], blind[tp]) for tp in parts]
    assert max(blind_times) - min(blind_times) > 5_000


def test_no_cap_needed_and_equal_times_fall_back():
    parts = {("t", 0): [5] * 10, ("t", 1): [5] * 10}
    begin, end = {tp: 2 for tp in parts}, {tp: 10 for tp in parts}
    timestamp_at, _ = make(parts)
    assert balanced_cut(begin, end, 100, timestamp_at) == end
    cut = balanced_cut(begin, end, 8, timestamp_at)  # every record at one time: by lag
    assert cut == {("t", 0): 6, ("t", 1): 6}


def test_from_a_later_start_and_a_partition_without_lag():
    parts = {("t", p): [i * 10 * (p + 1) for i in range(500)] for p in range(3)}
    begin = {("t", 0): 100, ("t", 1): 50, ("t", 2): 500}
    end = {tp: len(t) for tp, t in parts.items()}
    timestamp_at, _ = make(parts)
    cut = balanced_cut(begin, end, 300, timestamp_at)
    assert cut[("t", 2)] == 500 and sum(cut[tp] - begin[tp] for tp in parts) <= 300
    t0, t1 = (parts[tp][cut[tp] - 1] for tp in (("t", 0), ("t", 1)))
    assert abs(t0 - t1) <= 40
    assert bisect.bisect_right(parts[("t", 0)], t0) == cut[("t", 0)]


def test_record_times_probed_on_the_broker_round_after_round(broker, new_topic):
    """OffsetClient.timestamps_at against the broker: the record time at each offset asked,
    exact, in rounds that reuse the same partitions (a partition it paused once answered
    must read again in the next round, not wait out its timeout)."""
    import random

    from chaussettes.spark_kafka.reader import OffsetClient, ReadConfig
    from confluent_kafka import Producer

    topic, per_partition, t0 = new_topic(4), 5000, 1_767_225_600_000
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 50})
    for i in range(per_partition):
        for p in range(4):  # whole record batches of hundreds of records: a fetch returns many
            producer.produce(topic, b"x" * 100, partition=p, timestamp=t0 + 7 * i + p)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    client = OffsetClient(ReadConfig.parse({"kafka.bootstrap.servers": broker.bootstrap_servers,
                                            "subscribe": topic}, streaming=True))
    try:
        rnd = random.Random(3)
        for _ in range(4):
            wanted = {(topic, p): rnd.randrange(per_partition) for p in range(4)}
            got = client.timestamps_at(wanted)
            assert got == {(topic, p): t0 + 7 * off + p for (_, p), off in wanted.items()}
        # past the end of a partition: unknown, and the other partitions still answer
        got = client.timestamps_at({(topic, 0): per_partition, (topic, 1): 10})
        assert got == {(topic, 0): None, (topic, 1): t0 + 70 + 1}
    finally:
        client.close()
