"""Executor child processes: the only place a worker deserializes and evaluates FHE.

OpenFHE keeps evaluation keys in a process-global registry and holds the GIL during a
call, and a crafted ciphertext may crash native code. So each :class:`Executor` is a
child process (``multiprocessing`` with the *spawn* start method: forking a process
that already runs OpenFHE's threads is unsafe) that loads one public context from a
cache file (checking its digest), builds a sandboxed ``Evaluator`` and then serves one
task at a time over a pipe: it reads the input files (checking their digests), runs
``runtime.execute_steps``, writes each output ciphertext to a temporary file and answers
``{step id: (digest, path)}`` or a structured error (hswarm error class and message).
A faulty worker (``faults``) sends a :class:`~hswarm.worker.faults.Lie` with the task:
the child computes the honest outputs, then writes the lie instead and also answers the
honest digests, for the supervisor's ``FAULT`` log lines.

The :class:`ExecutorPool` in the supervisor routes a task to an idle executor holding
its context, starts one when there is room, and otherwise replaces the least recently
used idle executor of another context. A child that dies (crash, OOM, a signal) is
noticed through its process sentinel: the task fails with an error and the next task
gets a fresh child. A task can be abandoned (its lease lost, its deadline passed): the
child is killed, since a native call cannot be interrupted.

It does no networking and knows nothing of leases or the cache's budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing import connection as mp_connection
from pathlib import Path
from typing import Any

from hswarm import errors
from hswarm.worker import faults

log = logging.getLogger("hswarm.worker")

Step = tuple[int, str, list[int], dict[str, Any]]
StopCheck = Callable[[], "str | None"]  # a reason to abandon the task, or None to go on
POLL_S = 0.1
STOP_TIMEOUT_S = 5.0
BITFLIP_TRIES = 8


def _never() -> str | None:
    return None


class TaskAbandoned(errors.HSwarmError):
    """cannot finish the task: it was abandoned (lease cancelled or expired, or the worker is
    stopping); its executor was killed."""


@dataclasses.dataclass(frozen=True)
class TaskRequest:
    """What an executor needs for one task: steps ``(id, op, args, attrs)`` in order, the
    files holding the inputs it reads from outside, and where to write outputs."""

    task_id: str
    steps: list[Step]
    inputs: dict[int, tuple[str, str]]  # step id -> (digest, file path)
    outputs: list[int]
    out_dir: str
    lie: faults.Lie | None = None  # fault injection: what to write instead of the truth


@dataclasses.dataclass(frozen=True)
class TaskOutput:
    outputs: dict[int, tuple[str, str]]  # step id -> (digest, temporary file path)
    seconds: float
    pid: int
    honest: dict[int, str] = dataclasses.field(default_factory=dict)  # step id -> digest, if lied


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the child ---------------------------------------------------------------------------


def _child_main(conn: Any, context_path: str, context_digest: str, cores: tuple[int, ...] = ()) -> None:
    # The supervisor decides when to stop: a Ctrl-C or a service manager's SIGTERM sent to
    # the whole process group must not kill a task the supervisor means to finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if cores:  # before openfhe loads: OpenMP's threads inherit the mask
        os.sched_setaffinity(0, cores)
    _watch_parent()
    try:
        from hswarm import runtime
        from hswarm.crypto import evaluator, public

        data = Path(context_path).read_bytes()
        bundle = public.PublicContext.from_bytes(data, expected_digest=context_digest)
        del data
        ev = evaluator.Evaluator(bundle, sandbox=True)
    except BaseException as exc:  # every failure is reported, none escapes the child
        _send(conn, _error_reply(exc, f"load the public context {context_digest}"))
        return
    if not _send(conn, ("ready", os.getpid())):
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None or not _send(conn, _serve(runtime, ev, request)):
            return


def _watch_parent() -> None:
    """Leave when the supervisor is gone (killed with SIGKILL, say), so an orphan never
    keeps computing; checked between native calls, which hold the GIL."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _serve(runtime: Any, ev: Any, request: TaskRequest) -> tuple[Any, ...]:
    started = time.perf_counter()
    written: list[str] = []
    try:
        inputs: dict[int, bytes] = {}
        for sid, (digest, path) in request.inputs.items():
            data = Path(path).read_bytes()
            got = _digest(data)
            if got != digest:
                raise errors.DigestMismatchError(
                    f"cannot use input {digest} of step {sid}: the cached file hashes to {got}"
                )
            inputs[sid] = data
        results = runtime.execute_steps(
            ev, request.steps, inputs, list(request.inputs), request.outputs, label=f"task {request.task_id}"
        )
        outputs: dict[int, tuple[str, str]] = {}
        honest: dict[int, str] = {}
        for sid, data in results.items():
            if request.lie is not None:
                honest[sid] = _digest(data)
                data = _tell(request.lie, ev, request.task_id, sid, data)
            fd, name = tempfile.mkstemp(dir=request.out_dir, suffix=".part")
            written.append(name)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            outputs[sid] = (_digest(data), name)
        return ("ok", outputs, time.perf_counter() - started, honest)
    except BaseException as exc:  # reported to the supervisor as the task's error
        for name in written:
            with contextlib.suppress(OSError):
                os.unlink(name)
        return _error_reply(exc, f"execute task {request.task_id}")


def _tell(lie: faults.Lie, ev: Any, task_id: str, sid: int, honest: bytes) -> bytes:
    """The bytes a faulty worker writes instead of ``honest`` (output ``sid`` of ``task_id``)."""
    if lie.kind == "wrong-value":
        return bytes(ev.encrypt_zeros())
    if lie.kind == "garbage":
        return faults.garbage(honest)
    if lie.kind == "collude":
        return faults.collusion_bytes(lie.group, task_id, sid, len(honest))
    if lie.kind == "bitflip":
        # A flip that lands on a length or a modulus would not deserialize; such bytes are
        # rare in the body, so try a few offsets and keep the first that loads.
        failure: BaseException | None = None
        for _ in range(BITFLIP_TRIES):
            flipped = faults.flip_bit(honest, faults.body_offset(len(honest), os.urandom(16)))
            try:
                ev.load(flipped)
            except errors.HSwarmError as exc:
                failure = exc
                continue
            return flipped
        raise errors.EvaluationError(
            f"cannot inject bitflip into step {sid}: no flipped copy deserialized in "
            f"{BITFLIP_TRIES} tries ({failure})"
        )
    raise errors.EvaluationError(f"cannot inject fault: unknown lie {lie.kind!r}")


def _error_reply(exc: BaseException, action: str) -> tuple[str, str, str]:
    if isinstance(exc, errors.HSwarmError):
        return ("error", type(exc).__name__, str(exc))
    return ("error", errors.EvaluationError.__name__, f"cannot {action}: {type(exc).__name__}: {exc}")


def _send(conn: Any, message: Any) -> bool:
    try:
        conn.send(message)
    except (OSError, ValueError):  # the supervisor is gone
        return False
    return True


def _rebuild(name: str, message: str) -> errors.HSwarmError:
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.HSwarmError)):
        cls = errors.EvaluationError
    return cls(message)


# -- the supervisor's side ---------------------------------------------------------------

_ENVIRON_LOCK = threading.Lock()


def _start_with_threads(process: Any, threads: int | None) -> None:
    """Start ``process`` with OMP_NUM_THREADS set in the environment it inherits.

    OpenMP reads the variable once, when openfhe loads, and a spawned child may import
    openfhe before its target runs (spawn re-imports the parent's main module), so the
    child must have it from its first instruction: the variable is set in this process
    for the moment of the start, then restored. The supervisor never loads OpenMP itself.
    """
    if threads is None:
        process.start()
        return
    with _ENVIRON_LOCK:
        previous = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            process.start()
        finally:
            if previous is None:
                del os.environ["OMP_NUM_THREADS"]
            else:
                os.environ["OMP_NUM_THREADS"] = previous


class _NotDelivered(Exception):
    """The child was gone before it received the task: another executor may take it."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """How many executors one key set gets, and how many threads and cores each."""

    executors: int
    threads: int | None  # OMP_NUM_THREADS of each; None: the library's default (every core)
    slots: int  # cores each one occupies in the pool


def plan(
    size: int,
    executors: int | None,
    threads: int | None,
    *,
    memory_budget: int = 0,
    need: int = 0,
) -> Plan:
    """The executors that a key set taking ``need`` bytes to hold gets in a pool of
    ``size`` slots (cores) within ``memory_budget`` bytes (0: unknown, no limit).

    ``executors=None`` (auto): one executor per core when memory allows, single-threaded
    (independent tasks on separate processes scale almost linearly, OpenFHE's own threads
    do not); else as many as fit, sharing the cores equally. A fixed ``executors`` is
    capped by memory too; each gets ``threads`` (None: the library's default)."""
    fit = executors or size
    if need > 0 and memory_budget > 0:
        fit = max(1, min(fit, memory_budget // need))
    share = max(1, size // (executors or fit))
    if executors is None:
        return Plan(fit, share, share)
    return Plan(fit, threads, share)


class Executor:
    """One child process with one public context loaded."""

    def __init__(
        self,
        mp: Any,
        context: str,
        context_path: Path,
        *,
        threads: int | None,
        should_stop: StopCheck = _never,
        cores: tuple[int, ...] = (),
        slots: tuple[int, ...] = (),
        need: int = 0,
    ) -> None:
        self.context = context
        self.need = need  # bytes its key set takes to hold (0: unknown)
        self.last_used = time.monotonic()
        self.tasks = 0
        self.slots = slots  # the pool's cores it occupies
        started = time.perf_counter()
        parent_conn, child_conn = mp.Pipe(duplex=True)
        self.process = mp.Process(
            target=_child_main,
            args=(child_conn, str(context_path), context, cores),
            name=f"hswarm-executor-{context[7:19]}",
            daemon=True,
        )
        _start_with_threads(self.process, threads)
        child_conn.close()
        self.conn = parent_conn
        self.pid: int = self.process.pid
        try:
            reply = self._wait(f"load context {context}", should_stop)
        except BaseException:
            self.kill()
            raise
        if reply[0] != "ready":
            self.stop()
            raise _rebuild(reply[1], reply[2])
        log.info(
            "executor %d ready: context %s… loaded in %.2f s (%s thread(s)%s)",
            self.pid,
            context[:19],
            time.perf_counter() - started,
            threads or "default",
            f", cores {list(cores)}" if cores else "",
        )

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def run(self, request: TaskRequest, should_stop: StopCheck = _never) -> TaskOutput:
        """Run one task; raises the task's hswarm error, EvaluationError if the child dies,
        TaskAbandoned if ``should_stop`` gives a reason (the child is then killed)."""
        self.last_used = time.monotonic()
        self.tasks += 1
        try:
            self.conn.send(request)
        except (OSError, ValueError) as exc:
            self.kill()
            raise _NotDelivered(str(exc)) from exc
        reply = self._wait(f"execute task {request.task_id}", should_stop)
        self.last_used = time.monotonic()
        if reply[0] == "ok":
            return TaskOutput(reply[1], reply[2], self.pid, reply[3])
        raise _rebuild(reply[1], reply[2])

    def _wait(self, what: str, should_stop: StopCheck) -> tuple[Any, ...]:
        sentinel = self.process.sentinel
        while True:
            ready = mp_connection.wait([self.conn, sentinel], timeout=POLL_S)
            if self.conn in ready:
                try:
                    return self.conn.recv()
                except (EOFError, OSError):
                    pass  # the pipe closed: the child died; report it below
                ready = [sentinel]
            if sentinel in ready:
                self.process.join(STOP_TIMEOUT_S)
                raise errors.EvaluationError(
                    f"cannot {what}: the executor process {self.pid} died ({self._death()}); "
                    "it will be replaced. A crash on these inputs can mean damaged ciphertexts, "
                    "or too little memory for this context"
                )
            reason = should_stop()
            if reason:
                self.kill()
                raise TaskAbandoned(f"cannot finish {what}: {reason}; executor {self.pid} was stopped")

    def _death(self) -> str:
        code = self.process.exitcode
        if code is None:
            return "unknown cause"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
            return f"killed by signal {-code}"
        return f"exit status {code}"

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the child to leave after its current task; kill it if it does not."""
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.kill()
        self.conn.close()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.join(STOP_TIMEOUT_S)
        self.conn.close()

    def kill_now(self) -> None:
        """SIGKILL without waiting (for a signal handler about to exit the process)."""
        with contextlib.suppress(OSError, AttributeError):
            os.kill(self.pid, signal.SIGKILL)


class ExecutorPool:
    """Executors on ``size`` slots, each holding one context, shared by the task threads.

    Each key set gets the executors of :func:`plan`: with ``executors=None`` (auto), one single-threaded
    executor per core when ``memory_budget`` holds that many copies of its keys, else
    fewer with more threads each. The executors of all key sets together stay within
    ``memory_budget``: idle ones of other key sets are stopped to make room. With ``cpus``
    (the cores this worker may use, one per slot) every executor is pinned to the cores of
    the slots it occupies."""

    def __init__(
        self,
        size: int,
        *,
        threads_per_executor: int | None = None,
        executors: int | None = -1,
        memory_budget: int = 0,
        cpus: tuple[int, ...] = (),
    ) -> None:
        self.size = size  # slots: cores, or executors when neither auto nor pinned
        self.threads = threads_per_executor
        self.executors = size if executors == -1 else executors  # None: auto
        self.memory_budget = memory_budget
        self.cpus = cpus
        self._mp = multiprocessing.get_context("spawn")
        self._cond = threading.Condition()
        self._idle: list[Executor] = []
        self._busy: set[Executor] = set()
        self._starting: dict[str, int] = {}  # context -> executors being started
        self._free = set(range(size))  # slots (cores) no executor occupies
        self._reserved = 0  # memory of the executors being started
        self._closed = False

    def plan(self, need: int = 0) -> Plan:
        return plan(self.size, self.executors, self.threads, memory_budget=self.memory_budget, need=need)

    def run(
        self,
        context: str,
        context_file: Path | Callable[[], Path],
        request: TaskRequest,
        *,
        should_stop: StopCheck = _never,
        need: int = 0,
    ) -> TaskOutput:
        """Run ``request`` on an executor holding ``context`` (``need``: the bytes it takes
        to hold, 0 if unknown). A new executor loads the context from ``context_file`` (a
        path, or a function giving one: called only when no live executor holds the
        context, so a loaded context is never fetched again)."""
        for _ in range(2):
            executor = self._acquire(context, context_file, should_stop, self.plan(need), need)
            try:
                return executor.run(request, should_stop)
            except _NotDelivered:
                continue  # it died while idle: the task never started, try a fresh one
            finally:
                self._release(executor)
        raise errors.EvaluationError(
            f"cannot execute task {request.task_id}: two executors in a row died before it started"
        )

    def _live(self, context: str) -> int:
        held = sum(1 for e in (*self._idle, *self._busy) if e.context == context)
        return held + self._starting.get(context, 0)

    def _fits(self, need: int, evictable: list[Executor]) -> bool:
        """Whether one more executor needing ``need`` bytes fits the memory budget once
        ``evictable`` are stopped. Unknown needs or budget always fit, and so does the
        first executor (the queen sends no key set bigger than the budget)."""
        if not need or not self.memory_budget:
            return True
        held = [e for e in (*self._idle, *self._busy) if e not in evictable]
        used = sum(e.need for e in held) + self._reserved
        return used == 0 or used + need <= self.memory_budget

    def _acquire(
        self,
        context: str,
        context_file: Path | Callable[[], Path],
        should_stop: StopCheck,
        wanted: Plan,
        need: int = 0,
    ) -> Executor:
        victims: list[Executor] = []
        with self._cond:
            while True:
                if self._closed:
                    raise TaskAbandoned("cannot run the task: the worker is stopping")
                for dead in [e for e in self._idle if not e.alive]:
                    self._idle.remove(dead)
                    self._free.update(dead.slots)
                matching = [e for e in self._idle if e.context == context]
                if matching:
                    executor = max(matching, key=lambda e: e.last_used)
                    self._idle.remove(executor)
                    self._busy.add(executor)
                    return executor
                if self._live(context) < wanted.executors:
                    # room for one more of this key set (cores and memory): free, else made
                    # by stopping idle executors of other key sets, least recently used first
                    others = sorted(
                        (e for e in self._idle if e.context != context), key=lambda e: e.last_used
                    )
                    free = len(self._free) + sum(len(e.slots) for e in others)
                    if free >= wanted.slots and self._fits(need, others):
                        while len(self._free) < wanted.slots or not self._fits(need, []):
                            victim = others.pop(0)
                            self._idle.remove(victim)
                            self._free.update(victim.slots)
                            victims.append(victim)
                        slots = tuple(sorted(self._free)[: wanted.slots])
                        self._free.difference_update(slots)
                        self._reserved += need
                        break
                reason = should_stop()
                if reason:
                    raise TaskAbandoned(f"cannot run the task: {reason}")
                self._cond.wait(POLL_S)
            self._starting[context] = self._starting.get(context, 0) + 1
        cores = tuple(self.cpus[s % len(self.cpus)] for s in slots) if self.cpus else ()
        try:
            path = context_file if isinstance(context_file, Path) else context_file()
        except BaseException:
            with self._cond:  # nothing replaces the victims after all
                self._starting[context] -= 1
                self._reserved -= need
                self._free.update(slots)
                for victim in victims:
                    self._free.difference_update(victim.slots)
                    self._idle.append(victim)
                self._cond.notify_all()
            raise
        try:
            for victim in victims:
                log.info("executor %d: stopped to make room for context %s…", victim.pid, context[:19])
                victim.stop()
            executor = Executor(
                self._mp,
                context,
                path,
                threads=wanted.threads,
                should_stop=should_stop,
                cores=cores,
                slots=slots,
                need=need,
            )
        except BaseException:
            with self._cond:
                self._starting[context] -= 1
                self._reserved -= need
                self._free.update(slots)
                self._cond.notify_all()
            raise
        with self._cond:
            self._starting[context] -= 1
            self._reserved -= need
            self._busy.add(executor)
        return executor

    def _release(self, executor: Executor) -> None:
        with self._cond:
            self._busy.discard(executor)
            keep = executor.alive and not self._closed
            if keep:
                self._idle.append(executor)
            else:
                self._free.update(executor.slots)
            self._cond.notify_all()
        if not keep:
            executor.kill()  # dead already, or the pool closed meanwhile

    def contexts(self) -> list[str]:
        """Contexts loaded in live executors."""
        with self._cond:
            return sorted({e.context for e in (*self._idle, *self._busy) if e.alive})

    def pids(self) -> list[int]:
        with self._cond:
            return [e.pid for e in (*self._idle, *self._busy)]

    def busy(self) -> int:
        with self._cond:
            return len(self._busy)

    def close(self) -> None:
        """Stop every executor: idle ones are asked to leave, busy ones are killed."""
        with self._cond:
            self._closed = True
            idle, busy = self._idle, list(self._busy)
            self._idle = []
            self._cond.notify_all()
        for executor in idle:
            executor.stop()
        for executor in busy:
            executor.kill()

    def kill_now(self) -> None:
        """SIGKILL every child at once (called from a signal handler: takes no lock)."""
        for executor in [*self._idle, *self._busy]:
            executor.kill_now()
