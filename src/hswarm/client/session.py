"""The client SDK: keys stay here, computation goes to the swarm.

``SwarmClient`` owns the key set (generated on first use, kept in a 0600 file), encrypts
vectors into lazy :class:`EncryptedVector` handles, and on :meth:`SwarmClient.decrypt`
compiles what the handle depends on, uploads the public context and the input
ciphertexts (by digest, once each), submits the job, follows it to the end (a progress bar
on a terminal), downloads the result blobs, checks their digests and decrypts locally.
Only the public context ever leaves the process. Verification of results (replicas, a
digest quorum, audits) is the queen's job; the job's ``assurance`` report says what it
got, and this module checks the integrity of what it downloads.

Usage (inside ``async`` code)::

    client = SwarmClient(SwarmConfig(queen_url="http://127.0.0.1:8470"))
    await client.connect()
    encrypted = await client.encrypt([1.0, 2.0, 3.0])
    result = await encrypted * encrypted        # lazy: nothing is computed yet
    plaintext = await client.decrypt(result)    # compile, submit, wait, decrypt
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Generator, Mapping
from typing import Any

import numpy as np

from hswarm import errors, runtime, wire
from hswarm.client.config import SwarmConfig
from hswarm.client.transport import QueenTransport
from hswarm.crypto.keys import KeySet, generate_keys
from hswarm.crypto.params import Params, preset
from hswarm.program import Circuit, Expr, Program, compile_program

# A status request waits up to this long for progress (the queen answers at once when a
# task finishes); after a failed one, the client retries this much later.
LONG_POLL_S = 10.0
RETRY_S = 0.5
PROGRESS_STEPS = 100  # progress updates a followed job gives at most (plus its end)


class EncryptedVector:
    """A lazy encrypted vector: an expression over ciphertexts held by a client.

    Arithmetic (``+ - * @``, ``sum``, ``dot``, ``rotate``, ``poly``, ``sigmoid``...) builds
    the expression; ``await client.decrypt(v)`` runs it. Awaiting the handle itself gives
    it back, so ``await a * b`` reads as in the product brief."""

    __array_ufunc__ = None  # numpy arrays defer to our reflected operators

    def __init__(self, client: SwarmClient, expr: Expr) -> None:
        self._client = client
        self.expr = expr

    def __await__(self) -> Generator[Any, None, EncryptedVector]:
        if False:  # pragma: no cover - makes this a generator
            yield
        return self

    def __len__(self) -> int:
        return self.expr.length

    def __repr__(self) -> str:
        return f"EncryptedVector(length={self.expr.length}, {self.expr.node.describe()})"

    def _wrap(self, expr: Expr) -> EncryptedVector:
        return EncryptedVector(self._client, expr)

    @staticmethod
    def _operand(other: Any) -> Any:
        return other.expr if isinstance(other, EncryptedVector) else other

    def __add__(self, other: Any) -> EncryptedVector:
        return self._wrap(self.expr + self._operand(other))

    def __radd__(self, other: Any) -> EncryptedVector:
        return self._wrap(self._operand(other) + self.expr)

    def __sub__(self, other: Any) -> EncryptedVector:
        return self._wrap(self.expr - self._operand(other))

    def __rsub__(self, other: Any) -> EncryptedVector:
        return self._wrap(self._operand(other) - self.expr)

    def __mul__(self, other: Any) -> EncryptedVector:
        return self._wrap(self.expr * self._operand(other))

    def __rmul__(self, other: Any) -> EncryptedVector:
        return self._wrap(self._operand(other) * self.expr)

    def __neg__(self) -> EncryptedVector:
        return self._wrap(-self.expr)

    def __getattr__(self, name: str) -> Any:
        # rotate, sum, dot, poly, chebyshev, sigmoid, exp, inverse, bootstrap
        method = getattr(self.expr, name)

        def call(*args: Any, **kwargs: Any) -> EncryptedVector:
            args = tuple(self._operand(a) for a in args)
            return self._wrap(method(*args, **kwargs))

        return call


class SwarmClient:
    """Asynchronous client of a queen. Create, ``await connect()``, use, ``await close()``.

    Key generation, encryption and decryption run on the caller's thread: OpenFHE keeps
    process-global state, and calling it from asyncio's worker threads hung a native
    encoder intermittently in tests (openfhe 1.6.1). They take milliseconds (keygen up to
    ~2 s at 128-bit) and happen before and after the network work."""

    def __init__(self, config: SwarmConfig | None = None) -> None:
        self.config = config or SwarmConfig()
        self.params: Params = preset(
            self.config.preset, allow_insecure=self.config.allow_insecure, **self.config.preset_overrides
        )
        self.keys: KeySet | None = None
        self._transport: QueenTransport | None = None
        self._program = Program()
        self._ciphertexts: dict[str, list[bytes]] = {}  # input name -> chunk ciphertexts
        self._uploaded: set[str] = set()
        self.last_job: wire.JobStatus | None = None
        self.last_circuit: Circuit | None = None

    async def connect(self) -> None:
        """Reach the queen and load (or create) the key set."""
        self._transport = QueenTransport(self.config.queen_url)
        await self._transport.ready()
        path = self.config.resolved_key_path()
        if path.exists():
            keys = KeySet.load(path, allow_insecure=self.config.allow_insecure)
            if keys.params != self.params:
                raise errors.KeyMaterialError(
                    f"cannot use the key file {path}: it holds keys for other parameters "
                    f"({keys.params.label}); set key_path to another file"
                )
        else:
            keys = generate_keys(self.params, ())
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            keys.save(path)
        self.keys = keys

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    async def __aenter__(self) -> SwarmClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _ready(self) -> tuple[KeySet, QueenTransport]:
        if self.keys is None or self._transport is None:
            raise errors.HSwarmError("cannot use the client: call `await client.connect()` first")
        return self.keys, self._transport

    async def encrypt(self, data: Any, name: str | None = None) -> EncryptedVector:
        """Encrypt a vector here (any length: chunked over the slots)."""
        keys, _ = self._ready()
        name = name or f"input{len(self._ciphertexts)}"
        values = np.asarray(data)
        chunks = keys.encrypt(values)
        expr = self._program.input(name, int(values.size))
        self._ciphertexts[name] = chunks
        return EncryptedVector(self, expr)

    async def decrypt(self, value: EncryptedVector, *, label: str = "") -> np.ndarray:
        """Run what ``value`` depends on in the swarm and decrypt the result here."""
        keys, transport = self._ready()
        if not isinstance(value, EncryptedVector) or value._client is not self:
            raise errors.HSwarmError("cannot decrypt: not an encrypted vector of this client")
        program = _slice(self._program, value.expr)
        circuit = compile_program(program, self.params)
        self.last_circuit = circuit
        keys = self._keys_for(circuit)
        results = await self._run(keys, transport, circuit, label)
        return runtime.decrypt_outputs(keys, circuit, results)["result"]

    async def run(
        self, program: Program, values: Mapping[str, Any], *, label: str = ""
    ) -> dict[str, np.ndarray]:
        """Run a whole program: encrypt its named inputs here, evaluate in the swarm,
        decrypt every named output here."""
        keys, transport = self._ready()
        circuit = compile_program(program, self.params)
        keys = self._keys_for(circuit)
        encrypted = runtime.encrypt_inputs(keys, circuit, values)
        self.last_circuit = circuit
        results = await self._submit(keys, transport, circuit, encrypted, label)
        return runtime.decrypt_outputs(keys, circuit, results)

    def _keys_for(self, circuit: Circuit) -> KeySet:
        """The key set, extended (and saved) with rotation keys the circuit needs."""
        keys, _ = self._ready()
        if not set(circuit.rotation_indices) <= set(keys.rotation_indices):
            keys = keys.with_rotations(circuit.rotation_indices)
            keys.save(self.config.resolved_key_path())
            self.keys = keys
        return keys

    async def _upload(self, transport: QueenTransport, data: bytes, context: bool = False) -> str:
        from hswarm.crypto.public import digest

        key = digest(data)
        if key not in self._uploaded:
            await (transport.put_context(key, data) if context else transport.put_blob(key, data))
            self._uploaded.add(key)
        return key

    async def _run(
        self, keys: KeySet, transport: QueenTransport, circuit: Circuit, label: str
    ) -> dict[int, bytes]:
        chunks: dict[int, bytes] = {}
        for name, term in circuit.inputs.items():
            chunks.update(zip(term.chunks, self._ciphertexts[name], strict=True))
        return await self._submit(keys, transport, circuit, chunks, label)

    async def _submit(
        self,
        keys: KeySet,
        transport: QueenTransport,
        circuit: Circuit,
        chunks: Mapping[int, bytes],
        label: str,
    ) -> dict[int, bytes]:
        """Upload the context and input ciphertexts, submit, follow, download results."""
        context = await self._upload(transport, keys.public_context().to_bytes(), context=True)
        inputs = {step: await self._upload(transport, data) for step, data in chunks.items()}
        accepted = await transport.submit(
            wire.JobSubmission(
                circuit=circuit.to_json(),
                context=context,
                inputs=inputs,
                assurance=wire.Assurance(quorum=self.config.quorum, verify=self.config.verify),
                label=label,
            )
        )
        status = await self._follow(transport, accepted)
        self.last_job = status
        wanted = {s for term in circuit.outputs.values() for s in term.chunks}
        results: dict[int, bytes] = {}
        for step in wanted:
            if step in inputs:  # an output that is an input, untouched
                results[step] = chunks[step]
            elif step not in status.results:
                raise errors.HSwarmError(f"cannot decrypt: the queen returned no result for step {step}")
            else:
                results[step] = await transport.get_blob(status.results[step])
        return results

    async def _follow(self, transport: QueenTransport, accepted: wire.JobAccepted) -> wire.JobStatus:
        show = self.config.progress if self.config.progress is not None else sys.stderr.isatty()
        bar = None
        if show:
            from tqdm import tqdm

            bar = tqdm(total=accepted.tasks, desc=f"job {accepted.job_id[:8]}", unit="task", file=sys.stderr)
        deadline = time.monotonic() + self.config.timeout_s
        done = -1
        try:
            while True:
                wait = max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))
                try:
                    status = await transport.job(accepted.job_id, wait_s=wait, done=done)
                except errors.QueenUnreachableError:
                    # A restarting queen resumes every job from its store: keep following.
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(RETRY_S)
                    continue
                # Woken at each hundredth of the job, not at each task: a status costs the
                # queen counts over the job's replicas. The job's end still answers at once.
                done = status.tasks_done + max(1, status.tasks_total // PROGRESS_STEPS) - 1
                if bar is not None:
                    bar.update(status.tasks_done - bar.n)
                if status.state == "done":
                    return status
                if status.state == "failed":
                    raise errors.EvaluationError(
                        f"cannot decrypt: job {status.job_id} failed: {status.error or 'unknown error'}"
                    )
                if time.monotonic() > deadline:
                    raise errors.HSwarmError(
                        f"cannot decrypt: job {status.job_id} not done after {self.config.timeout_s:g} s "
                        f"({status.tasks_done}/{status.tasks_total} tasks); are workers running?"
                    )
        finally:
            if bar is not None:
                bar.close()


def _slice(program: Program, expr: Expr) -> Program:
    """A program holding only what ``expr`` depends on, with ``expr`` as output "result"."""
    needed: set[int] = set()
    stack = [expr.node.id]
    while stack:
        nid = stack.pop()
        if nid not in needed:
            needed.add(nid)
            stack.extend(program.node(nid).args)
    order = sorted(needed)
    renumber = {old: new for new, old in enumerate(order)}
    nodes = []
    for old in order:
        n = program.node(old)
        nodes.append(
            {
                "id": renumber[old],
                "op": n.op,
                "args": [renumber[a] for a in n.args],
                "attrs": dict(n.attrs),
                "length": n.length,
                "replicated": n.replicated,
            }
        )
    inputs = {name: renumber[nid] for name, nid in program.inputs.items() if nid in needed}
    doc: Mapping[str, Any] = {
        "schema": "hswarm.program/1",
        "nodes": nodes,
        "inputs": inputs,
        "outputs": {"result": renumber[expr.node.id]},
    }
    return Program.from_json(doc)
