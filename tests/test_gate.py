"""The channel gate (``detector.gate``): where the stateful query's micro-batches end.
Pure: no broker, no Spark."""

from __future__ import annotations

from chaussettes.detector import gate

T = "counts"


def test_a_batch_ends_at_the_gate_where_it_lies_between_begin_and_end():
    begin = {(T, 0): 10, (T, 1): 20, (T, 2): 30}
    end = {(T, 0): 15, (T, 1): 28, (T, 2): 30}
    # partition 0: the next batch's counts (13, 14) are out, its clock not yet: held at 13;
    # partition 1: nothing of the next batch yet; partition 2: nothing new
    assert gate.cap(begin, end, {0: 13, 1: 28, 2: 30}) == {(T, 0): 13, (T, 1): 28, (T, 2): 30}


def test_the_gate_at_the_begin_holds_the_whole_partition_back():
    """The ingest publishes the next batch's counts before it moves the gate: no micro-batch
    starts on a part of them."""
    assert gate.cap({(T, 0): 10}, {(T, 0): 15}, {0: 10}) == {(T, 0): 10}


def test_a_stale_or_silent_gate_holds_nothing_back():
    begin = {(T, 0): 10, (T, 1): 5}
    end = {(T, 0): 15, (T, 1): 9, (T, 2): 4}
    # partition 0: a gate behind the begin (read past it once: stale); 1: beyond the end;
    # 2: a partition the gate does not name (and the batch did not begin on)
    assert gate.cap(begin, end, {0: 7, 1: 12}) == end


def test_the_gate_file_round_trips_and_a_broken_one_is_ignored(tmp_path):
    path = tmp_path / gate.GATE_FILE
    assert gate.read(path) is None and gate.read(None) is None
    gate.write(path, 7, {1: 40, 0: 12})
    assert gate.read(path) == {0: 12, 1: 40}
    path.write_text("{not json")
    assert gate.read(path) is None
