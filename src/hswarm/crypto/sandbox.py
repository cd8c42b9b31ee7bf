"""Trial-parses untrusted bytes in a forked child before this process parses them.

OpenFHE's deserializer trusts length fields: a few flipped bits in a ciphertext make it
allocate gigabytes, abort (``std::bad_alloc`` thrown where it cannot be caught) or, in
the header, crash (measured on openfhe 1.6.1). So the evaluator first lets a forked copy
of itself parse the bytes under a memory cap and a time limit; only bytes the child
parsed cleanly reach the real process. A fork shares the loaded keys copy-on-write, so a
probe costs about a millisecond plus one parse.

It does not make parsing meaningful: bytes with a corrupted body still parse into a
valid-looking ciphertext, which only the swarm's digest quorum catches.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
from collections.abc import Callable
from typing import Any

from hswarm import errors

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _address_space() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * _PAGE


def _resident(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def probe(parse: Callable[[bytes], Any], data: bytes, *, extra_memory: int, timeout_s: float) -> int:
    """Raise DeserializationError unless ``parse(data)`` returns normally in a forked
    child that may grow its address space by at most ``extra_memory`` bytes. Returns how
    much the parse grew the child's peak resident memory, in bytes."""
    read_end, write_end = os.pipe()
    limit = _address_space() + extra_memory
    pid = os.fork()
    if pid == 0:  # the child: parse, report, and leave without running any cleanup
        status = 0
        try:
            os.close(read_end)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            before = _resident("VmRSS")
            parse(data)
            os.write(write_end, str(max(0, _resident("VmHWM") - before)).encode())
        except BaseException as exc:  # every failure is reported to the parent
            status = 3
            with contextlib.suppress(OSError):
                os.write(write_end, f"{type(exc).__name__}: {exc}".encode()[-400:])
        os._exit(status)
    os.close(write_end)
    try:
        status = _wait(pid, timeout_s)
        message = os.read(read_end, 512).decode(errors="replace").strip()
    finally:
        os.close(read_end)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return int(message) if message.isdigit() else 0
    if os.WIFEXITED(status):
        detail = message.splitlines()[-1] if message else "rejected by the parser"
        raise errors.DeserializationError(f"cannot deserialize the ciphertext: {detail}")
    raise errors.DeserializationError(
        f"cannot deserialize the ciphertext: the parser died "
        f"({signal.Signals(os.WTERMSIG(status)).name}) on these bytes"
    )


def _wait(pid: int, timeout_s: float) -> int:
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise errors.DeserializationError(
                f"cannot deserialize the ciphertext: parsing took longer than {timeout_s:g} s"
            )
        return os.waitpid(pid, 0)[1]
    finally:
        os.close(fd)
