"""One conformance suite, run against every storage backend."""
import os
import zlib

import pytest

from flowstore.store.backend import reader_class, writer_class
from flowstore.store.format import BACKENDS, FLOW_X, RGB, shard_name
from flowstore.store.writer import ShardAllocator, StoreLock, StoreLockedError

PAYLOADS = [os.urandom(n) for n in (0, 1, 100, 5000, 70000)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def write_video(backend, path, video, payloads, kinds=(RGB, FLOW_X)):
    writer = writer_class(backend)(str(path))
    writer.begin_video(video)
    for kind in kinds:
        for i, p in enumerate(payloads):
            writer.put(kind, i, p)
    writer.end_video()


def new_shard(tmp_path, backend):
    (tmp_path / "shards").mkdir(exist_ok=True)
    return ShardAllocator(tmp_path, backend, 1 << 30).shard_for_next_video()


@pytest.mark.parametrize("readahead", [True, False])
def test_roundtrip_several_videos(tmp_path, backend, readahead):
    path = new_shard(tmp_path, backend)
    write_video(backend, path, "a/b c é", PAYLOADS)
    write_video(backend, path, "second", PAYLOADS[::-1])
    reader = reader_class(backend)(str(path), readahead=readahead)
    for i, p in enumerate(PAYLOADS):
        assert reader.get("a/b c é", RGB, i, check=True) == p
        assert reader.get("second", FLOW_X, len(PAYLOADS) - 1 - i) == p
    assert reader.get_many("a/b c é", FLOW_X, [1, 2, 3], check=True) == PAYLOADS[1:4]
    assert reader.get_many("a/b c é", FLOW_X, [4, 0]) == [PAYLOADS[4], PAYLOADS[0]]
    got = list(reader.iter_records("second", RGB, len(PAYLOADS)))
    assert [g[1] for g in got] == PAYLOADS[::-1] and all(g[2] for g in got)
    with pytest.raises(KeyError):
        reader.get("missing", RGB, 0)
    with pytest.raises(KeyError):
        reader.get("second", RGB, len(PAYLOADS))
    reader.close()


def test_aborted_video_leaves_committed_ones_readable(tmp_path, backend):
    path = new_shard(tmp_path, backend)
    write_video(backend, path, "good", PAYLOADS)
    writer = writer_class(backend)(str(path))
    writer.begin_video("half")
    writer.put(RGB, 0, b"xyz")
    writer.abort_video()
    reader = reader_class(backend)(str(path))
    assert [reader.get("good", RGB, i) for i in range(len(PAYLOADS))] == PAYLOADS
    reader.close()


def test_checksum_mismatch_is_detected(tmp_path, backend):
    path = new_shard(tmp_path, backend)
    payload = b"\x89PNG" + bytes(range(256)) * 40
    write_video(backend, path, "v", [payload], kinds=(RGB,))
    data = bytearray(path.read_bytes())
    where = data.find(payload)
    assert where >= 0
    data[where + 500] ^= 0xFF
    path.write_bytes(bytes(data))
    reader = reader_class(backend)(str(path))
    with pytest.raises(ValueError, match="checksum mismatch"):
        reader.get("v", RGB, 0, check=True)
    records = list(reader.iter_records("v", RGB, 1))
    assert records[0][2] is False and zlib.crc32(records[0][1]) != zlib.crc32(payload)
    reader.close()


def test_allocator_rolls_over_and_never_shares(tmp_path, backend):
    first = ShardAllocator(tmp_path, backend, 1000)
    (tmp_path / "shards").mkdir()
    a = first.shard_for_next_video()
    assert a == tmp_path / "shards" / shard_name(backend, 0)
    other = ShardAllocator(tmp_path, backend, 1000).shard_for_next_video()
    assert other == tmp_path / "shards" / shard_name(backend, 1)  # a second worker gets its own shard
    write_video(backend, a, "big", [os.urandom(3000)])
    assert first.shard_for_next_video() == tmp_path / "shards" / shard_name(backend, 2)  # past shard_size: a new one


def test_lock_is_exclusive(tmp_path):
    with StoreLock(tmp_path):
        with pytest.raises(StoreLockedError, match="locked by another writer"):
            StoreLock(tmp_path).acquire()
    with StoreLock(tmp_path):  # released
        pass


def test_two_readers_of_one_lmdb_store_in_one_process(tmp_path):
    """LMDB refuses a second open of one file per process: readers share one handle."""
    import threading

    path = new_shard(tmp_path, "lmdb")
    write_video("lmdb", path, "v", PAYLOADS)
    cls = reader_class("lmdb")
    first, second = cls(str(path)), cls(str(path))
    assert first.get("v", RGB, 3) == second.get("v", RGB, 3) == PAYLOADS[3]
    first.close()
    assert second.get("v", FLOW_X, 4, check=True) == PAYLOADS[4]  # still open for the other reader
    errors = []

    def read():
        try:
            reader = cls(str(path))
            for i in range(len(PAYLOADS)):
                assert reader.get("v", RGB, i) == PAYLOADS[i]
            reader.close()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    second.close()
