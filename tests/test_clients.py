"""Clients, keys, scopes, isolation, quotas, idempotency, cancel, policy overlays and webhooks, over a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from credence.app import create_app
from credence.runtime import Runtime
from credence.webhooks import verify_signature

from .conftest import LiveServer, make_clip, settings_for

CLI = [sys.executable, "-m", "credence"]
PROMPT = "a red circle moving left on a blue background"


def _cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run([*CLI, *args, "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _wait(client: httpx.Client, generation_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (record := client.get(f"/v1/generations/{generation_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, record
        time.sleep(0.3)
    return record


@pytest.fixture
def server(runtime: Runtime, cli_env: dict[str, str]) -> Any:
    with LiveServer(create_app(settings_for(runtime.settings.home))) as live:
        yield live


@pytest.mark.slow
def test_authorisation_matrix(runtime: Runtime, cli_env: dict[str, str], server: LiveServer, tmp_path: Path) -> None:
    alice = _cli(cli_env, "clients", "create", "alice", "--scopes", "generate,verify,moderate")
    bob = _cli(cli_env, "clients", "create", "bob", "--scopes", "generate,verify,moderate")
    narrow = _cli(cli_env, "keys", "create", "alice", "--scopes", "verify")
    revoked = _cli(cli_env, "keys", "create", "alice", "--scopes", "generate,verify,moderate")
    subprocess.run([*CLI, "keys", "revoke", revoked["key_id"]], env=cli_env, check=True, capture_output=True)
    assert "cred_" in alice["key"] and len(alice["key"].split("_")) >= 3
    clip = make_clip(tmp_path / "c.mp4", frames=8)

    def as_(key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=server.url, timeout=300, headers=headers)

    with as_(alice["key"]) as a:
        made = a.post("/v1/generations", json={"prompt": PROMPT, "steps": 2, "seed": 3})
        assert made.status_code == 202, made.text
        gen_id = made.json()["id"]
        record = _wait(a, gen_id)
        assert record["status"] == "published" and record["client_id"] == alice["client_id"]
        video = a.get(record["video_url"])
        verdict = a.post("/v1/verify", files={"file": ("v.mp4", video.content, "video/mp4")}).json()
        assert verdict["verdict"] == "generated" and verdict["record"]["generation_id"] == gen_id
        assert verdict["record"]["client_id"] == alice["client_id"]  # traced to the generation and the client
        who = a.get("/v1/whoami").json()
        assert who == {"client_id": alice["client_id"], "client_name": "alice", "key_id": alice["key_id"],
                       "scopes": ["generate", "moderate", "verify"]}

    upload = {"file": ("c.mp4", clip.read_bytes(), "video/mp4")}
    routes: list[tuple[str, str, str, dict[str, Any]]] = [
        ("generate", "POST", "/v1/generations", {"json": {"prompt": PROMPT, "steps": 2}}),
        ("generate", "GET", "/v1/generations", {}),
        ("generate", "GET", f"/v1/generations/{gen_id}", {}),
        ("generate", "GET", f"/v1/generations/{gen_id}/video", {}),
        ("generate", "DELETE", f"/v1/generations/{gen_id}", {}),
        ("moderate", "POST", "/v1/moderations", {"json": {"prompt": "a cat"}}),
        ("verify", "POST", "/v1/verify", {"files": upload}),
        ("verify", "POST", "/matches/byContent", {"files": upload}),
        ("verify", "GET", "/matches/byBinding", {"params": {"alg": "x", "value": "AAAAAAAAAAA="}}),
        ("verify", "GET", "/services/supportedAlgorithms", {}),
    ]
    for scope, method, path, kwargs in routes:
        with as_(None) as anonymous:
            if path != "/services/supportedAlgorithms":  # the one public route of the resolution API
                assert anonymous.request(method, path, **kwargs).status_code == 401, (method, path)
        with as_(revoked["key"]) as c:
            if path != "/services/supportedAlgorithms":
                assert c.request(method, path, **kwargs).status_code == 401, (method, path)
        with as_(narrow["key"]) as c:
            answer = c.request(method, path, **kwargs)
            if scope != "verify":
                assert answer.status_code == 403, (method, path, answer.status_code)
    # Another client's id is 404, never 403 (no existence oracle), for every generation route.
    with as_(bob["key"]) as b:
        for method, path in (("GET", f"/v1/generations/{gen_id}"), ("GET", f"/v1/generations/{gen_id}/video"),
                             ("DELETE", f"/v1/generations/{gen_id}")):
            assert b.request(method, path).status_code == 404, (method, path)
        assert gen_id not in [g["id"] for g in b.get("/v1/generations").json()["items"]]
    # A disabled client's keys stop working; an audit key sees everything.
    subprocess.run([*CLI, "clients", "disable", "bob"], env=cli_env, check=True, capture_output=True)
    with as_(bob["key"]) as b:
        assert b.get("/v1/whoami").status_code == 401
    auditor = _cli(cli_env, "clients", "create", "auditor", "--scopes", "generate,audit")
    with as_(auditor["key"]) as au:
        assert au.get(f"/v1/generations/{gen_id}").status_code == 200
    # The ledger names the client and key, never the secret.
    gen = runtime.ledger.get_generation(gen_id)
    assert gen.client_id == alice["client_id"] and gen.key_id == alice["key_id"]
    assert all(d.client_id == alice["client_id"] for d in gen.decisions)
    dump = subprocess.run(["sqlite3", str(runtime.settings.home / "ledger.sqlite3"), ".dump"], capture_output=True,
                          text=True).stdout
    if dump:
        assert alice["key"].split("_", 2)[2] not in dump


@pytest.mark.slow
def test_quotas_idempotency_and_cancel(runtime: Runtime, cli_env: dict[str, str], server: LiveServer) -> None:
    limited = _cli(cli_env, "clients", "create", "limited", "--scopes", "generate,moderate", "--rate", "4/minute")
    with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": limited["key"]}) as c:
        codes = [c.get("/v1/whoami").status_code for _ in range(5)]
        assert codes == [200, 200, 200, 200, 429]
        over = c.get("/v1/whoami")
        assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1
        assert over.headers["content-type"].startswith("application/problem+json")
    daily = _cli(cli_env, "clients", "create", "daily", "--scopes", "generate", "--daily-generations", "1")
    with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": daily["key"]}) as c:
        first = c.post("/v1/generations", json={"prompt": PROMPT, "steps": 2}, headers={"Idempotency-Key": "k-1"})
        again = c.post("/v1/generations", json={"prompt": PROMPT, "steps": 2}, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 202 and again.status_code == 202
        assert first.json()["id"] == again.json()["id"]  # a retried POST is the same job, not a second one
        second = c.post("/v1/generations", json={"prompt": PROMPT, "steps": 2})
        assert second.status_code == 429 and "daily" in second.json()["detail"]
        _wait(c, first.json()["id"])
        assert c.delete(f"/v1/generations/{first.json()['id']}").status_code == 409  # not queued any more
    # Cancel a job that is still queued: hold the executor with a job first.
    canceller = _cli(cli_env, "clients", "create", "canceller", "--scopes", "generate")
    with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": canceller["key"]}) as c:
        ids = [c.post("/v1/generations", json={"prompt": PROMPT, "steps": 2, "seed": i}).json()["id"] for i in range(3)]
        cancelled = c.delete(f"/v1/generations/{ids[-1]}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        for generation_id in ids[:-1]:
            assert _wait(c, generation_id)["status"] == "published"
        assert c.get(f"/v1/generations/{ids[-1]}").json()["status"] == "cancelled"
        assert c.get(f"/v1/generations/{ids[-1]}/video").status_code == 404
        page = c.get("/v1/generations", params={"limit": 2}).json()
        rest = c.get("/v1/generations", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        assert {g["id"] for g in page["items"] + rest["items"]} == set(ids) and rest["next_cursor"] is None
        assert [g["id"] for g in c.get("/v1/generations", params={"status": "cancelled"}).json()["items"]] == [ids[-1]]


@pytest.mark.slow
def test_policy_overlay_looser_refused_stricter_applied(runtime: Runtime, cli_env: dict[str, str],
                                                        server: LiveServer, tmp_path: Path) -> None:
    loose = tmp_path / "loose.yaml"
    loose.write_text("categories:\n  violence: {block: 0.99}\n")
    done = subprocess.run([*CLI, "clients", "create", "loose", "--policy", str(loose)], env=cli_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "categories.violence.block" in done.stderr and "looser" in done.stderr
    off = tmp_path / "off.yaml"
    off.write_text("disabled: [violence]\n")
    done = subprocess.run([*CLI, "clients", "create", "off", "--policy", str(off)], env=cli_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "disabled" in done.stderr
    strict = tmp_path / "strict.yaml"
    strict.write_text("rules:\n  - {category: violence, score: 0.95, pattern: '\\bcircle\\b'}\n")
    client = _cli(cli_env, "clients", "create", "strict", "--scopes", "generate,moderate", "--policy", str(strict))
    plain = _cli(cli_env, "clients", "create", "plain", "--scopes", "generate,moderate")
    with httpx.Client(base_url=server.url, timeout=60) as c:
        strict_answer = c.post("/v1/moderations", json={"prompt": PROMPT},
                               headers={"X-API-Key": client["key"]}).json()
        plain_answer = c.post("/v1/moderations", json={"prompt": PROMPT}, headers={"X-API-Key": plain["key"]}).json()
        assert plain_answer["action"] == "allow" and strict_answer["action"] == "block"
        blocked = c.post("/v1/generations", json={"prompt": PROMPT, "steps": 2}, headers={"X-API-Key": client["key"]})
        assert blocked.status_code == 422
    gen = runtime.ledger.get_generation(blocked.json()["id"])
    decision = gen.decisions[0]
    assert decision.policy_hash and decision.overlay_hash and decision.overlay_hash != decision.policy_hash


@pytest.mark.slow
def test_webhook_is_signed_and_retried(runtime: Runtime, cli_env: dict[str, str], server: LiveServer) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((dict(self.headers), body))
            self.send_response(500 if len(received) == 1 else 200)  # the first delivery fails: it is retried
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        # A loopback receiver: only an operator's --allow-private-webhook lets the server call it.
        client = _cli(cli_env, "clients", "create", "hooked", "--scopes", "generate", "--webhook", url,
                      "--allow-private-webhook")
        with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": client["key"]}) as c:
            gen_id = c.post("/v1/generations", json={"prompt": PROMPT, "steps": 2}).json()["id"]
            assert _wait(c, gen_id)["status"] == "published"
        deadline = time.monotonic() + 30
        while len(received) < 2:
            assert time.monotonic() < deadline, received
            time.sleep(0.2)
    finally:
        receiver.shutdown()
    headers, body = received[-1]
    assert json.loads(body)["id"] == gen_id and json.loads(body)["status"] == "published"
    assert verify_signature(client["webhook_secret"], headers["Credence-Signature"], body)
    assert not verify_signature("whsec_wrong", headers["Credence-Signature"], body)


def test_quotas_are_shared_through_redis(home: Path) -> None:
    """Two API processes (two Quotas on one Redis) count one client's requests together."""
    import redis

    from credence.auth import Caller
    from credence.quotas import Quotas

    url = "redis://127.0.0.1:6379/13"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url}: {exc}")
    settings = settings_for(home, CREDENCE_BROKER_URL=url)
    first, second = Quotas(settings), Quotas(settings)
    caller = Caller(client_id="c-shared", client_name="shared", key_id="k", scopes=frozenset({"generate"}),
                    rate_limit="3/minute", daily_generations=2)
    answers = [q.request(caller) for q in (first, second, first, second)]
    assert answers[:3] == [None, None, None] and answers[3] is not None and answers[3] >= 1
    assert [first.generation(caller), second.generation(caller)] == [None, None]
    assert second.generation(caller) is not None
    broken = Quotas(settings_for(home, CREDENCE_BROKER_URL="redis://127.0.0.1:1/0"))
    from credence.quotas import QuotaUnavailable

    with pytest.raises(QuotaUnavailable):
        broken.request(caller)
