"""The queen's HTTP API: the FastAPI app factory and ``serve``.

Handlers are thin: they parse (pydantic models of ``hswarm.wire``), call one service
(``jobs``, ``queue``, ``membership``, ``contexts``, ``blobs``, ``events``) in a worker
thread so the event loop never waits on the database, and return its answer. The
workers' hot calls (lease, heartbeat, results) and the long poll's progress check are
the exception on SQLite: they run on the event loop while no thread holds the write
lock, as a thread hop costs more than the call (``store.Store.can_run_inline``). Every
error becomes an ``ErrorBody`` by ``refusals.ERROR_CODES`` in the handlers below. The
lifespan opens the store (running the migrations), creates the enrollment token, sweeps
once (a restarted queen takes back expired leases at once) and runs the sweeper until
shutdown.

It holds no state of its own beyond the running :class:`Queen`'s handles, and never
imports ``openfhe``: the only native parsing (of contexts) happens in a forked child.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

import anyio
import fastapi
import sqlalchemy as sa
import uvicorn
from fastapi import exceptions as fastapi_exceptions
from fastapi import responses
from starlette import exceptions as starlette_exceptions
from starlette import websockets
from starlette.concurrency import run_in_threadpool

from hswarm import errors, wire
from hswarm.queen import blobs, contexts, events, jobs, membership, queue, refusals, settings, store
from hswarm.swarm import routing

log = logging.getLogger("hswarm.queen")
T = TypeVar("T")
WS_NOT_FOUND = 4404  # WebSocket close code for an unknown job (HTTP 404 in the 4000 range)


@dataclasses.dataclass
class Traffic:
    """Blob bytes in and out of this process (the bench's bytes moved per task). Updated
    on the event loop only, so no lock."""

    since: float = dataclasses.field(default_factory=time.time)
    received: int = 0
    sent: int = 0
    uploads: int = 0
    downloads: int = 0


@dataclasses.dataclass
class Queen:
    """The running queen's handles, shared by every request."""

    settings: settings.QueenSettings
    store: store.Store
    blobs: blobs.BlobStore
    bell: queue.Doorbell  # tasks may have become leasable: long-polling lessees look again
    progress: queue.Doorbell  # tasks finished: long-polling job followers look again
    credentials: membership.Credentials
    # Pheromone trails are soft state: kept in memory, relearned after a restart.
    trails: routing.Trails | None
    traffic: Traffic = dataclasses.field(default_factory=Traffic)


def open_queen(cfg: settings.QueenSettings) -> Queen:
    """Create the data directory and token, open and migrate the store, sweep once."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    membership.ensure_token(cfg.token_path)
    db = store.Store(cfg.db_url)
    db.migrate()
    queue.sweep(db, cfg)
    trails = routing.Trails(cfg.pheromone_params()) if cfg.routing == "pheromone" else None
    return Queen(
        cfg,
        db,
        blobs.BlobStore(cfg.blob_dir),
        queue.Doorbell(),
        queue.Doorbell(),
        membership.Credentials(),
        trails,
    )


def create_app(cfg: settings.QueenSettings) -> fastapi.FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
        queen = await run_in_threadpool(open_queen, cfg)
        app.state.queen = queen
        sweeper = asyncio.create_task(_sweep_forever(queen))
        log.info("queen ready on %s (data in %s)", cfg.db_url, cfg.data_dir)
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            queen.store.dispose()

    app = fastapi.FastAPI(
        title="hswarm queen",
        version=wire.API_VERSION,
        description="Homomorphic Swarm coordinator: blobs, contexts, jobs, workers (docs/protocol.md).",
        lifespan=lifespan,
    )
    app.add_exception_handler(errors.HSwarmError, _domain_error)
    app.add_exception_handler(sa.exc.OperationalError, _domain_error)
    app.add_exception_handler(fastapi_exceptions.RequestValidationError, _validation_error)
    app.add_exception_handler(starlette_exceptions.HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(router)
    return app


def serve(cfg: settings.QueenSettings) -> None:
    """Run the queen in this process until interrupted (one uvicorn worker)."""
    # The queen's own log lines next to uvicorn's (a no-op where logging is configured).
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    app = create_app(cfg)
    # The 100k objects of the imported modules live as long as the process: out of the
    # collector's way, a full collection scans only what the queen made since (a job of
    # 8000 tasks set off four, of 70-110 ms each, with them in).
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level="info",
        access_log=cfg.access_log,
        lifespan="on",
        timeout_graceful_shutdown=5,  # long polls and event streams would hold a stop up to 30 s
    )


async def _sweep_forever(queen: Queen) -> None:
    while True:  # open_queen has just swept: wait first
        await asyncio.sleep(queen.settings.sweep_interval_s)
        try:
            report = await run_in_threadpool(
                functools.partial(queue.sweep, trails=queen.trails), queen.store, queen.settings
            )
            if report["expired"] or report["requeued"]:
                queen.bell.ring()
                queen.progress.ring()  # a task out of attempts fails its job
            await run_in_threadpool(queen.store.checkpoint)  # SQLite's log, off the event loop
        except Exception:  # the sweeper must outlive a database hiccup
            log.exception("sweep failed; retrying")


# -- errors -------------------------------------------------------------------------------


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> responses.JSONResponse:
    body = wire.ErrorBody(code=code, message=message)
    return responses.JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def _domain_error(_request: fastapi.Request, exc: Exception) -> responses.JSONResponse:
    status, code = refusals.classify(exc)
    message = str(exc) if isinstance(exc, errors.HSwarmError) else "cannot reach the store: try again later"
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return _error(status, code, message, headers)


async def _validation_error(_request: fastapi.Request, exc: Exception) -> responses.JSONResponse:
    problems = exc.errors() if isinstance(exc, fastapi_exceptions.RequestValidationError) else []
    for p in problems:
        if p.get("type") == "json_invalid":
            reason = p.get("ctx", {}).get("error", "malformed")
            return _error(
                400, "bad_request", f"cannot read the request: the body is not valid JSON ({reason})"
            )
        if isinstance(p.get("input"), bytes) and tuple(p.get("loc", ())) == ("body",):
            return _error(
                400,
                "bad_request",
                "cannot read the request: send a JSON object with Content-Type: application/json",
            )
    detail = "; ".join(
        f"{'.'.join(str(part) for part in p.get('loc', ()))}: {p.get('msg', 'invalid')}" for p in problems[:5]
    )
    return _error(422, "invalid", f"cannot accept the request: {detail or 'it does not match the model'}")


async def _http_error(_request: fastapi.Request, exc: Exception) -> responses.JSONResponse:
    assert isinstance(exc, starlette_exceptions.HTTPException)
    code = {404: "not_found", 401: "unauthorized", 413: "too_large"}.get(exc.status_code, "bad_request")
    return _error(exc.status_code, code, f"cannot answer: {exc.detail}", dict(exc.headers or {}) or None)


async def _internal_error(_request: fastapi.Request, exc: Exception) -> responses.JSONResponse:
    log.error("internal error", exc_info=exc)
    return _error(500, "internal", "cannot answer: internal error in the queen (see its log)")


# -- handlers -----------------------------------------------------------------------------


async def _queen(request: fastapi.Request) -> Queen:
    # async: FastAPI runs a plain-def dependency in a worker thread, a hop per request
    return request.app.state.queen


def _bearer(request: fastapi.Request) -> str | None:
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else None


async def _worker(request: fastapi.Request, queen: Annotated[Queen, fastapi.Depends(_queen)]) -> str:
    bearer = _bearer(request)
    # a credential seen lately needs no query, so no trip to a worker thread either
    known = queen.credentials.remembered(bearer)
    return known or await run_in_threadpool(queen.credentials.authenticate, queen.store, bearer)


async def _run(db: store.Store, call: Callable[[], T]) -> T:
    """A short store call: on the event loop where the store allows it
    (:meth:`store.Store.can_run_inline`), else in a worker thread."""
    if db.can_run_inline():
        return call()
    return await run_in_threadpool(call)


def _answer(message: wire.Message) -> responses.Response:
    """A reply serialized once, by pydantic: returned as a model, FastAPI would validate
    it again against the response model, dump it to Python objects and encode those.
    The route's ``response_model`` still documents it."""
    return responses.Response(message.model_dump_json(), media_type="application/json")


QueenDep = Annotated[Queen, fastapi.Depends(_queen)]
WorkerDep = Annotated[str, fastapi.Depends(_worker)]
DigestPath = Annotated[str, fastapi.Path(pattern=wire.DIGEST_PATTERN)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": wire.ErrorBody} for status in (400, 401, 403, 404, 409, 413, 422, 503)
}
_RAW_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}

router = fastapi.APIRouter(responses=_ERRORS)


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
async def readyz(queen: QueenDep) -> dict[str, str]:
    await run_in_threadpool(queen.store.ping)
    return {"status": "ready"}


@router.put("/v1/blobs/{digest}", tags=["blobs"], openapi_extra=_RAW_BODY)
async def put_blob(digest: DigestPath, request: fastapi.Request, queen: QueenDep) -> responses.JSONResponse:
    upload = await queen.blobs.receive(
        digest, request.stream(), queen.settings.max_blob_bytes, _declared_size(request)
    )
    created = await run_in_threadpool(blobs.commit, queen.store, queen.blobs, upload)
    queen.traffic.received += upload.size
    queen.traffic.uploads += 1
    return _stored(upload, created)


@router.get("/v1/blobs/{digest}", tags=["blobs"], response_class=responses.FileResponse)
async def get_blob(digest: DigestPath, queen: QueenDep) -> responses.FileResponse:
    path = queen.blobs.open_path(digest)
    queen.traffic.sent += path.stat().st_size
    queen.traffic.downloads += 1
    return responses.FileResponse(
        path, media_type="application/octet-stream", headers={"ETag": f'"{digest}"'}
    )


@router.put("/v1/contexts/{digest}", tags=["blobs"], openapi_extra=_RAW_BODY)
async def put_context(
    digest: DigestPath, request: fastapi.Request, queen: QueenDep
) -> responses.JSONResponse:
    upload = await queen.blobs.receive(
        digest, request.stream(), queen.settings.max_blob_bytes, _declared_size(request)
    )
    created = await run_in_threadpool(
        functools.partial(
            contexts.accept,
            timeout_s=queen.settings.context_probe_timeout_s,
            memory_bytes=queen.settings.context_probe_memory_bytes,
        ),
        queen.store,
        queen.blobs,
        upload,
    )
    queen.traffic.received += upload.size
    queen.traffic.uploads += 1
    return _stored(upload, created)


@router.post("/v1/jobs", tags=["jobs"], status_code=201)
async def submit_job(body: wire.JobSubmission, queen: QueenDep) -> wire.JobAccepted:
    accepted = await run_in_threadpool(jobs.submit, queen.store, queen.settings, body)
    queen.bell.ring()
    return accepted


@router.get("/v1/jobs", tags=["jobs"])
async def list_jobs(queen: QueenDep) -> wire.JobList:
    return await run_in_threadpool(jobs.list_jobs, queen.store, queen.settings)


@router.get("/v1/jobs/{job_id}", tags=["jobs"], response_model=wire.JobStatus)
async def job_status(
    job_id: str,
    queen: QueenDep,
    wait_s: Annotated[float, fastapi.Query(ge=0.0, le=30.0)] = 0.0,
    done: Annotated[int, fastapi.Query(ge=-1)] = -1,
) -> responses.Response:
    """The job's status; with ``wait_s``, a long poll: answered once the job has ended or
    has more than ``done`` tasks done, or when ``wait_s`` has passed (cheaper for the
    queen, and quicker for the client, than polling)."""
    give_up = time.monotonic() + min(wait_s, queen.settings.long_poll_max_s)
    while wait_s > 0:
        now = await _run(queen.store, functools.partial(jobs.progress, queen.store, job_id))
        left = give_up - time.monotonic()
        if now is None or now[0] != "running" or now[1] > done or left <= 0:
            break
        await queen.progress.wait(min(left, queue.POLL_INTERVAL_S))  # results ring it
    return _answer(await run_in_threadpool(jobs.status, queen.store, queen.settings, job_id))


@router.websocket("/v1/jobs/{job_id}/events")
async def job_events(websocket: fastapi.WebSocket, job_id: str) -> None:
    queen: Queen = websocket.app.state.queen
    await websocket.accept()  # before any close: a close before accept reaches clients as a bare 403
    try:
        await run_in_threadpool(jobs.status, queen.store, queen.settings, job_id)
    except refusals.NotFoundError as exc:
        await websocket.close(code=WS_NOT_FOUND, reason=str(exc)[:120])
        return
    await _forward(websocket, events.follow(queen.store, job_id))


@router.post("/v1/workers/register", tags=["workers"], status_code=201)
async def register(body: wire.Registration, queen: QueenDep) -> wire.Enrollment:
    return await run_in_threadpool(membership.register, queen.store, queen.settings, body)


@router.post("/v1/workers/lease", tags=["workers"], response_model=wire.LeaseGrant)
async def lease(body: wire.LeaseRequest, worker: WorkerDep, queen: QueenDep) -> responses.Response:
    grant = await queue.wait_for_lease(
        queen.store,
        queen.settings,
        worker,
        body,
        queen.bell,
        queen.trails,
        run=functools.partial(_run, queen.store),
    )
    return _answer(grant)


@router.post("/v1/workers/heartbeat", tags=["workers"], response_model=wire.HeartbeatReply)
async def heartbeat(body: wire.Heartbeat, worker: WorkerDep, queen: QueenDep) -> responses.Response:
    beat = functools.partial(queue.heartbeat, queen.store, queen.settings, worker, body)
    return _answer(await _run(queen.store, beat))


@router.post("/v1/workers/result", tags=["workers"], response_model=wire.ResultReceipt)
async def result(body: wire.TaskResult, worker: WorkerDep, queen: QueenDep) -> responses.Response:
    return _answer(await _accept(queen, queue.accept_result, worker, body))


@router.post("/v1/workers/results", tags=["workers"], response_model=wire.ReceiptBatch)
async def results(body: wire.ResultBatch, worker: WorkerDep, queen: QueenDep) -> responses.Response:
    return _answer(
        wire.ReceiptBatch(receipts=await _accept(queen, queue.accept_results, worker, body.results))
    )


async def _accept(queen: Queen, accept: Callable[..., T], worker: str, results: Any) -> T:
    """Results through ``accept`` (``queue.accept_result`` or ``accept_results``), then the
    doorbells: job followers always look again; lessees only when a task became
    leasable. Waking every idle worker's long poll on every result made an idle fleet
    cost the queen a lease query per idle worker per result (32 idle workers cut its
    throughput about 3× with leases of 16 and 5× with single results,
    benchmarks/queen.py --idle 32)."""
    readied: list[bool] = []  # on_ready may run in a worker thread; the bells are the loop's
    take = functools.partial(
        accept,
        queen.store,
        queen.settings,
        worker,
        results,
        trails=queen.trails,
        on_ready=lambda: readied.append(True),
    )
    answer = await _run(queen.store, take)
    queen.progress.ring()
    if readied:
        queen.bell.ring()
    return answer


@router.post("/v1/workers/{worker_id}/release", tags=["workers"])
async def release(worker_id: str, request: fastapi.Request, queen: QueenDep) -> wire.WorkerInfo:
    membership.check_operator(queen.settings, _bearer(request))
    await run_in_threadpool(queue.release, queen.store, worker_id)
    listed = await run_in_threadpool(membership.list_workers, queen.store, worker_id)
    return listed.workers[0]


@router.get("/v1/workers", tags=["workers"])
async def list_workers(queen: QueenDep) -> wire.WorkerList:
    return await run_in_threadpool(membership.list_workers, queen.store)


@router.get("/v1/traffic", tags=["ops"])
async def traffic(queen: QueenDep) -> wire.Traffic:
    t = queen.traffic
    return wire.Traffic(
        since=t.since, bytes_received=t.received, bytes_sent=t.sent, uploads=t.uploads, downloads=t.downloads
    )


async def _forward(websocket: fastapi.WebSocket, stream: AsyncIterator[wire.JobEvent]) -> None:
    """Send every event of ``stream``, then close; stop early if the client leaves."""
    gone = False

    async def watch(scope: anyio.CancelScope) -> None:  # polling stops when the client leaves
        nonlocal gone
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
        gone = True
        scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(watch, group.cancel_scope)
        try:
            async for event in stream:
                await websocket.send_json(event.model_dump(mode="json"))
        except websockets.WebSocketDisconnect:
            gone = True
        group.cancel_scope.cancel()
    if not gone:
        await websocket.close(code=1000)


def _declared_size(request: fastapi.Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def _stored(upload: blobs.Upload, created: bool) -> responses.JSONResponse:
    return responses.JSONResponse(
        {"digest": upload.digest, "size": upload.size, "created": created},
        status_code=201 if created else 200,
    )
