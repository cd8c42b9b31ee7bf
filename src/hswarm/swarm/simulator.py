"""A discrete-event simulation of a swarm that runs the queen's decision code.

:func:`simulate` plays jobs over 100 to 10,000 simulated workers in virtual time (an
event heap) with one ``random.Random(seed)``, so a run is a pure function of its
:class:`SimConfig`. Every decision goes through the functions the queen calls:
``quorum.judge`` accepts results and names liars, ``reputation`` grants and revokes
trust and samples audits, ``routing.choose`` hands out tasks, ``assurance`` bounds each
job. The figures it returns are simulated, never measured.

The model:

- Workers pull. A worker with a free executor asks when it finishes a task; when tasks
  become ready, as many idle workers as there are new replicas to lease are woken and
  ask in random order (no thundering herd). The queen offers the :data:`PER_CONTEXT`
  oldest tasks of each context that the asker may run (its owner holds no replica of
  them yet), tells routing how many replicas wait in all, and gives it a random sample
  of :data:`PEERS` other live workers, idle or busy, as ``others`` (leaving out those
  that hold a replica of an offered task, which cannot take it; a crash is known at
  once). When nothing is left to happen but tasks every asker withheld, they are handed
  out without withholding. Every worker is its own owner; all share one determinism
  class.
- A task takes ``task_s / speed`` seconds (±10 %), plus ``key_transfer_s`` when the
  worker's LRU cache of ``cache_contexts`` contexts lacks the task's context keys. Tasks
  of a job are independent; each has a trail key (context × op class).
- Fault modes of the Byzantine workers (assigned round-robin): ``garbage`` always lies;
  ``wrong-value`` lies with probability ``lie_rate``; ``bitflip`` (silent corruption)
  with ``bitflip_rate``; ``replay`` returns its previous result; ``collude`` returns a
  wrong digest shared by its group of ``collude_group`` for the same task; ``sleeper``
  is honest for ``sleeper_after`` tasks, then always lies; ``slow`` is honest and
  :data:`SLOW_FACTOR` times slower; ``crash`` dies after a few tasks, and its leases
  come back after :data:`LEASE_TTL_S`. A lie's digest is otherwise unique.
- The first lessee's standing decides whether a task is replicated. An unreplicated
  result is audited by a guardian (honest, keys warm, audits only; one per ten workers
  unless ``guardians`` says otherwise) with the trust policy's ``audit_rate``, and its
  job closes only after its audits, as in the queen. A proven liar is
  quarantined, its leases are cancelled, its trails zeroed, and its unconfirmed results
  in open jobs re-executed; a wrong result in a closed job was delivered and counts in
  ``wrong_results_accepted``.

It does not model the network, heartbeats, task dependencies, several determinism
classes, or adversaries that time their asks to land on the same task.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import random
import statistics
from collections.abc import Sequence
from typing import Any

from hswarm import errors
from hswarm.swarm import assurance, quorum, reputation, routing

FAULT_MODES = ("garbage", "wrong-value", "replay", "bitflip", "collude", "sleeper", "slow", "crash")
LYING_MODES = frozenset(FAULT_MODES) - {"slow", "crash"}
PER_CONTEXT = 8  # the queen offers an asker the oldest tasks of each context it may run
PEERS = 32  # other workers routing may compare an asker with
SLOW_FACTOR = 10.0
LEASE_TTL_S = 30.0  # the queen's default
CRASH_AFTER = (1, 20)  # a crashing worker dies after this many tasks (uniform)
DCLASS = "sim"


@dataclasses.dataclass(frozen=True)
class SimConfig:
    workers: int = 100
    byzantine: float = 0.0  # fraction of the workers that are Byzantine
    fault_modes: tuple[str, ...] = FAULT_MODES
    speeds: tuple[float, float] = (1.0, 4.0)  # uniform range of relative speeds
    executors: int = 2
    warm_fraction: float = 0.5  # workers that start with one context's keys cached
    cache_contexts: int = 1
    key_transfer_s: float = 5.0
    task_s: float = 2.0  # one task at speed 1
    jobs: int = 10
    tasks_per_job: int = 100
    job_interval_s: float = 0.0  # 0: every job is submitted at once
    contexts: int = 4  # job j uses context j mod contexts
    op_classes: int = 2
    strategy: str = "pheromone"
    quorum: quorum.QuorumPolicy = dataclasses.field(default_factory=quorum.QuorumPolicy)
    trust: reputation.TrustPolicy = dataclasses.field(default_factory=reputation.TrustPolicy)
    pheromone: routing.PheromoneParams = dataclasses.field(default_factory=routing.PheromoneParams)
    guardians: int | None = None  # None: one per ten workers, so audits keep pace
    lie_rate: float = 0.5
    bitflip_rate: float = 0.02
    sleeper_after: int = 20
    collude_group: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.workers >= 1, "workers must be >= 1"),
            (0.0 <= self.byzantine < 1.0, "byzantine must be a fraction in [0, 1)"),
            (
                bool(self.fault_modes) and set(self.fault_modes) <= set(FAULT_MODES),
                f"fault_modes must be among {', '.join(FAULT_MODES)}",
            ),
            (0 < self.speeds[0] <= self.speeds[1], "speeds must be a range 0 < low <= high"),
            (self.executors >= 1 and self.cache_contexts >= 1, "executors and cache_contexts must be >= 1"),
            (0.0 <= self.warm_fraction <= 1.0, "warm_fraction must be in [0, 1]"),
            (self.key_transfer_s >= 0 and self.job_interval_s >= 0, "times must be >= 0"),
            (self.task_s > 0, "task_s must be > 0"),
            (min(self.jobs, self.tasks_per_job, self.contexts, self.op_classes) >= 1, "counts must be >= 1"),
            (self.strategy in routing.STRATEGIES, f"strategy must be one of {', '.join(routing.STRATEGIES)}"),
            (self.guardians is None or self.guardians >= 0, "guardians must be >= 0"),
            (0.0 <= self.lie_rate <= 1.0 and 0.0 <= self.bitflip_rate <= 1.0, "rates must be in [0, 1]"),
            (self.sleeper_after >= 0 and self.collude_group >= 1, "sleeper_after >= 0, collude_group >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise errors.ParamsError(f"cannot build the simulation: {message}")


@dataclasses.dataclass(eq=False)
class _Worker:
    id: str
    speed: float
    mode: str  # "honest" or a fault mode
    guardian: bool
    cache: list[str]  # context names, least recently used first
    warm: frozenset[str] = frozenset()  # the same, as routing wants it
    view: routing.Asker | None = None  # how routing sees it; None when busy or warm changed
    group: int = 0  # collusion group
    crash_after: int = 0
    busy: int = 0
    done: int = 0
    standing: reputation.Standing = dataclasses.field(default_factory=reputation.Standing)
    leases: dict[str, int] = dataclasses.field(default_factory=dict)  # task id -> lease number
    unconfirmed: set[_Task] = dataclasses.field(default_factory=set)  # accepted on its vote alone
    last: str | None = None  # its previous honest digest (replay)
    first_lie: float = -1.0  # virtual time of its first lie, -1 if none
    caught_at: float = -1.0  # virtual time of its quarantine, -1 if none
    gone: bool = False  # crashed or quarantined


@dataclasses.dataclass(eq=False)
class _Job:
    index: int
    submitted: float = 0.0
    tasks: list[_Task] = dataclasses.field(default_factory=list)
    left: int = 0  # tasks not yet accepted or failed
    replicas: int = 0
    audits: int = 0
    quarantines: int = 0
    closed_at: float | None = None
    wrong: int = 0
    report: assurance.AssuranceReport | None = None


@dataclasses.dataclass(eq=False)
class _Task:
    job: _Job
    offer: routing.Offer
    context: str
    rank: int  # submission order: ties in queued_at keep it
    votes: list[quorum.Vote] = dataclasses.field(default_factory=list)
    leases: dict[str, int] = dataclasses.field(default_factory=dict)  # worker id -> lease number
    owners: set[str] = dataclasses.field(default_factory=set)  # owners that voted or hold a lease
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    named: set[str] = dataclasses.field(default_factory=set)  # liars proven on this task
    credited: set[str] = dataclasses.field(default_factory=set)
    single: bool | None = None  # None until the first lease decides
    slots: int = 0  # replicas to lease now
    queued: bool = False
    state: str = "open"  # open, done or failed
    digest: str | None = None
    audit_queued: bool = False
    audited: bool = False

    @property
    def id(self) -> str:
        return self.offer.task_id


class _Swarm:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.trails = routing.Trails(cfg.pheromone)
        self.now = 0.0
        self.events: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self.seq = itertools.count()
        self.ready = {f"ctx{c}": collections.deque[_Task]() for c in range(cfg.contexts)}
        self.open_slots = 0
        self.fresh = 0  # replicas to lease that appeared since idle workers were last woken
        self.audits: collections.deque[_Task] = collections.deque()
        self.tasks: dict[str, _Task] = {}
        self.jobs = [_Job(j) for j in range(cfg.jobs)]
        self.lies = self.lies_detected = self.cold_transfers = self.undecidable = 0
        self.guardians = max(1, cfg.workers // 10) if cfg.guardians is None else cfg.guardians
        self.workers = self._enroll()
        self.by_id = {w.id: w for w in self.workers}
        self.live = [w for w in self.workers if not w.guardian]
        self.idle = {w.id: w for w in self.live}
        self.idle_guardians = {w.id: w for w in self.workers if w.guardian}
        for job in self.jobs:
            self._push(job.index * cfg.job_interval_s, "job", job)

    def _enroll(self) -> list[_Worker]:
        cfg, rng = self.cfg, self.rng
        byzantine = rng.sample(range(cfg.workers), round(cfg.workers * cfg.byzantine))
        modes = {i: cfg.fault_modes[n % len(cfg.fault_modes)] for n, i in enumerate(byzantine)}
        colluders = itertools.count()
        workers = []
        for i in range(cfg.workers + self.guardians):
            guardian = i >= cfg.workers
            mode = modes.get(i, "honest")
            speed = rng.uniform(*cfg.speeds) / (SLOW_FACTOR if mode == "slow" else 1.0)
            cache = [f"ctx{rng.randrange(cfg.contexts)}"] if rng.random() < cfg.warm_fraction else []
            name = f"g{i - cfg.workers}" if guardian else f"w{i}"
            worker = _Worker(name, speed, mode, guardian, cache, frozenset(cache))
            if mode == "collude":
                worker.group = next(colluders) // cfg.collude_group
            if mode == "crash":
                worker.crash_after = rng.randint(*CRASH_AFTER)
            workers.append(worker)
        return workers

    # -- the event loop ---------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        handlers = {"job": self._on_job, "done": self._on_done, "expire": self._on_expire}
        while True:
            while self.events:
                self.now, _, kind, payload = heapq.heappop(self.events)
                handlers[kind](*payload)
                self._dispatch(patient=True)
            if self.open_slots <= 0:
                return self._summary()
            self._dispatch(patient=False)
            if not self.events:  # no live worker may take what is left
                return self._summary()

    def _push(self, at: float, kind: str, *payload: Any) -> None:
        heapq.heappush(self.events, (at, next(self.seq), kind, payload))

    def _on_job(self, job: _Job) -> None:
        cfg = self.cfg
        context = f"ctx{job.index % cfg.contexts}"
        job.submitted = self.now
        for i in range(cfg.tasks_per_job):
            key = routing.trail_key(context, f"op{self.rng.randrange(cfg.op_classes)}")
            task = _Task(job, routing.Offer(f"j{job.index}t{i}", key, self.now), context, len(self.tasks))
            job.tasks.append(task)
            self.tasks[task.id] = task
            self.ready[context].append(task)
            task.queued = True
            self._set_slots(task, 1)
        job.left = len(job.tasks)

    def _on_done(self, w: _Worker, t: _Task, lease: int, seconds: float) -> None:
        if w.gone or t.leases.get(w.id) != lease:
            return  # a crashed worker's result never arrives; a quarantined one's is void
        del t.leases[w.id], w.leases[t.id]
        w.busy -= 1
        w.view = None
        w.done += 1
        t.votes.append(quorum.Vote(w.id, w.id, DCLASS, self._result(w, t), w.guardian))
        t.seconds[w.id] = seconds
        self._judge(t)
        if w.gone:
            return
        if w.guardian:
            self.idle_guardians[w.id] = w
        else:
            self.idle[w.id] = w
            self._ask(w, patient=True)

    def _on_expire(self, w: _Worker, t: _Task, lease: int) -> None:
        if t.leases.get(w.id) == lease:
            del t.leases[w.id]
            self._judge(t)

    def _dispatch(self, patient: bool) -> None:
        """Guardians take waiting audits; then the idle workers ask, in random order."""
        while self.audits and self.idle_guardians:
            t = self.audits.popleft()
            if t.audit_queued:
                t.audit_queued = False
                t.job.audits += 1
                self._start(next(iter(self.idle_guardians.values())), t)
        while self.idle and self.open_slots > 0 and (self.fresh or not patient):
            order = list(self.idle.values())
            woken = min(len(order), self.fresh if patient else len(order))
            self.fresh = 0
            for i in range(woken):
                j = self.rng.randrange(i, len(order))  # a shuffle only as far as it is needed
                order[i], order[j] = order[j], order[i]
                if order[i].id in self.idle:
                    self._ask(order[i], patient)
            if not patient:
                return

    # -- the queen's decisions ----------------------------------------------------------

    def _ask(self, w: _Worker, patient: bool) -> None:
        found: list[_Task] = []
        for queue in self.ready.values():
            while queue and queue[0].slots <= 0:
                queue.popleft().queued = False
            mine = 0
            for scanned, t in enumerate(queue):
                if mine == PER_CONTEXT or scanned == 8 * PER_CONTEXT:
                    break
                if t.slots > 0 and w.id not in t.owners:
                    found.append(t)
                    mine += 1
        if not found:
            return
        window = {t.id: t for t in sorted(found, key=lambda t: t.rank)}
        others = []
        if patient and self.cfg.strategy in ("least-loaded", "pheromone"):
            peers = self.rng.choices(self.live, k=PEERS)  # with replacement: cheaper, as good
            held = set().union(*(t.owners for t in window.values()))
            others = [self._asker(p) for p in peers if p is not w and p.id not in held]
        self.trails.evaporate(self.now)
        picked = routing.choose(
            self.cfg.strategy,
            self._asker(w),
            [t.offer for t in window.values()],
            self.cfg.executors - w.busy,
            rng=self.rng,
            trails=self.trails,
            others=others,
            params=self.cfg.pheromone,
            waiting=self.open_slots,
        )
        for offer in picked:
            self._lease(w, window[offer.task_id])

    def _asker(self, w: _Worker) -> routing.Asker:
        if w.view is None:
            w.view = routing.Asker(w.id, w.warm, w.busy / self.cfg.executors)
        return w.view

    def _lease(self, w: _Worker, t: _Task) -> None:
        self._set_slots(t, t.slots - 1)
        t.job.replicas += 1
        if t.single is None:  # the first lessee's standing decides replication
            t.single = not reputation.should_replicate(w.standing, self.cfg.trust, self.rng.random())
            self._set_slots(t, quorum.judge((), self.cfg.quorum, in_flight=1, single=t.single).wanted)
        self._start(w, t)
        if w.mode == "crash" and w.done >= w.crash_after:
            w.gone = True
            self.idle.pop(w.id, None)
            self.live.remove(w)
            for task_id, lease in w.leases.items():
                self._push(self.now + LEASE_TTL_S, "expire", w, self.tasks[task_id], lease)

    def _start(self, w: _Worker, t: _Task) -> None:
        lease = next(self.seq)
        t.leases[w.id] = lease
        t.owners.add(w.id)
        w.leases[t.id] = lease
        w.busy += 1
        w.view = None
        if w.busy >= self.cfg.executors:
            (self.idle_guardians if w.guardian else self.idle).pop(w.id, None)
        seconds = self._transfer(w, t.context) + self.cfg.task_s / w.speed * self.rng.uniform(0.9, 1.1)
        self._push(self.now + seconds, "done", w, t, lease, seconds)

    def _transfer(self, w: _Worker, context: str) -> float:
        if w.guardian:  # the data owner's machines hold every key
            return 0.0
        if context in w.cache:
            w.cache.remove(context)
            w.cache.append(context)
            return 0.0
        w.cache.append(context)
        del w.cache[: -self.cfg.cache_contexts]
        w.warm, w.view = frozenset(w.cache), None
        self.cold_transfers += 1
        return self.cfg.key_transfer_s

    def _result(self, w: _Worker, t: _Task) -> str:
        honest = "ok:" + t.id
        if w.mode == "wrong-value":
            lie = self.rng.random() < self.cfg.lie_rate
        elif w.mode == "bitflip":
            lie = self.rng.random() < self.cfg.bitflip_rate
        elif w.mode == "sleeper":
            lie = w.done > self.cfg.sleeper_after
        elif w.mode == "replay":
            lie = w.last is not None
        else:
            lie = w.mode in ("garbage", "collude")
        if not lie:
            w.last = honest
            return honest
        self.lies += 1
        w.first_lie = self.now if w.first_lie < 0 else w.first_lie
        if w.mode == "replay":
            return str(w.last)
        if w.mode == "collude":
            return f"collude:{w.group}:{t.id}"
        return f"bad:{w.id}:{next(self.seq)}"

    def _set_slots(self, t: _Task, n: int) -> None:
        self.fresh += max(0, n - t.slots)
        self.open_slots += n - t.slots
        t.slots = n
        if n > 0 and not t.queued:
            t.queued = True
            self.ready[t.context].appendleft(t)  # started work goes first

    def _judge(self, t: _Task) -> None:
        if t.state != "open":
            verdict = quorum.judge(t.votes, self.cfg.quorum, single=bool(t.single))
            if verdict.state == "accepted":
                self._settle(t, verdict)  # a late replica may still prove a lie
            return
        if not t.votes and not t.leases:  # nothing left of it: start afresh
            t.single = None
            self._set_slots(t, 1)
            return
        verdict = quorum.judge(t.votes, self.cfg.quorum, in_flight=len(t.leases), single=bool(t.single))
        if verdict.state == "pending":
            self._set_slots(t, verdict.wanted)
            return
        self._set_slots(t, 0)
        if verdict.state == "undecidable":
            self.undecidable += 1
            t.state = "failed"
            self._close(t)
            return
        vouched = any(v.guardian for v in t.votes)
        if t.single and not vouched:
            if t.audited:
                return  # its guardian has not answered yet
            if self.guardians and reputation.should_audit(self.cfg.trust, self.rng.random()):
                t.audited = t.audit_queued = True
                self.audits.append(t)
                return
        t.state, t.digest = "done", verdict.digest
        self._settle(t, verdict)
        self._close(t)

    def _settle(self, t: _Task, verdict: quorum.Verdict) -> None:
        confirmed = not t.single or any(v.guardian for v in t.votes)
        for v in list(t.votes):
            w = self.by_id[v.worker]
            if v.worker in verdict.liars and v.worker not in t.named:
                t.named.add(v.worker)
                self.lies_detected += 1
                if not w.standing.quarantined:
                    self._quarantine(w, t.job)
            elif v.digest == verdict.digest and not v.guardian and v.worker not in t.credited:
                if confirmed:
                    t.credited.add(v.worker)
                    w.standing = reputation.credit(w.standing)
                    w.unconfirmed.discard(t)
                    self.trails.deposit(w.id, t.offer.trail_key, t.seconds[w.id], self.now)
                else:
                    w.unconfirmed.add(t)

    def _quarantine(self, w: _Worker, job: _Job) -> None:
        w.standing = reputation.penalize(w.standing)
        w.gone = True
        w.caught_at = self.now
        job.quarantines += 1
        self.idle.pop(w.id, None)
        self.live.remove(w)
        self.trails.zero(w.id)
        touched = [self.tasks[task_id] for task_id in w.leases]
        for t in touched:
            del t.leases[w.id]
        w.leases.clear()
        for t in sorted(w.unconfirmed, key=lambda t: t.rank):  # re-run what rests on its word alone
            if t.job.closed_at is None:
                t.votes = [v for v in t.votes if v.worker != w.id]
                if t.state == "done":
                    t.state, t.digest = "open", None
                    t.job.left += 1
                t.single = False
                t.audit_queued = False
                touched.append(t)
        w.unconfirmed.clear()
        for t in touched:
            self._judge(t)

    def _close(self, t: _Task) -> None:
        job = t.job
        job.left -= 1
        if job.left:
            return
        job.closed_at = self.now
        job.wrong = sum(1 for x in job.tasks if x.state == "done" and x.digest != "ok:" + x.id)
        single = [x for x in job.tasks if x.state == "done" and x.single]
        unaudited = sum(1 for x in single if not any(v.guardian for v in x.votes))
        job.report = assurance.AssuranceReport(
            replicas=job.replicas,
            audits=job.audits,
            disagreements=sum(1 for x in job.tasks if len({v.digest for v in x.votes}) > 1),
            quarantines=job.quarantines,
            unreplicated=len(single),
            unaudited_unreplicated=unaudited,
            wrong_bound=assurance.wrong_result_bound(
                self.cfg.quorum.faults, unaudited, self.cfg.trust.audit_rate
            ),
        )

    def _summary(self) -> dict[str, Any]:
        cfg = self.cfg
        closed = [j for j in self.jobs if j.report is not None]
        reports = [j.report for j in closed if j.report is not None]
        accepted = sum(1 for t in self.tasks.values() if t.state == "done")
        liars = [w for w in self.workers if w.first_lie >= 0]
        delays = [w.caught_at - w.first_lie for w in liars if w.caught_at >= 0]
        makespan = max((j.closed_at or 0.0 for j in closed), default=0.0)
        latency = [(j.closed_at or 0.0) - j.submitted for j in closed]

        def per_task(jobs: Sequence[_Job], audits: bool) -> float | None:
            done = sum(1 for j in jobs for t in j.tasks if t.state == "done")
            runs = sum(j.replicas + (j.audits if audits else 0) for j in jobs)
            return round(runs / done, 3) if done else None

        return {
            "simulated": True,
            "strategy": cfg.strategy,
            "seed": cfg.seed,
            "workers": cfg.workers,
            "guardians": self.guardians,
            "byzantine_workers": sum(1 for w in self.workers if w.mode != "honest"),
            "faults": cfg.quorum.faults,
            "f_bound_holds": sum(1 for w in self.workers if w.mode in LYING_MODES) <= cfg.quorum.faults,
            "jobs": cfg.jobs,
            "jobs_closed": len(closed),
            "tasks": len(self.tasks),
            "tasks_accepted": accepted,
            "undecidable": self.undecidable,
            "wrong_results_accepted": sum(j.wrong for j in closed),
            "lies": self.lies,
            "lies_detected": self.lies_detected,
            "liars": len(liars),
            "quarantined": sum(1 for w in self.workers if w.standing.quarantined),
            "time_to_quarantine": {
                "median": round(statistics.median(delays), 3) if delays else None,
                "max": round(max(delays), 3) if delays else None,
            },
            "makespan": round(makespan, 3),
            "throughput": round(accepted / makespan, 3) if makespan else 0.0,
            "job_latency": {
                "mean": round(statistics.mean(latency), 3) if latency else None,
                "max": round(max(latency), 3) if latency else None,
            },
            "verification_overhead": per_task(self.jobs, audits=True),
            "steady_overhead": per_task(self.jobs[cfg.jobs // 2 :], audits=True),
            "replicas_per_task": per_task(self.jobs, audits=False),
            "audits": sum(j.audits for j in self.jobs),
            "unreplicated": sum(r.unreplicated for r in reports),
            "unaudited_unreplicated": sum(r.unaudited_unreplicated for r in reports),
            "wrong_bound_max": max((r.wrong_bound for r in reports), default=0.0),
            "cold_transfers": self.cold_transfers,
        }


def simulate(cfg: SimConfig) -> dict[str, Any]:
    """Run one simulation; the result is JSON-ready (see :func:`format_report`)."""
    return _Swarm(cfg).run()


def format_report(result: dict[str, Any]) -> str:
    r = result
    ttq = r["time_to_quarantine"]
    caught = f" (first lie to quarantine: median {ttq['median']} s, max {ttq['max']} s)" if ttq["max"] else ""
    bound = "holds" if r["f_bound_holds"] else "does NOT hold: more lying workers than f"
    return "\n".join(
        [
            f"SIMULATED swarm, virtual time (not a measurement): strategy {r['strategy']}, seed {r['seed']}",
            f"  fleet         {r['workers']} workers + {r['guardians']} guardians, "
            f"{r['byzantine_workers']} Byzantine; f = {r['faults']} ({bound})",
            f"  work          {r['jobs_closed']}/{r['jobs']} jobs, {r['tasks_accepted']}/{r['tasks']} tasks "
            f"accepted, {r['undecidable']} undecidable",
            f"  speed         makespan {r['makespan']:.1f} virtual s, {r['throughput']:.2f} tasks per "
            f"virtual s, mean job latency {r['job_latency']['mean']} s, {r['cold_transfers']} key transfers",
            f"  verification  {r['verification_overhead']} executions per accepted task "
            f"({r['steady_overhead']} over the later half of the jobs), {r['replicas_per_task']} replicas "
            f"per task, {r['audits']} audits, {r['unreplicated']} unreplicated",
            f"  liars         {r['liars']} lied, {r['quarantined']} quarantined, "
            f"{r['lies_detected']} of {r['lies']} lies caught{caught}",
            f"  wrong         {r['wrong_results_accepted']} wrong results accepted; worst per-job bound "
            f"on a wrong result slipping through: {r['wrong_bound_max']:.3g}",
        ]
    )


def format_comparison(results: Sequence[dict[str, Any]]) -> str:
    """One line per run (strategy), throughput also relative to the ``fifo`` run if any."""
    fifo = next((r["throughput"] for r in results if r["strategy"] == "fifo"), None)
    first = results[0]
    bound = "holds" if first["f_bound_holds"] else "does NOT hold: more lying workers than f"
    lines = [
        f"SIMULATED swarm, virtual time (not a measurement): {first['workers']} workers + "
        f"{first['guardians']} guardians, {first['byzantine_workers']} Byzantine, {first['jobs']} jobs x "
        f"{first['tasks'] // first['jobs']} tasks submitted at once, seed {first['seed']}",
        f"{'STRATEGY':13} {'MAKESPAN s':>10} {'TASKS/s':>8} {'VS FIFO':>7} {'JOB s':>11} {'OVERHEAD':>8} "
        f"{'TRANSFERS':>9} {'WRONG':>5} {'LIARS':>5} {'CAUGHT':>6}",
    ]
    for r in results:
        ratio = f"{r['throughput'] / fifo:.2f}x" if fifo else "-"
        latency = f"{r['job_latency']['mean']:.0f}/{r['job_latency']['max']:.0f}"
        lines.append(
            f"{r['strategy']:13} {r['makespan']:10.1f} {r['throughput']:8.1f} {ratio:>7} {latency:>11} "
            f"{r['verification_overhead']:8.2f} {r['cold_transfers']:9} {r['wrong_results_accepted']:5} "
            f"{r['liars']:5} {r['quarantined']:6}"
        )
    lines += [
        "JOB s: mean/max job latency; OVERHEAD: executions (replicas and audits) per accepted task;",
        f"TRANSFERS: cold key fetches; WRONG: wrong results delivered; f = {first['faults']} ({bound}).",
    ]
    return "\n".join(lines)
