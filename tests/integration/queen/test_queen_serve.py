"""The queen as its own process: ``serve`` under uvicorn, real HTTP and WebSocket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from hswarm.queen import membership, settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("access_log", [False, True])
def test_serve_answers_http_and_websocket_until_interrupted(tmp_path: Path, access_log: bool) -> None:
    port = _free_port()
    env = {**os.environ, "HSWARM_PORT": str(port), "HSWARM_DATA_DIR": str(tmp_path / "queen")}
    env["HSWARM_ACCESS_LOG"] = "1" if access_log else "0"
    code = "from hswarm.queen import QueenSettings, serve; serve(QueenSettings())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("the queen did not become ready")
        token = (tmp_path / "queen" / "enroll.token").read_text().strip()
        body = {"token": token, "name": "w", "determinism_class": "x"}
        enrollment = httpx.post(f"{base}/v1/workers/register", json=body, timeout=5).json()
        headers = {"Authorization": f"Bearer {enrollment['credential']}"}
        grant = httpx.post(f"{base}/v1/workers/lease", json={"wait_s": 0.2}, headers=headers, timeout=5)
        assert grant.json() == {"tasks": []}
        with (
            connect(f"ws://127.0.0.1:{port}/v1/jobs/nojob/events") as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "queen ready" in err or "Application startup complete" in err
    assert ('"POST /v1/workers/lease HTTP/1.1" 200' in out) == access_log  # a line per request, if asked


def test_settings_come_from_hswarm_variables_and_derive_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HSWARM_DATA_DIR", str(tmp_path / "q"))
    monkeypatch.setenv("HSWARM_LEASE_TTL_S", "7.5")
    cfg = settings.QueenSettings()
    assert cfg.lease_ttl_s == 7.5 and cfg.port == 8470 and cfg.max_blob_bytes == 1024 << 20
    assert cfg.db_url == f"sqlite:///{tmp_path / 'q' / 'queen.db'}"
    assert settings.QueenSettings(db_url="postgresql+psycopg://h/db").db_url == "postgresql+psycopg://h/db"
    with pytest.raises(ValueError, match="dead_after_s"):
        settings.QueenSettings(suspect_after_s=10, dead_after_s=5)
    assert json.loads(cfg.model_dump_json())["host"] == "127.0.0.1"


def test_enrollment_tokens_never_look_like_command_line_options(tmp_path: Path) -> None:
    # `hswarm worker --token "$(cat enroll.token)"` must not read a token as an option
    tokens = [membership.ensure_token(tmp_path / f"t{i}") for i in range(300)]
    assert len(set(tokens)) == 300 and not any(t.startswith("-") for t in tokens)
