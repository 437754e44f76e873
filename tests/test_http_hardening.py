"""The HTTP layer under hostile and broken conditions, over a real uvicorn server with raw sockets and httpx:
malformed multipart is 400, an over-limit chunked body is 413 without being read to its end, a stalled
body is answered within the body timeout, full gates answer 503 with Retry-After, and no error body
leaks a password, a database URL's parts, a driver message or a server path."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from credence import app as app_module
from credence import errors as errors_module
from credence.app import create_app
from credence.deps import Busy, Gate, WorkTimeout
from credence.routes.uploads import DRAIN_BYTES, ENVELOPE_BYTES

from .conftest import API_KEY, POSTGRES_URL, LiveServer, make_clip, settings_for

LIMIT = 1_000_000
BODY_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One verification at a time and no queue, a 1 MB upload limit and a 1.5 s body timeout."""
    from credence.runtime import Runtime

    home = tmp_path_factory.mktemp("hardening") / "home"
    runtime = Runtime(settings_for(home))
    runtime.init()
    settings = settings_for(home, CREDENCE_API_KEYS=API_KEY, CREDENCE_MAX_UPLOAD_BYTES=LIMIT,
                            CREDENCE_BODY_TIMEOUT=BODY_TIMEOUT, CREDENCE_VERIFY_CONCURRENCY=1,
                            CREDENCE_VERIFY_QUEUE=0, CREDENCE_QUEUE_TIMEOUT=2)
    with LiveServer(create_app(settings)) as live:
        yield live
    runtime.ledger.dispose()


def client(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": API_KEY})


def raw_request(server: LiveServer, head: str) -> socket.socket:
    """A connected socket that has sent `head` (request line and headers, CRLF-terminated)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(head.encode())
    return sock


def read_response(sock: socket.socket, timeout: float) -> bytes:
    """Whatever the server answers within `timeout` (until it closes, or the headers and a short body arrived)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"] and isinstance(body["detail"], str)
    return body


# -- malformed multipart ---------------------------------------------------------------------------
@pytest.mark.parametrize(("content_type", "body"), [
    ("multipart/form-data; boundary=XyZ", b"this is not multipart at all" * 10),
    ("multipart/form-data; boundary=XyZ", b'--XyZ\r\nContent-Disposition: form-data; name="file"; '
                                          b'filename="a.mp4"\r\n\r\nabc'),  # truncated: no closing boundary
    ("multipart/form-data; boundary=XyZ", b"--XyZ\r\nno-colon-header\r\n\r\nabc\r\n--XyZ--\r\n"),
    ("multipart/form-data", b"--XyZ\r\n\r\n--XyZ--\r\n"),  # no boundary parameter
    ("multipart/form-data; boundary=" + "b" * 71, b"--" + b"b" * 71 + b"--\r\n"),  # boundary too long
    ("multipart/form-data; boundary=\"a\x7fb\"", b"--a\x7fb--\r\n"),  # a control character
], ids=["garbage", "truncated", "bad-part-header", "no-boundary", "long-boundary", "control-boundary"])
def test_malformed_multipart_is_400(server: LiveServer, content_type: str, body: bytes) -> None:
    with client(server) as c:
        for route in ("/v1/verify", "/matches/byContent"):
            problem = assert_problem(c.post(route, content=body, headers={"Content-Type": content_type}), 400)
            assert "multipart" in problem["detail"]
        assert c.get("/healthz").json() == {"status": "ok"}


def test_form_without_file_names_the_field(server: LiveServer) -> None:
    with client(server) as c:
        problem = assert_problem(c.post("/v1/verify", files={"note": (None, "no file")}), 422)
    assert problem["errors"] == [{"field": "file", "location": "body",
                                  "message": "the form has no file part (send the clip as field `file`)"}]


# -- every byte counts ---------------------------------------------------------------------------
def test_chunked_body_over_the_limit_is_413_without_reading_it_all(server: LiveServer) -> None:
    """A small file part, then a text field that never ends, sent chunked: refused once the body
    passes the limit, after at most DRAIN_BYTES more are read."""
    boundary = "hardeningboundary"
    sock = raw_request(server, f"POST /v1/verify HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n"
                               f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n")
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'
            + "v" * 1000 + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\n').encode()
    filler = b"x" * 65536
    sent = 0
    stop = threading.Event()

    def send_forever() -> None:
        nonlocal sent
        try:
            for piece in [head] + [filler] * 100_000:  # 6.5 GB unless the server stops us
                if stop.is_set():
                    return
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
        except OSError:
            return  # the server closed the connection

    sender = threading.Thread(target=send_forever, daemon=True)
    started = time.monotonic()
    sender.start()
    answer = read_response(sock, timeout=60)
    stop.set()
    sender.join(timeout=10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"application/problem+json" in answer
    # The server read the limit, its envelope and at most the drain budget; what else went out sat in socket buffers.
    assert sent < LIMIT + ENVELOPE_BYTES + DRAIN_BYTES + 16 * 1024 * 1024, sent
    assert time.monotonic() - started < 30


def test_declared_body_over_the_limit_is_413_at_once(server: LiveServer) -> None:
    """Not chunked: a Content-Length over the limit plus the envelope is refused before the body is read."""
    with client(server) as c:
        files = {"file": ("a.mp4", b"v" * 1000, "video/mp4"), "note": (None, "x" * (LIMIT + ENVELOPE_BYTES))}
        assert_problem(c.post("/v1/verify", files=files), 413)
        # The file part alone over the limit, even when the body is inside limit + envelope.
        assert_problem(c.post("/v1/verify", files={"file": ("a.mp4", b"v" * (LIMIT + 10), "video/mp4")}), 413)
        assert_problem(c.post("/v1/verify", content=b"v" * (LIMIT + 1), headers={"Content-Type": "video/mp4"}), 413)


# -- a body that stops arriving ----------------------------------------------------------------------
@pytest.mark.parametrize(("route", "content_type"), [("/v1/verify", "video/mp4"),
                                                      ("/v1/verify", "multipart/form-data; boundary=b"),
                                                      ("/v1/moderations", "application/json")])
def test_stalled_body_is_answered_within_the_body_timeout(server: LiveServer, route: str, content_type: str) -> None:
    sock = raw_request(server, f"POST {route} HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n"
                               f"Content-Type: {content_type}\r\nContent-Length: 500000\r\n\r\n")
    sock.sendall(b"--b\r\n" if "multipart" in content_type else b'{"prompt": "a')
    started = time.monotonic()
    answer = read_response(sock, timeout=BODY_TIMEOUT + 10)
    elapsed = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"connection: close" in answer.lower()
    assert BODY_TIMEOUT - 0.2 < elapsed < BODY_TIMEOUT + 5, elapsed


# -- bounded concurrency --------------------------------------------------------------------------
def test_full_verify_gate_answers_503_with_retry_after_at_once(server: LiveServer, tmp_path: Path) -> None:
    """The one verify slot is held by an upload that is still arriving; the next is refused at once."""
    holder = raw_request(server, f"POST /v1/verify HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n"
                                 "Content-Type: video/mp4\r\nContent-Length: 500000\r\n\r\n")
    holder.sendall(b"\0" * 1000)
    time.sleep(0.3)  # the holder is admitted
    clip = make_clip(tmp_path / "clip.mp4", frames=6)
    with client(server) as c:
        started = time.monotonic()
        for route in ("/v1/verify", "/matches/byContent"):  # one gate for both: the same decoding work
            busy = c.post(route, files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")})
            problem = assert_problem(busy, 503)
            assert int(busy.headers["retry-after"]) >= 1 and problem["type"].endswith(":busy")
        assert time.monotonic() - started < 2
        assert read_response(holder, timeout=BODY_TIMEOUT + 10).startswith(b"HTTP/1.1 408")
        holder.close()
        ok = c.post("/v1/verify", files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")})
        assert ok.status_code == 200, ok.text  # the slot came back


def test_gate_times_out_work_but_keeps_its_slot_until_the_thread_ends() -> None:
    gate = Gate("test", 1, 1, queue_timeout=0.3, run_timeout=0.3)
    release = threading.Event()

    async def scenario() -> None:
        with gate.admit() as ticket:
            with pytest.raises(WorkTimeout):
                await ticket.run(release.wait, 10)
        # The timed-out job still runs: it holds the only slot, so a queued job cannot start in time...
        with gate.admit() as ticket:
            with pytest.raises(Busy):
                await ticket.run(lambda: "never")
        assert gate.in_flight == 1  # the abandoned job, until it ends
        # ...and with the one queue place taken too, the next is refused before it waits.
        waiting = gate.admit()
        with pytest.raises(Busy):
            gate.admit()
        waiting.__exit__(None, None, None)
        release.set()
        for _ in range(100):
            if gate.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        with gate.admit() as ticket:
            assert await ticket.run(lambda: "ran") == "ran"
        assert gate.in_flight == 0

    asyncio.run(scenario())


# -- no leaks -------------------------------------------------------------------------------------
LEDGER_ROUTES = [("GET", "/v1/generations/some-id"), ("GET", "/v1/generations/some-id/video"),
                 ("GET", "/manifests/urn:c2pa:some-manifest"),
                 ("GET", "/matches/byBinding?alg=org.credence.watermark.v1&value=AAAAAAAAAAA%3D"),
                 ("GET", "/readyz")]


def _answers(database_url: str, home: Path) -> list[httpx.Response]:
    settings = settings_for(home, CREDENCE_API_KEYS=API_KEY, CREDENCE_DATABASE_URL=database_url)
    with LiveServer(create_app(settings)) as live, client(live) as c:
        return [c.request(method, path) for method, path in LEDGER_ROUTES]


@pytest.mark.parametrize("kind", ["driver-not-installed", "postgres-closed-port"])
def test_database_trouble_is_503_without_secrets(kind: str, tmp_path: Path) -> None:
    if kind == "driver-not-installed":
        url = "mysql+nosuchdriver://credenceuser:SECRETPW-1a2b@dbhost.example:3307/ledgerdb"
        secrets = ["SECRETPW-1a2b", "credenceuser", "dbhost.example", "3307", "ledgerdb", "nosuchdriver", "mysql"]
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
        url = f"postgresql+psycopg://pguser:PGSECRET-9z8y@127.0.0.1:{port}/pgledger"
        secrets = ["PGSECRET-9z8y", "pguser", "127.0.0.1", str(port), "pgledger", "psycopg", "postgresql"]
    from credence.runtime import Runtime

    Runtime(settings_for(tmp_path / "home")).init()  # keys exist: only the database is wrong
    for response in _answers(url, tmp_path / "home"):
        problem = assert_problem(response, 503)
        text = response.text + str(response.headers)
        leaked = [s for s in secrets if s.lower() in text.lower()]
        assert not leaked, (leaked, response.request.url.path, text)
        assert str(tmp_path) not in text
        if response.request.url.path == "/readyz":
            assert problem["checks"]["ledger"]["ok"] is False and problem["checks"]["keys"]["ok"] is True


def test_corrupt_upload_422_has_no_server_path(server: LiveServer, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=6).read_bytes()
    corrupt = clip[:200] + b"\xff" * 3000 + clip[-500:]
    with client(server) as c:
        for name, data in (("corrupt.mp4", corrupt), ("notes.txt", b"not a video\n" * 50), ("x.mov", clip[:900])):
            response = c.post("/v1/verify", files={"file": (name, data, "application/octet-stream")})
            problem = assert_problem(response, 422)
            for needle in ("credence-upload", tempfile.gettempdir(), str(tmp_path), "/tmp/"):
                assert needle not in response.text, (needle, response.text)
            assert problem["detail"]


def test_every_error_is_a_problem(server: LiveServer) -> None:
    with client(server) as c:
        assert_problem(c.get("/no/such/route"), 404)
        not_allowed = assert_problem(c.delete("/matches/byBinding"), 405)
        assert not_allowed and c.delete("/matches/byBinding").headers["allow"] == "GET, POST"
        assert_problem(httpx.get(f"{server.url}/v1/whoami"), 401)
        bad_json = assert_problem(c.post("/v1/moderations", content=b"{not json",
                                         headers={"Content-Type": "application/json"}), 400)
        assert bad_json["type"].endswith(":invalid-json")
        invalid = assert_problem(c.post("/v1/generations", json={"prompt": "a", "steps": 101, "frames": 10}), 422)
        assert {e["field"] for e in invalid["errors"]} == {"steps", "frames"}
        assert_problem(c.get("/matches/byBinding", params={"alg": "x", "value": "!!"}), 400)


def test_a_missing_shipped_part_stops_the_app_at_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(app_module, "SHIPPED_MODULES", (*app_module.SHIPPED_MODULES, "credence_part_not_installed"))
    with pytest.raises(RuntimeError, match="credence_part_not_installed"):
        create_app(settings_for(tmp_path / "home"))


def test_readyz_names_every_check(server: LiveServer) -> None:
    ready = httpx.get(f"{server.url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert {name for name, check in ready.json()["checks"].items() if check["ok"]} == {
        "ledger", "keys", "moderation", "generator"}


def test_postgres_url_is_scrubbed_by_the_one_handler() -> None:
    """The scrubber itself, on the messages drivers really produce."""
    settings = settings_for(Path("/srv/credence-home"), CREDENCE_DATABASE_URL=POSTGRES_URL.replace(
        "postgres@", "postgres:hunter2@"))
    message = ('connection to server at "127.0.0.1", port 5432 failed: FATAL: password authentication failed '
               'for user "postgres" (postgresql+psycopg://postgres:hunter2@127.0.0.1:5432/test) in '
               "/srv/credence-home/ledger.sqlite3 and /tmp/credence-upload-abc123.mp4: bad")
    clean = errors_module.scrub(message, settings)
    for secret in ("hunter2", "127.0.0.1", "5432", "/srv/credence-home", "credence-upload", "psycopg"):
        assert secret not in clean, (secret, clean)
    assert clean.endswith("the upload: bad")


def test_a_query_parameter_given_twice_is_refused(live_server) -> None:
    import httpx

    from .conftest import API_KEY

    with httpx.Client(base_url=live_server.url, timeout=30, headers={"X-API-Key": API_KEY}) as client:
        answer = client.get("/v1/generations", params=[("limit", "5"), ("limit", "6")])
        assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "limit"
        once = client.get("/v1/generations", params={"limit": "5"})
        assert once.status_code == 200
        resolution = client.get("/matches/byBinding", params=[("alg", "a"), ("alg", "b"), ("value", "x")])
        assert resolution.status_code == 400  # the C2PA resolution API's own status for a bad request
