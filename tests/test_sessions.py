"""Console sessions (issue 21) over real servers: a session ends on its key's next request once the
key is revoked, its client disabled or the key expired; sessions are shared by replicas (two apps
on one ledger, and two `credence serve` processes on one Redis); failed sign-ins are throttled
(429 with Retry-After) and audited without key material; `Secure` and HSTS only when the
deployment says it is behind TLS.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from credence.auth import new_key
from credence.runtime import Runtime
from credence.sessions import session_digest
from provenance.ledger import ModerationDecision
from provenance.ledger.models import ApiKey, AuditEntry, Client, ConsoleSessionRow, utcnow
from provenance.publish import PublishRequest

from .conftest import API_KEY, LiveServer, settings_for

CLI = [sys.executable, "-m", "credence"]
REDIS_URL = os.environ.get("CREDENCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
SESSION = "credence_console"

pytestmark = pytest.mark.slow  # every test here serves the app (uvicorn in a thread, or `credence serve`)


# -- helpers -----------------------------------------------------------------------------------------
def make_key(rt: Runtime, client_name: str, scopes: list[str], *, reviewer: str | None = None,
             expires_at: dt.datetime | None = None) -> dict[str, str]:
    """A client (made if absent) and a new key of it: ids and the key."""
    with rt.ledger.session() as s:
        client = s.scalars(select(Client).where(Client.name == client_name)).first()
        if client is None:
            client = Client(name=client_name)
            s.add(client)
            s.flush()
        row, key = new_key(s, client, scopes, reviewer=reviewer, expires_at=expires_at)
        return {"client_id": client.id, "key_id": row.id, "key": key}


def held_prompt(rt: Runtime, prompt: str = "a knife on a kitchen table", client_id: str | None = None) -> str:
    """A generation held at the prompt screen, as the screen leaves one."""
    gen = rt.publisher.begin(PublishRequest(prompt=prompt, model_name="credence-default-t2v", client_id=client_id),
                             status="review", stage="prompt")
    with rt.ledger.session() as s:
        s.add(ModerationDecision(generation_id=gen.id, stage="prompt", prompt_sha256=gen.prompt_sha256,
                                 action="review", scores={"violence": 0.5}, policy_version="test",
                                 reasons=[{"category": "violence", "score": 0.5, "threshold": 0.4,
                                           "action": "review", "source": "classifier"}]))
    return gen.id


def sign_in(http: httpx.Client, key: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """The console's sign-in form, as a browser submits it (the page's CSRF token included)."""
    page = http.get("/console", headers=headers)
    assert page.status_code == 200, page.text
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    return http.post("/console/signin", data={"key": key, "csrf": token.group(1)}, headers=headers)


def page_csrf(html: str) -> str:
    """The CSRF token of a signed-in page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found.group(1)


def refused(response: httpx.Response) -> bool:
    """A console request sent back to the sign-in page."""
    return response.status_code == 303 and response.headers["location"] == "/console"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def audit_rows(rt: Runtime, action: str) -> list[AuditEntry]:
    with rt.ledger.session() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


# -- a session ends when its key stops working ----------------------------------------------------------
@pytest.mark.parametrize("how", ["revoke", "disable", "expire"])
def test_a_signed_in_console_ends_on_the_next_request_once_its_key_stops_working(
        how: str, runtime: Runtime, cli_env: dict[str, str]) -> None:
    from credence.app import create_app

    gen_id = held_prompt(runtime)
    with LiveServer(create_app(settings_for(runtime.settings.home))) as server, \
            httpx.Client(base_url=server.url, timeout=60) as http:
        expires = utcnow() + dt.timedelta(seconds=6) if how == "expire" else None
        made = make_key(runtime, "trust-and-safety", ["review", "audit"], reviewer="Alice", expires_at=expires)
        assert sign_in(http, made["key"]).status_code == 303
        queue = http.get("/console/queue")
        assert queue.status_code == 200 and gen_id in queue.text
        csrf = page_csrf(queue.text)
        if how == "revoke":
            cli(cli_env, "keys", "revoke", made["key_id"])
        elif how == "disable":
            cli(cli_env, "clients", "disable", "trust-and-safety")
        else:
            time.sleep(max(0.0, (expires - utcnow()).total_seconds()) + 0.5)  # the key expires while signed in
        assert refused(http.get("/console/queue"))
        # A form posted with the session's valid CSRF token is refused too, and changes nothing.
        approve = http.post(f"/console/reviews/{gen_id}/approve", data={"note": "fine", "csrf": csrf})
        assert refused(approve)
        assert refused(http.get(f"/console/generations/{gen_id}"))
        assert runtime.ledger.get_generation(gen_id).status == "review"
    with runtime.ledger.session() as s:  # the session is gone from the store, not only refused
        assert s.scalars(select(ConsoleSessionRow)).all() == []
    ended = audit_rows(runtime, "console.session_ended")
    assert len(ended) == 1 and ended[0].key_id == made["key_id"]
    assert ended[0].details["reason"] == {"revoke": "revoked", "disable": "client disabled",
                                          "expire": "expired"}[how]


def test_a_key_that_loses_its_console_scopes_ends_its_session(runtime: Runtime) -> None:
    from credence.app import create_app

    made = make_key(runtime, "auditors", ["audit"], reviewer="Bea")
    with LiveServer(create_app(settings_for(runtime.settings.home))) as server, \
            httpx.Client(base_url=server.url, timeout=60) as http:
        assert sign_in(http, made["key"]).status_code == 303
        assert http.get("/console/search").status_code == 200
        assert http.get("/console/queue").status_code == 403  # no review scope: scopes are the ledger's
        with runtime.ledger.session() as s:
            s.get(ApiKey, made["key_id"]).scopes = ["generate"]
        assert refused(http.get("/console/search"))


# -- sessions shared by replicas ---------------------------------------------------------------------
def test_sessions_in_the_ledger_are_shared_by_two_apps(runtime: Runtime) -> None:
    """Without Redis, two app processes on one ledger (here two apps in one process: separate state)
    see each other's sessions; the ledger keeps only the hash of the id."""
    from credence.app import create_app

    settings = settings_for(runtime.settings.home)
    made = make_key(runtime, "trust-and-safety", ["review"], reviewer="Alice")
    gen_id = held_prompt(runtime)
    with LiveServer(create_app(settings)) as one, LiveServer(create_app(settings)) as two, \
            httpx.Client(base_url=one.url, timeout=60) as a, httpx.Client(base_url=two.url, timeout=60) as b:
        assert sign_in(a, made["key"]).status_code == 303
        sid = a.cookies[SESSION]
        b.cookies.set(SESSION, sid, domain="127.0.0.1", path="/console")
        queue = b.get("/console/queue")
        assert queue.status_code == 200 and gen_id in queue.text
        # The CSRF token of a page from one replica is good on the other (it is derived, not stored).
        assert page_csrf(queue.text) == page_csrf(a.get("/console/queue").text)
        with runtime.ledger.session() as s:
            rows = s.scalars(select(ConsoleSessionRow)).all()
            assert [r.id_hash for r in rows] == [session_digest(sid)] and sid not in str(
                [(r.id_hash, r.key_id, r.client_id, r.flash) for r in rows])
        # Signing out on one ends the session on both.
        assert b.post("/console/signout", data={"csrf": page_csrf(queue.text)}).status_code == 303
        assert refused(a.get("/console/queue"))
        # A browser that signs in while it holds a live session (a sign-in form left open in another
        # tab) gets a new id, and the old session ends: an id is never carried over (no fixation).
        assert sign_in(a, made["key"]).status_code == 303
        old = a.cookies[SESSION]
        with httpx.Client(base_url=two.url, timeout=60) as c:
            form = c.get("/console")
            c.cookies.set(SESSION, old, domain="127.0.0.1", path="/console")
            again = c.post("/console/signin", data={"key": made["key"], "csrf": page_csrf(form.text)})
            assert again.status_code == 303 and c.cookies[SESSION] != old
            assert c.get("/console/queue").status_code == 200
        assert refused(a.get("/console/queue"))


@pytest.fixture
def redis_db() -> Iterator[Any]:
    """A Redis database of its own for these tests, emptied before and after (skip without Redis)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    yield client
    client.flushdb()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    return process, url


def _wait_up(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"credence serve did not start: {log.read_text()[-3000:]}")


def test_two_api_processes_share_sessions_and_the_throttle_through_redis(
        runtime: Runtime, cli_env: dict[str, str], redis_db: Any, tmp_path: Path) -> None:
    env = dict(cli_env, CREDENCE_BROKER_URL=REDIS_URL, CREDENCE_SIGNIN_FAILURES="3/minute",
               CREDENCE_API_KEYS=API_KEY)
    made = make_key(runtime, "trust-and-safety", ["review", "audit"], reviewer="Alice")
    gen_id = held_prompt(runtime)
    servers = [_serve(env, tmp_path / f"serve-{i}.log") for i in range(2)]
    try:
        for (process, url), i in zip(servers, range(2), strict=True):
            _wait_up(process, url, tmp_path / f"serve-{i}.log")
        (_, url_a), (_, url_b) = servers
        with httpx.Client(base_url=url_a, timeout=60) as a, httpx.Client(base_url=url_b, timeout=60) as b:
            # Signed in on A, the same cookie works on B; a form from A's page is accepted by B.
            assert sign_in(a, made["key"]).status_code == 303
            sid = a.cookies[SESSION]
            b.cookies.set(SESSION, sid, domain="127.0.0.1", path="/console")
            queue_a = a.get("/console/queue")
            assert queue_a.status_code == 200 and gen_id in queue_a.text
            approved = b.post(f"/console/reviews/{gen_id}/approve",
                              data={"note": "a kitchen scene", "csrf": page_csrf(queue_a.text)})
            assert approved.status_code == 303 and approved.headers["location"] == "/console/queue"
            assert runtime.ledger.get_generation(gen_id).status == "queued"  # the queue engine has it now
            # The flash message written by B is shown by A (one store).
            assert "approved" in a.get("/console/queue").text
            # Redis holds the hash of the id, never the id.
            keys = [k.decode() for k in redis_db.keys("credence:console:*")]
            assert f"credence:console:session:{session_digest(sid)}" in keys
            assert all(sid not in k for k in keys)
            assert all(sid.encode() not in (redis_db.get(k) or b"") for k in keys if ":session:" in k)
            # Revoked through the CLI: both replicas refuse at once.
            cli(env, "keys", "revoke", made["key_id"])
            assert refused(a.get("/console/queue")) and refused(b.get("/console/queue"))
            assert not [k for k in redis_db.keys("credence:console:session:*")]
            # Failed sign-ins are counted across replicas: three on A, the fourth on B is refused. A
            # client's X-Forwarded-For is not believed (no CREDENCE_TRUST_FORWARDED_FOR): all are 127.0.0.1.
            for i in range(3):
                forged = {"X-Forwarded-For": f"10.9.9.{i}"}
                assert sign_in(a, f"cred_0123456789a{i}_wrongsecret", headers=forged).status_code == 401
            throttled = sign_in(b, "cred_0123456789ff_wrongsecret", headers={"X-Forwarded-For": "10.9.9.9"})
            assert throttled.status_code == 429 and 1 <= int(throttled.headers["retry-after"]) <= 60
    finally:
        for process, _url in servers:
            process.terminate()
        for process, _url in servers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    assert len(audit_rows(runtime, "console.signin_failed")) == 3


def test_an_unreachable_session_store_refuses_and_lets_nothing_through(runtime: Runtime) -> None:
    """Redis down (CREDENCE_BROKER_URL pointing nowhere): sign-in and every signed-in page answer 503
    with Retry-After, as an HTML page, never a page served unchecked."""
    from credence.app import create_app

    made = make_key(runtime, "trust-and-safety", ["review"], reviewer="Alice")
    settings = settings_for(runtime.settings.home, CREDENCE_BROKER_URL="redis://127.0.0.1:1/0")
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        attempt = sign_in(http, made["key"])
        assert attempt.status_code == 503 and attempt.headers["retry-after"] == "5"
        assert "sign-in throttle is unavailable" in attempt.text and "127.0.0.1:1" not in attempt.text
        http.cookies.set(SESSION, "a" * 43, domain="127.0.0.1", path="/console")
        page = http.get("/console/queue")
        assert page.status_code == 503 and "session store is unavailable" in page.text
        assert page.headers["content-type"].startswith("text/html")


# -- the sign-in throttle ---------------------------------------------------------------------------
def test_failed_sign_ins_are_throttled_per_address_and_audited_without_key_material(runtime: Runtime) -> None:
    from credence.app import create_app

    made = make_key(runtime, "trust-and-safety", ["review"], reviewer="Alice")
    known_prefix = made["key"].split("_")[1]
    wrong = [f"cred_{known_prefix}_not-the-secret-1", "cred_aaaabbbbcccc_guessed-secret-2", "my password 3"]
    settings = settings_for(runtime.settings.home, CREDENCE_SIGNIN_FAILURES="3/minute")
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        for key in wrong:
            answer = sign_in(http, key)
            assert answer.status_code == 401 and "not valid" in answer.text
        throttled = sign_in(http, made["key"])  # even the right key, from this address
        assert throttled.status_code == 429, throttled.text
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert "Too many failed sign-ins" in throttled.text and "<form" in throttled.text  # the sign-in page
        assert SESSION not in http.cookies
        again = sign_in(http, "cred_ffffffffffff_x")
        assert again.status_code == 429
    failed = audit_rows(runtime, "console.signin_failed")
    assert len(failed) == 3 and all(r.details["address"] == "127.0.0.1" for r in failed)
    assert failed[0].details["prefix"] == known_prefix and failed[0].key_id == made["key_id"]
    assert failed[0].client_id == made["client_id"]
    assert failed[1].details["prefix"] == "aaaabbbbcccc" and failed[1].key_id is None
    assert "prefix" not in failed[2].details  # not a cred_ key: nothing of what was typed is kept
    throttles = audit_rows(runtime, "console.signin_throttled")
    assert len(throttles) == 1 and throttles[0].details["address"] == "127.0.0.1"  # once per window, not per try
    dump = json.dumps([[r.actor, r.details, r.subject] for r in failed + throttles])
    for key in [*wrong, made["key"]]:
        secret = key.split("_", 2)[-1]
        assert secret not in dump, secret


def test_failed_sign_ins_are_throttled_per_key_prefix(runtime: Runtime) -> None:
    """Behind a proxy (CREDENCE_TRUST_FORWARDED_FOR) each address counts apart; one prefix tried from
    many addresses is still throttled."""
    from credence.app import create_app

    made = make_key(runtime, "trust-and-safety", ["review"], reviewer="Alice")
    prefix = made["key"].split("_")[1]
    settings = settings_for(runtime.settings.home, CREDENCE_SIGNIN_FAILURES="3/minute",
                            CREDENCE_TRUST_FORWARDED_FOR="1")
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        for i in range(3):
            hop = {"X-Forwarded-For": f"203.0.113.7, 10.0.0.{i}"}  # the proxy appended the last entry
            assert sign_in(http, f"cred_{prefix}_guess-{i}", headers=hop).status_code == 401
        fresh = {"X-Forwarded-For": "10.0.0.50"}
        assert sign_in(http, f"cred_{prefix}_guess-x", headers=fresh).status_code == 429
        assert sign_in(http, made["key"], headers=fresh).status_code == 429  # the prefix is the key's own
        assert sign_in(http, "cred_0000aaaa0000_other", headers=fresh).status_code == 401  # another prefix: counted
    failed = audit_rows(runtime, "console.signin_failed")
    assert [r.details["address"] for r in failed] == ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.50"]


# -- Secure cookie and HSTS only when the deployment says so ---------------------------------------
def _cookie_flags(response: httpx.Response, name: str) -> list[str]:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return [part.strip().lower() for part in header.split(";")[1:]]
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('set-cookie')}")


@pytest.mark.parametrize("setting, forwarded, secure", [
    ({}, "https", False),                                     # a client's X-Forwarded-Proto is not believed
    ({"CREDENCE_BEHIND_TLS": "1"}, None, True),
    ({"CREDENCE_TRUST_FORWARDED_PROTO": "1"}, "https", True),  # the operator's proxy says so
    ({"CREDENCE_TRUST_FORWARDED_PROTO": "1"}, None, False),
])
def test_secure_cookie_and_hsts_only_with_the_setting(runtime: Runtime, setting: dict[str, str],
                                                      forwarded: str | None, secure: bool) -> None:
    from credence.app import create_app

    made = make_key(runtime, "trust-and-safety", ["review"], reviewer="Alice")
    headers = {"X-Forwarded-Proto": forwarded} if forwarded else {}
    settings = settings_for(runtime.settings.home, CREDENCE_API_KEYS=API_KEY, **setting)
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        page = http.get("/console", headers=headers)
        # A browser sends a Secure cookie back only over HTTPS (httpx too): sent here by hand, as the
        # TLS proxy in front would pass it on.
        token = page_csrf(page.text)
        signed_in = http.post("/console/signin", data={"key": made["key"], "csrf": token},
                              headers={**headers, "Cookie": f"credence_console_csrf={token}"})
        api = http.get("/v1/whoami", headers={**headers, "Authorization": f"Bearer {API_KEY}"})
    assert signed_in.status_code == 303
    assert ("secure" in _cookie_flags(signed_in, SESSION)) is secure
    assert ("secure" in _cookie_flags(page, "credence_console_csrf")) is secure
    assert {"httponly", "samesite=strict", "path=/console"} <= set(_cookie_flags(signed_in, SESSION))
    for response in (page, signed_in, api):
        if secure:
            assert response.headers["strict-transport-security"] == "max-age=31536000"
        else:
            assert "strict-transport-security" not in response.headers
