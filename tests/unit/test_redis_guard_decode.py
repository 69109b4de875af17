"""The stored-key path's timestamp check (:mod:`skyfeast.featurestore.writers._guard`): serialised
``google.protobuf.Timestamp`` bytes decoded for a whole group at once, against protobuf's own parser,
and the newest-wins rule the script applies (an equal timestamp rewrites)."""

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from skyfeast.featurestore.writers._encode import timestamp_proto
from skyfeast.featurestore.writers._guard import decode_timestamps, not_older


def _ts(sec: int, nanos: int) -> bytes:
    return Timestamp(seconds=sec, nanos=nanos).SerializeToString()


def test_decode_matches_protobuf_over_the_valid_range_and_absent_values():
    rng = np.random.default_rng(17)
    pairs = [(0, 0), (1, 0), (0, 5), (-1, 999_999_999), (-62_135_596_800, 0), (253_402_300_799, 999_999_999)]
    pairs += [(int(s), int(n)) for s, n in zip(rng.integers(-62_135_596_800, 253_402_300_800, 3000),
                                               rng.integers(0, 10**9, 3000))]
    stored = [_ts(s, n) for s, n in pairs]
    stored.insert(3, None)
    sec, nanos, present = decode_timestamps(stored)
    assert present.tolist() == [s is not None for s in stored]
    assert [(int(a), int(b)) for a, b, p in zip(sec, nanos, present) if p] == pairs
    assert sec[3] == 0 and nanos[3] == 0


def test_decode_reads_what_the_writer_encodes_and_skips_unknown_fields():
    micros = np.array([0, 1, -1, 1_717_245_000_123_456, -2_000_000_000_000_001, 999_999], np.int64)
    sec, nanos, present = decode_timestamps(timestamp_proto(micros).to_pylist())
    assert present.all()
    assert (sec * 1_000_000 + nanos // 1000).tolist() == micros.tolist()
    sec, nanos, _ = decode_timestamps([b"\x18\x05\x08\x02\x10\x03", b"", b"\x10\x07"])
    assert sec.tolist() == [2, 0, 0] and nanos.tolist() == [3, 0, 7]


def test_rule_newest_wins_and_equal_rewrites():
    old = [_ts(100, 5), _ts(100, 5), _ts(100, 5), _ts(100, 5), _ts(-5, 0), None]
    new_sec = np.array([100, 100, 101, 99, -4, 0])
    new_nanos = np.array([5, 4, 0, 999_999_999, 0, 0])
    sec, nanos, present = decode_timestamps(old)
    assert not_older(new_sec, new_nanos, sec, nanos, present).tolist() == [True, False, True, False, True, True]
    assert decode_timestamps([])[0].tolist() == []
