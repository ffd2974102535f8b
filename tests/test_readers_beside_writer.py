"""A training job may read a store while ``flowstore extract`` extends it (issue 11, item 4):
readers see the videos committed when they opened the store, every one of them complete, and
never a half-written one. Real extractions of shared clips, the writer in a subprocess."""
import subprocess
import zlib

import pytest

import flowstore
from flowstore.data import StoreClipDataset
from flowstore.store.records import record_counts, records_crc32
from helpers import flowstore_cmd, run_cli

EXTRACT = ("--method", "farneback", "--size", "64x48", "--workers", "1")
# extracted while the readers read; test.mp4 is a long clip, so commits keep coming for seconds
LATER = ("test.mp4", "clean_and_jerk.mp4", "v_Basketball_g01_c01.avi", "skateboarding.mp4", "demo.mp4")


def read_every_record(reader) -> None:
    """Read every record of every listed video with its CRC checked, and check the video is
    the one committed: all its records there and their CRCs the ones its entry records."""
    for vid in reader.videos:
        entry = reader.entry(vid)
        shard = reader._shard(vid)
        crcs = {}
        for kind, count in record_counts(entry, reader.quant.scheme):
            payloads = shard.get_many(vid, kind, range(count), check=True)
            crcs[kind] = [zlib.crc32(p) for p in payloads]
        assert records_crc32(crcs) == entry["records_crc32"], vid


@pytest.mark.parametrize("backend", ["lmdb", "hdf5"])
def test_readers_beside_a_running_extract_see_only_complete_committed_videos(tmp_path, shared_videos, backend):
    store = tmp_path / "store"
    first = run_cli("extract", str(shared_videos / "part_0.mp4"), "--out", str(store), "--format", backend, *EXTRACT)
    assert first.returncode == 0, first.stderr
    early = flowstore.open_store(store, check=True)
    assert early.videos == ["part_0"]

    writer = subprocess.Popen(
        flowstore_cmd("extract", *[str(shared_videos / name) for name in LATER], "--out", str(store),
                      "--format", backend, "--no-progress", *EXTRACT),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    seen = []  # the number of videos each reader saw, opened while the writer ran
    try:
        while writer.poll() is None:
            with flowstore.open_store(store, check=True) as reader:
                if writer.poll() is not None:
                    break
                read_every_record(reader)
                seen.append(len(reader.videos))
            ds = StoreClipDataset(store, modality="both", sampling="tsn", flow_values="uint8", rgb_values="uint8")
            for i in range(len(ds)):
                sample = ds[i]
                assert sample["video"] in ds.store.videos
            ds.store.close()
            read_every_record(early)  # opened before the new commits: its own list, still whole
            assert early.videos == ["part_0"]
    finally:
        if writer.poll() is None:
            writer.kill()
        _, err = writer.communicate(timeout=600)
    assert writer.returncode == 0, err
    # the readers ran while videos were being committed, not only before or after
    assert len(seen) >= 2 and len(set(seen)) >= 2, seen
    assert seen == sorted(seen)  # a later reader never sees fewer videos
    with flowstore.open_store(store, check=True) as reader:
        assert len(reader.videos) == 1 + len(LATER)
        read_every_record(reader)
    assert early.videos == ["part_0"]
    early.close()
