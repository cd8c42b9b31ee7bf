"""The worker's supervisor: registers with the queen, leases tasks, feeds executors,
uploads results, and keeps its leases alive with heartbeats.

The main thread registers, then loops: lease (long-poll, advertising the cached context
digests), and start a thread per leased task. A task thread fetches the context and
input blobs into the cache (pinning them), runs the task on an executor child, moves the
outputs into the cache, uploads them and posts the ``TaskResult`` (or an error result).
A heartbeat thread renews every held lease each ``heartbeat_interval_s``; a lease the
queen lists as cancelled, or one whose deadline passes unrenewed, is abandoned (its
executor is killed, nothing is posted). One line per task goes to the log (stderr).

Signals: the first SIGTERM/SIGINT stops leasing, lets in-flight tasks finish (as long as
their leases hold), posts their results, stops the executors and exits 0; a second one
kills the executors and exits at once (the queen re-queues the leases when they expire).
A SIGKILL loses nothing the protocol cannot redo.

A faulty worker (``HSWARM_FAULT``, tests and chaos only) declares its fault mode when it
registers and then lies as its :class:`~hswarm.worker.faults.Saboteur` decides: the
executor child writes the wrong bytes, the supervisor replays earlier digests, sleeps
before posting or exits abruptly mid-task. Its lies follow the protocol (wrong blobs are
uploaded, results posted as usual), and each one is logged as a ``FAULT <mode> task …``
line for chaos reports.

The supervisor itself never loads OpenFHE and never parses a ciphertext: only executor
children do (``executor``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from hswarm import errors, wire
from hswarm.worker import cache, executor, faults, settings, transport

log = logging.getLogger("hswarm.worker")

POLL_S = 0.2
MAX_ERROR_CHARS = 2000
HEARTBEAT_JOIN_S = 5.0  # a heartbeat stuck retrying an absent queen must not hold up the exit
_FETCH_LOCKS = 64


@dataclasses.dataclass
class _Lease:
    spec: wire.TaskSpec
    deadline: float  # time.monotonic() after which the queen has taken the task back
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)


class Supervisor:
    """One worker: its queen connection, blob cache, executor pool and held leases."""

    def __init__(self, config: settings.WorkerSettings) -> None:
        self.settings = config
        self.cache = cache.BlobCache(config.cache_path, config.cache_bytes)
        self.queen = transport.QueenConnection(
            config.queen_url,
            timeout_s=config.http_timeout_s,
            retries=config.http_retries,
            connections=config.most_executors + 4,
        )
        self.pool = executor.ExecutorPool(
            config.pool_size,
            threads_per_executor=config.executor_threads,
            executors=config.executors,
            memory_budget=config.budget,
            cpus=config.cores if config.cpus is not None else (),
        )
        self.fault = config.injected_fault
        self.saboteur = faults.Saboteur(self.fault) if self.fault is not None else None
        self.enrollment: wire.Enrollment | None = None
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._quit = threading.Event()
        self._fetch_locks = [threading.Lock() for _ in range(_FETCH_LOCKS)]
        self._signals = 0

    # -- lifecycle ----------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; 0 after a clean stop, 2 when the queen refuses the worker."""
        heartbeats: threading.Thread | None = None
        if self.fault is not None:
            log.warning(
                "faulty worker %s: fault injection %r is on (tests and chaos only): %s",
                self.settings.name,
                str(self.fault),
                self.fault.description,
            )
        try:
            enrollment = self._register()
            if enrollment is None:
                return 0
            heartbeats = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
            heartbeats.start()
            status = self._lease_loop()
            self._drain()
            return status
        except errors.HSwarmError as exc:
            log.error("%s", exc)
            self._stopping.set()
            self._drain()
            return 2
        finally:
            self._quit.set()
            if heartbeats is not None:
                heartbeats.join(HEARTBEAT_JOIN_S)
            self.pool.close()
            self.queen.close()
            self.cache.close()
            log.info("worker %s stopped", self.settings.name)

    def stop(self) -> None:
        """Stop leasing; :meth:`run` returns once in-flight tasks are done."""
        self._stopping.set()

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info(
                "%s: finishing %d task(s), then exiting; send it again to exit at once",
                name,
                len(self._leases),
            )
            self.stop()
            return
        log.warning(
            "%s again: exiting now; the queen will re-queue held tasks when their leases expire", name
        )
        self.pool.kill_now()
        os._exit(128 + signum)

    def _register(self) -> wire.Enrollment | None:
        registration = wire.Registration(
            token=self.settings.token.get_secret_value(),
            name=self.settings.name,
            owner=self.settings.owner,
            role=self.settings.role,
            determinism_class=settings.determinism_class(),
            executors=self.settings.most_executors,
            memory_bytes=self.settings.budget,
            fault=self.settings.fault,
        )
        delay = 1.0
        while not self._stopping.is_set():
            try:
                self.enrollment = self.queen.register(registration)
            except transport.QueenUnreachableError as exc:
                log.warning("%s; retrying in %.0f s", exc, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            except transport.QueenError as exc:
                if self.fault is None:
                    raise
                raise transport.QueenError(
                    f"{exc}. This worker declared fault {str(self.fault)!r} (HSWARM_FAULT / --fault): "
                    "a queen refuses faulty workers unless its settings allow them (tests and chaos "
                    "only); allow them there, or start the worker without a fault",
                    status=exc.status,
                    code=exc.code,
                ) from exc
            log.info(
                "worker %s registered as %s with %s (%s executor(s), cache %s)",
                self.settings.name,
                self.enrollment.worker_id,
                self.settings.queen_url,
                "auto" if self.settings.auto else self.settings.executors,
                self.cache.directory,
            )
            return self.enrollment
        return None

    def _lease_loop(self) -> int:
        limit = max(self.settings.batch, self.settings.most_executors + self.settings.prefetch)
        delay = 1.0
        while not self._stopping.is_set():
            with self._lock:
                room = min(limit - len(self._leases), self.settings.batch)
            if room <= 0:
                self._stopping.wait(POLL_S)
                continue
            request = wire.LeaseRequest(
                max_tasks=room, wait_s=self.settings.long_poll_s, contexts=self._contexts()
            )
            try:
                grant = self.queen.lease(request)
            except transport.QueenUnreachableError as exc:
                log.warning("%s; retrying in %.0f s", exc, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            except transport.QueenError as exc:
                log.error("%s; stopping", exc)
                self._stopping.set()
                return 2
            delay = 1.0
            for spec in grant.tasks:
                self._start(spec)
        return 0

    def _contexts(self) -> list[str]:
        """Key sets this worker has at hand (cached or loaded): the queen's routing hint."""
        return sorted(set(self.cache.digests("context")) | set(self.pool.contexts()))

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._leases:
                    return
            time.sleep(POLL_S)  # short sleeps keep the main thread free for a second signal

    # -- heartbeats ---------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        assert self.enrollment is not None
        while not self._quit.wait(self.enrollment.heartbeat_interval_s):
            self.heartbeat()

    def heartbeat(self) -> None:
        """Renew held leases; abandon those the queen says this worker lost."""
        assert self.enrollment is not None
        with self._lock:
            held = list(self._leases)
        sent = time.monotonic()
        beat = wire.Heartbeat(
            leases=held,
            load=self.pool.busy() / self.settings.most_executors,
            contexts=self._contexts(),
        )
        try:
            reply = self.queen.heartbeat(beat)
        except errors.HSwarmError as exc:
            log.warning("heartbeat: %s", exc)
            return
        except Exception as exc:  # e.g. the connection closed under it at exit
            if not self._quit.is_set():
                log.warning("heartbeat: cannot send it: %r", exc)
            return
        with self._lock:
            for task_id in reply.renewed:
                lease = self._leases.get(task_id)
                if lease is not None:
                    lease.deadline = sent + self.enrollment.lease_ttl_s
            for task_id in reply.cancelled:
                lease = self._leases.get(task_id)
                if lease is not None and not lease.cancelled.is_set():
                    log.info("task %s: the queen cancelled its lease; abandoning it", task_id)
                    lease.cancelled.set()

    # -- tasks --------------------------------------------------------------------------

    def _start(self, spec: wire.TaskSpec) -> None:
        assert self.enrollment is not None
        lease = _Lease(spec, time.monotonic() + self.enrollment.lease_ttl_s)
        with self._lock:
            previous = self._leases.get(spec.task_id)
            if previous is not None:  # an older attempt of ours expired and came back to us
                previous.cancelled.set()
            self._leases[spec.task_id] = lease
        thread = threading.Thread(target=self._work, args=(lease,), name=f"task-{spec.task_id}", daemon=True)
        thread.start()

    def _abandon_reason(self, lease: _Lease) -> str | None:
        if lease.cancelled.is_set():
            return "the queen cancelled its lease"
        if time.monotonic() > lease.deadline:
            return "its lease expired"
        return None

    def _work(self, lease: _Lease) -> None:
        spec = lease.spec
        started = time.perf_counter()
        pinned: list[str] = []
        compute = 0.0
        try:
            outcome, compute = self._execute(lease, pinned)
        except Exception as exc:  # a bug here must not leave a lease held forever
            log.exception("task %s: internal error", spec.task_id)
            outcome = "internal error"
            with contextlib.suppress(Exception):
                outcome = self._post_error(
                    lease, errors.HSwarmError(f"cannot run the task: internal worker error {exc!r}")
                )
        finally:
            for digest in pinned:
                self.cache.release(digest)
            with self._lock:
                if self._leases.get(spec.task_id) is lease:
                    del self._leases[spec.task_id]
        ops = collections.Counter(step.op for step in spec.steps)
        log.info(
            "task %s attempt %d (job %s): %d step(s) [%s] %s in %.2f s (compute %.2f s)",
            spec.task_id,
            spec.attempt,
            spec.job_id,
            len(spec.steps),
            ",".join(f"{op}:{n}" for op, n in sorted(ops.items())),
            outcome,
            time.perf_counter() - started,
            compute,
        )

    def _execute(self, lease: _Lease, pinned: list[str]) -> tuple[str, float]:
        """Fetch, compute, upload and post one task; returns (outcome, compute seconds)."""
        spec = lease.spec
        lie = self.saboteur.begin() if self.saboteur is not None else None
        try:
            inputs = {sid: (d, str(self._fetch(d, "blob", pinned))) for sid, d in spec.inputs.items()}
            request = executor.TaskRequest(
                task_id=spec.task_id,
                steps=[(s.id, s.op, list(s.args), dict(s.attrs)) for s in spec.steps],
                inputs=inputs,
                outputs=list(spec.outputs),
                out_dir=str(self.cache.temp_dir),
                lie=lie,
            )
            log.debug("task %s: executing", spec.task_id)
            output = self.pool.run(
                spec.context,
                lambda: self._fetch(spec.context, "context", pinned),
                request,
                should_stop=lambda: self._abandon_reason(lease),
                need=spec.context_memory,
            )
            if self.saboteur is not None and self.saboteur.crashes:
                self._crash(spec)
            made = self._keep_outputs(output, pinned)
            digests = self.saboteur.replay(spec.task_id, made) if self.saboteur is not None else made
            # A replayed digest was uploaded with its earlier task: only fresh bytes go up.
            for digest in sorted(set(digests.values()) & set(made.values())):
                self.queen.upload(digest, self.cache.path(digest))
            if self.saboteur is not None:
                self.saboteur.remember(spec.task_id, {s: d for s, d in digests.items() if made[s] == d})
                self._confess(spec, digests, output.honest or made)
            reason = self._abandon_reason(lease)
            if reason:
                return f"abandoned: {reason}", output.seconds
            result = wire.TaskResult(
                task_id=spec.task_id, attempt=spec.attempt, outputs=digests, seconds=round(output.seconds, 6)
            )
            return self._post(lease, result, "done"), output.seconds
        except executor.TaskAbandoned as exc:
            return f"abandoned: {exc}", 0.0
        except transport.QueenUnreachableError as exc:
            return f"lost: {exc}", 0.0
        except errors.HSwarmError as exc:
            if isinstance(exc, errors.DigestMismatchError):
                self._check_cached(spec)
            return self._post_error(lease, exc), 0.0

    def _fetch(self, digest: str, kind: str, pinned: list[str]) -> Path:
        """The cached file for ``digest``, downloaded first if needed; pinned."""
        lock = self._fetch_locks[hash(digest) % _FETCH_LOCKS]
        with lock:  # one download per digest even when several tasks need it
            path = self.cache.acquire(digest)
            if path is None:
                temp = self.cache.temp_file()
                try:
                    self.queen.download(digest, temp)
                except BaseException:
                    temp.unlink(missing_ok=True)
                    raise
                path = self.cache.add(digest, temp, kind, pin=True)
        pinned.append(digest)
        return path

    def _keep_outputs(self, output: executor.TaskOutput, pinned: list[str]) -> dict[int, str]:
        digests: dict[int, str] = {}
        pending = dict(output.outputs)
        try:
            while pending:
                sid, (digest, temp) = pending.popitem()
                self.cache.add(digest, Path(temp), "blob", pin=True)
                pinned.append(digest)
                digests[sid] = digest
        finally:
            for _, temp in pending.values():
                Path(temp).unlink(missing_ok=True)
        return dict(sorted(digests.items()))

    # -- fault injection ----------------------------------------------------------------

    def _confess(self, spec: wire.TaskSpec, posted: dict[int, str], honest: dict[int, str]) -> None:
        """One ``FAULT`` line per lying task: what it posts and what the truth was."""
        lies = {sid: d for sid, d in posted.items() if honest.get(sid) != d}
        if not lies:
            return
        log.warning(
            "FAULT %s task %s attempt %d: posting %s instead of %s",
            self.fault,
            spec.task_id,
            spec.attempt,
            ", ".join(f"step {sid} {d}" for sid, d in sorted(lies.items())),
            ", ".join(f"step {sid} {honest[sid]}" for sid in sorted(lies)),
        )

    def _crash(self, spec: wire.TaskSpec) -> None:
        log.warning(
            "FAULT %s task %s attempt %d: exiting abruptly with status %d after computing it, "
            "before posting; its lease will expire at the queen",
            self.fault,
            spec.task_id,
            spec.attempt,
            faults.CRASH_STATUS,
        )
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        self.pool.kill_now()
        os._exit(faults.CRASH_STATUS)

    def _check_cached(self, spec: wire.TaskSpec) -> None:
        """After a digest mismatch: drop cached files of this task whose bytes are damaged."""
        for digest in {spec.context, *spec.inputs.values()}:
            path = self.cache.acquire(digest)
            if path is None:
                continue
            try:
                sha = hashlib.sha256()
                with open(path, "rb") as data:
                    while block := data.read(1 << 20):
                        sha.update(block)
                damaged = "sha256:" + sha.hexdigest() != digest
            except OSError:
                damaged = True
            finally:
                self.cache.release(digest)
            if damaged:
                self.cache.discard(digest)

    def _post_error(self, lease: _Lease, exc: errors.HSwarmError) -> str:
        reason = self._abandon_reason(lease)
        if reason:
            return f"abandoned: {reason}"
        message = f"{type(exc).__name__}: {exc}"
        if len(message) > MAX_ERROR_CHARS:
            message = message[: MAX_ERROR_CHARS - 1] + "…"
        result = wire.TaskResult(task_id=lease.spec.task_id, attempt=lease.spec.attempt, error=message)
        return self._post(lease, result, f"error ({message})")

    def _post(self, lease: _Lease, result: wire.TaskResult, outcome: str) -> str:
        if self.saboteur is not None and self.saboteur.delay_s > 0:
            log.warning(
                "FAULT %s task %s attempt %d: sleeping %g s before posting its result",
                self.fault,
                result.task_id,
                result.attempt,
                self.saboteur.delay_s,
            )
            # The heartbeats go on meanwhile; a lost lease ends the sleep early.
            lease.cancelled.wait(self.saboteur.delay_s)
            reason = self._abandon_reason(lease)
            if reason:
                return f"abandoned: {reason}"
        try:
            receipt = self.queen.result(result)
        except transport.QueenError as exc:
            return f"{outcome}, result not accepted: {exc}"
        return f"{outcome}{' (duplicate)' if receipt.duplicate else ''}"


def run(config: settings.WorkerSettings) -> int:
    """Run a worker until SIGTERM/SIGINT; returns the process exit status."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        supervisor = Supervisor(config)
    except errors.HSwarmError as exc:
        log.error("%s", exc)
        return 2
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, supervisor.handle_signal)
    try:
        return supervisor.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
