"""The worker's disk cache of blobs (ciphertexts and public contexts) by content digest.

Files live at ``<dir>/<kind>/<hex>`` (kind ``blob`` or ``context``; the kind only tells
the supervisor which digests are key sets it can advertise to the queen). Writes are
atomic: bytes go to ``<dir>/tmp/`` first and are renamed into place, so a reader never
sees half a file. The cache keeps to a byte budget by deleting the least recently used
files that no running task has pinned; a pinned file stays even over budget. Use order
is the files' modification time (touched on every use), so a restarted worker rebuilds
it by scanning the directory. A lock file keeps two workers out of one directory.

It does not download or verify anything: callers add files they checked (the transport
hashes downloads, executor children hash what they read and what they write).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import tempfile
import threading
from pathlib import Path

from hswarm import errors

KINDS = ("blob", "context")
TEMP_SUFFIX = ".part"
_HEX = re.compile(r"^[0-9a-f]{64}$")

log = logging.getLogger("hswarm.worker")


@dataclasses.dataclass
class _Entry:
    kind: str
    size: int


class BlobCache:
    """Blobs on disk by digest, least recently used first out, pinned ones kept."""

    def __init__(self, directory: Path, budget_bytes: int) -> None:
        self.directory = Path(directory)
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._pins: collections.Counter[str] = collections.Counter()
        self._size = 0
        for sub in (*KINDS, "tmp"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.directory / ".lock", "a+")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            raise errors.HSwarmError(
                f"cannot use the worker cache {self.directory}: another worker holds it; "
                "give each worker its own HSWARM_CACHE_DIR"
            ) from exc
        self._scan()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

    # -- paths --------------------------------------------------------------------------

    @property
    def temp_dir(self) -> Path:
        """Where new files are written before :meth:`add` renames them into place."""
        return self.directory / "tmp"

    def temp_file(self) -> Path:
        """A new empty file in :attr:`temp_dir` (on the cache's file system)."""
        fd, name = tempfile.mkstemp(dir=self.temp_dir, suffix=TEMP_SUFFIX)
        os.close(fd)
        return Path(name)

    def path(self, digest: str, kind: str = "blob") -> Path:
        if kind not in KINDS:
            raise ValueError(f"cannot use cache kind {kind!r}: expected one of {KINDS}")
        hex_digest = digest.removeprefix("sha256:")
        if not _HEX.match(hex_digest):
            raise errors.DigestMismatchError(f"cannot cache {digest!r}: not a digest (sha256:<64 hex>)")
        return self.directory / kind / hex_digest

    # -- use ----------------------------------------------------------------------------

    def acquire(self, digest: str) -> Path | None:
        """The cached file for ``digest``, pinned and marked as just used; None if absent.
        Every acquire needs a :meth:`release`."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            self._pins[digest] += 1
            self._entries.move_to_end(digest)
            path = self.path(digest, entry.kind)
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)
        return path

    def add(self, digest: str, source: Path, kind: str = "blob", *, pin: bool = True) -> Path:
        """Move the file ``source`` (checked by the caller to hold ``digest``) into the
        cache atomically; returns its cached path, pinned unless ``pin`` is False. When the
        digest is already cached, ``source`` is deleted and the cached copy is used."""
        target = self.path(digest, kind)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None:
                source.unlink(missing_ok=True)
                target = self.path(digest, entry.kind)
            else:
                size = source.stat().st_size
                os.replace(source, target)
                self._entries[digest] = _Entry(kind, size)
                self._size += size
            self._entries.move_to_end(digest)
            if pin:
                self._pins[digest] += 1
            self._evict()
        with contextlib.suppress(FileNotFoundError):
            os.utime(target)
        return target

    def write(self, digest: str, data: bytes, kind: str = "blob", *, pin: bool = False) -> Path:
        """Store ``data`` under ``digest`` atomically (temp file, then rename)."""
        temp = self.temp_file()
        try:
            temp.write_bytes(data)
            return self.add(digest, temp, kind, pin=pin)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def release(self, digest: str) -> None:
        """Undo one pin; the file may be evicted once nothing pins it."""
        with self._lock:
            if self._pins[digest] <= 1:
                self._pins.pop(digest, None)
            else:
                self._pins[digest] -= 1
            self._evict()

    def discard(self, digest: str) -> None:
        """Forget and delete ``digest`` (its file is damaged), pinned or not."""
        with self._lock:
            entry = self._entries.pop(digest, None)
            if entry is None:
                return
            self._size -= entry.size
            self.path(digest, entry.kind).unlink(missing_ok=True)
        log.warning("cache: discarded %s (damaged)", digest)

    # -- inspection ---------------------------------------------------------------------

    def __contains__(self, digest: object) -> bool:
        with self._lock:
            return digest in self._entries

    def digests(self, kind: str | None = None) -> list[str]:
        """Cached digests, least recently used first (of one kind, if given)."""
        with self._lock:
            return [d for d, e in self._entries.items() if kind is None or e.kind == kind]

    @property
    def size(self) -> int:
        with self._lock:
            return self._size

    def pins(self, digest: str) -> int:
        with self._lock:
            return self._pins[digest]

    # -- internals ----------------------------------------------------------------------

    def _scan(self) -> None:
        for stale in self.temp_dir.iterdir():  # half-written files of a previous run
            with contextlib.suppress(OSError):
                stale.unlink()
        found: list[tuple[float, str, str, int]] = []
        for kind in KINDS:
            for path in (self.directory / kind).iterdir():
                if not _HEX.match(path.name) or not path.is_file():
                    continue
                stat = path.stat()
                found.append((stat.st_mtime, f"sha256:{path.name}", kind, stat.st_size))
        for _, digest, kind, size in sorted(found):
            self._entries[digest] = _Entry(kind, size)
            self._size += size
        with self._lock:
            self._evict()

    def _evict(self) -> None:
        # Called with the lock held.
        if self._size <= self.budget_bytes:
            return
        for digest in list(self._entries):
            if self._size <= self.budget_bytes:
                break
            if self._pins[digest] > 0:
                continue
            entry = self._entries.pop(digest)
            self._size -= entry.size
            with contextlib.suppress(FileNotFoundError):
                self.path(digest, entry.kind).unlink()
            log.debug("cache: evicted %s (%d bytes)", digest, entry.size)
