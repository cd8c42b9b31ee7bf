"""The worker's blob cache: atomic adds, LRU eviction within the byte budget, pins that
protect files of running tasks, a rebuilt use order after a restart, one worker per
directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fake_queen import digest

from hswarm import errors
from hswarm.worker.cache import BlobCache


def _blob(n: int, size: int = 100) -> tuple[str, bytes]:
    data = bytes([n]) * size
    return digest(data), data


def test_least_recently_used_files_go_first_and_pinned_ones_stay(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, budget_bytes=300)
    blobs = [_blob(n) for n in range(5)]
    for d, data in blobs[:3]:
        cache.write(d, data)
    assert cache.size == 300 and cache.digests() == [d for d, _ in blobs[:3]]

    used = cache.acquire(blobs[0][0])  # use 0: now 1 is the least recently used
    assert used is not None and used.read_bytes() == blobs[0][1]
    cache.release(blobs[0][0])
    cache.write(*blobs[3])
    assert cache.digests() == [blobs[2][0], blobs[0][0], blobs[3][0]]
    assert not cache.path(blobs[1][0]).exists() and cache.size == 300

    pinned = cache.acquire(blobs[2][0])  # the LRU file, but a running task holds it
    assert pinned is not None
    cache.write(*blobs[4])
    assert blobs[2][0] in cache and blobs[0][0] not in cache
    assert cache.size == 300 and pinned.exists()

    # Over budget while everything is pinned: kept until released, then evicted.
    big_digest, big = _blob(9, 500)
    path = cache.write(big_digest, big, pin=True)
    assert path.exists() and cache.size > 300
    cache.release(blobs[2][0])
    assert blobs[2][0] not in cache
    cache.release(big_digest)
    assert cache.size <= 300 and big_digest not in cache and not path.exists()
    cache.close()


def test_adds_are_atomic_renames_and_duplicates_keep_one_copy(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, budget_bytes=1 << 20)
    d, data = _blob(1)
    temp = cache.temp_file()
    assert temp.parent == cache.temp_dir
    temp.write_bytes(data)
    path = cache.add(d, temp, "context")
    assert not temp.exists() and path == tmp_path / "context" / d.removeprefix("sha256:")
    assert cache.pins(d) == 1 and cache.digests("context") == [d] and cache.digests("blob") == []

    again = cache.temp_file()
    again.write_bytes(data)
    assert cache.add(d, again, "blob", pin=False) == path and not again.exists()
    assert cache.size == len(data) and cache.pins(d) == 1

    cache.discard(d)
    assert d not in cache and not path.exists() and cache.size == 0
    with pytest.raises(errors.DigestMismatchError, match="not a digest"):
        cache.path("sha256:../../etc/passwd")
    cache.close()


def test_a_restarted_cache_rebuilds_its_use_order_and_drops_partial_files(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, budget_bytes=1000)
    blobs = [_blob(n) for n in range(3)]
    for d, data in blobs:
        cache.write(d, data)
    now = time.time()
    for age, (d, _) in zip((30, 10, 20), blobs, strict=True):  # use order: 0, 2, 1
        os.utime(cache.path(d), (now - age, now - age))
    (cache.temp_dir / "half-written.part").write_bytes(b"xx")
    (tmp_path / "blob" / "not-a-digest").write_bytes(b"keep me")
    cache.close()

    reopened = BlobCache(tmp_path, budget_bytes=250)
    assert reopened.digests() == [blobs[2][0], blobs[1][0]]  # 0 was the oldest: evicted
    assert list(reopened.temp_dir.iterdir()) == []
    assert (tmp_path / "blob" / "not-a-digest").exists()
    reopened.close()


def test_two_workers_cannot_share_a_cache_directory(tmp_path: Path) -> None:
    first = BlobCache(tmp_path, budget_bytes=1000)
    with pytest.raises(errors.HSwarmError, match=r"cannot use the worker cache .* another worker holds it"):
        BlobCache(tmp_path, budget_bytes=1000)
    first.close()
    BlobCache(tmp_path, budget_bytes=1000).close()
