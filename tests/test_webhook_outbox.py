"""Webhooks (issue 21): internal addresses refused at set-up and again after DNS at delivery, and delivery
through the ledger's outbox (written with the state change, signed, retried, given up, and picked up again
after the delivering process is killed mid-call).

Only loopback receivers are used. Addresses that must be refused are never connected to: literals are
refused before any socket is opened, and host names are resolved by a resolver given to the check
(a table, standing in for DNS), so nothing leaves this machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from credence.netguard import WebhookURLRefused, address_problem, check_webhook_url, resolve_target
from credence.runtime import Runtime
from credence.webhooks import Deliverer, send_once, verify_signature
from provenance.ledger import states
from provenance.ledger.models import AuditEntry, Client, Generation, WebhookOutbox, new_mark_id

CLI = [sys.executable, "-m", "credence"]
SECRET = "whsec_test_secret"


# -- a loopback receiver ------------------------------------------------------------------------------
class Receiver:
    """A loopback HTTP server that records each POST and answers with the next status of `answers`
    (the last one repeats); `stall` holds the first request open until `release` is set."""

    def __init__(self, answers: tuple[int, ...] = (200,), stall: bool = False) -> None:
        self.answers = list(answers)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.stall = stall
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append((dict(self.headers), body))
                outer.arrived.set()
                if outer.stall and len(outer.received) == 1:
                    outer.release.wait(60)
                    return  # no answer: the connection just closes
                status = outer.answers.pop(0) if len(outer.answers) > 1 else outer.answers[0]
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def table_resolver(table: dict[str, list[str]]) -> Any:
    """A resolver answering from `table` (host -> addresses), in getaddrinfo's shape; unknown names fail."""

    def resolve(host: str, port: int, **_kwargs: Any) -> list[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in table[host]]

    return resolve


# -- the address check --------------------------------------------------------------------------------
REFUSED = [
    "http://169.254.169.254/latest/meta-data/",  # cloud instance metadata (link-local)
    "http://[::1]:6379/",  # the Redis next door
    "http://127.0.0.1:8080/hook",
    "http://127.1/",  # short form of loopback
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://localhost:9000/",
    "http://10.0.0.5/", "http://172.16.3.4/", "http://192.168.1.1/", "http://100.64.1.1/",
    "http://[fc00::1]/", "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64-wrapped 169.254.169.254
    "http://[2002:7f00:1::1]/",  # 6to4-wrapped loopback
    "http://224.0.0.1/", "http://[ff02::1]/",  # multicast
    "http://0.0.0.0/", "http://240.0.0.1/", "http://255.255.255.255/",
    "ftp://example.com/hook", "file:///etc/passwd", "gopher://example.com/", "javascript:alert(1)",
    "http:///no-host", "hooks.example.com/no-scheme", "",
]


@pytest.mark.parametrize("url", REFUSED)
def test_internal_and_non_http_urls_are_refused(url: str) -> None:
    with pytest.raises(WebhookURLRefused) as caught:
        check_webhook_url(url, resolver=table_resolver({}))
    assert str(caught.value)  # says why


def test_a_name_that_resolves_inside_the_network_is_refused_and_public_ones_pass() -> None:
    resolver = table_resolver({"hooks.example.com": ["93.184.215.14"], "internal.example.com": ["10.1.2.3"],
                               "mixed.example.com": ["93.184.215.14", "127.0.0.1"]})
    assert check_webhook_url("https://hooks.example.com/h", resolver=resolver) == "https://hooks.example.com/h"
    assert check_webhook_url("https://8.8.8.8/h", resolver=resolver)
    for name in ("internal.example.com", "mixed.example.com"):  # one internal address is enough to refuse
        with pytest.raises(WebhookURLRefused, match="resolves to it"):
            check_webhook_url(f"https://{name}/h", resolver=resolver)
    with pytest.raises(WebhookURLRefused, match="does not resolve"):
        check_webhook_url("https://nowhere.example.com/h", resolver=resolver)
    # The operator's switch lets an internal receiver through (the shape is still checked).
    assert check_webhook_url("http://10.1.2.3:8080/h", allow_private=True)
    with pytest.raises(WebhookURLRefused):
        check_webhook_url("ftp://10.1.2.3/", allow_private=True)
    assert address_problem(__import__("ipaddress").ip_address("93.184.215.14")) is None


def test_rebinding_is_refused_at_delivery_and_nothing_is_sent() -> None:
    """Public when the webhook was set, loopback at delivery: the second answer is checked and refused."""
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])
    resolver_calls: list[str] = []

    def rebinding(host: str, port: int, **_kwargs: Any) -> list[tuple[Any, ...]]:
        resolver_calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in next(answers)]

    with Receiver() as receiver:
        url = f"http://rebind.example.com:{receiver.port}/hook"
        check_webhook_url(url, resolver=rebinding)  # accepted when set
        with pytest.raises(WebhookURLRefused, match=r"127\.0\.0\.1 is a loopback address"):
            send_once(url, SECRET, {"id": "x"}, resolver=rebinding)
        assert receiver.received == []
    assert resolver_calls == ["rebind.example.com", "rebind.example.com"]


def test_delivery_connects_to_the_address_it_checked() -> None:
    """The name is resolved once, by the check; the request goes to that address with the name in Host.

    `hook.invalid` cannot resolve anywhere (RFC 6761), so the call arriving proves that the HTTP
    library did not resolve the name a second time.
    """
    with Receiver() as receiver:
        url = f"http://hook.invalid:{receiver.port}/hook"
        resolver = table_resolver({"hook.invalid": ["127.0.0.1"]})
        target = resolve_target(url, allow_private=True, resolver=resolver)
        assert target.address == "127.0.0.1" and target.host_header == f"hook.invalid:{receiver.port}"
        assert send_once(url, SECRET, {"id": "g", "status": "published"}, allow_private=True,
                         resolver=resolver) == 200
    headers, body = receiver.received[0]
    assert headers["Host"] == f"hook.invalid:{receiver.port}"
    assert verify_signature(SECRET, headers["Credence-Signature"], body)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_clients_create_refuses_internal_webhooks_unless_the_operator_allows(runtime: Runtime,
                                                                            cli_env: dict[str, str]) -> None:
    for i, url in enumerate(("http://169.254.169.254/latest/meta-data/", "http://[::1]:6379/")):
        done = _cli(cli_env, "clients", "create", f"c{i}", "--webhook", url)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "points inside the network" in done.stderr + done.stdout
        assert "--allow-private-webhook" in done.stderr + done.stdout
    done = _cli(cli_env, "clients", "create", "c9", "--webhook", "ftp://example.com/x")
    assert done.returncode == 2 and "http:// or https://" in done.stderr + done.stdout
    allowed = _cli(cli_env, "clients", "create", "inside", "--webhook", "http://127.0.0.1:9/h",
                   "--allow-private-webhook", "--json")
    assert allowed.returncode == 0, allowed.stderr
    # The update path checks the same way.
    refused = _cli(cli_env, "clients", "set-webhook", "inside", "http://10.0.0.1/h")
    assert refused.returncode == 2 and "points inside the network" in refused.stderr + refused.stdout
    with runtime.ledger.session() as s:
        names = {c.name: c for c in s.scalars(select(Client))}
        assert set(names) == {"inside"} and names["inside"].webhook_allow_private
        assert names["inside"].webhook_url == "http://127.0.0.1:9/h"
    moved = _cli(cli_env, "clients", "set-webhook", "inside", "https://93.184.215.14/h", "--json")  # never called
    assert moved.returncode == 0, moved.stderr
    with runtime.ledger.session() as s:
        client = s.scalars(select(Client).where(Client.name == "inside")).one()
        assert client.webhook_url == "https://93.184.215.14/h" and not client.webhook_allow_private


# -- the outbox -----------------------------------------------------------------------------------
def _client(runtime: Runtime, url: str, *, allow_private: bool = True) -> str:
    with runtime.ledger.session() as s:
        client = Client(name=f"hooked-{new_mark_id():x}", webhook_url=url, webhook_secret=SECRET,
                        webhook_allow_private=allow_private)
        s.add(client)
        s.flush()
        return client.id


def _queued(runtime: Runtime, client_id: str) -> str:
    with runtime.ledger.session() as s:
        gen = Generation(prompt="p", prompt_sha256="0" * 64, model="m", status="queued", client_id=client_id)
        gen.mark_id = new_mark_id()
        s.add(gen)
        s.flush()
        return gen.id


def _outbox(runtime: Runtime) -> list[WebhookOutbox]:
    with runtime.ledger.session() as s:
        return list(s.scalars(select(WebhookOutbox).order_by(WebhookOutbox.id)))


def _audit(runtime: Runtime, action: str) -> list[AuditEntry]:
    with runtime.ledger.session() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_the_call_is_owed_in_the_transaction_of_the_move(runtime: Runtime) -> None:
    client_id = _client(runtime, "http://127.0.0.1:9/h")
    first, second = _queued(runtime, client_id), _queued(runtime, client_id)
    with pytest.raises(RuntimeError), runtime.ledger.session() as s:
        states.move(s, first, ("queued",), "cancelled")
        assert len(s.scalars(select(WebhookOutbox)).all()) == 1  # written with the move...
        raise RuntimeError("the unit of work fails after the move")
    assert _outbox(runtime) == []  # ...and gone with it
    with runtime.ledger.session() as s:
        states.move(s, second, ("queued",), "cancelled")
        states.move(s, first, ("queued",), "running", owner="o")  # not a status clients are told about
    rows = _outbox(runtime)
    assert [(r.generation_id, r.event) for r in rows] == [(second, "generation.cancelled")]
    assert rows[0].payload["status"] == "cancelled" and rows[0].payload["finished_at"]
    with runtime.ledger.session() as s:
        hookless = Client(name="hookless")
        s.add(hookless)
        s.flush()
        hookless_id = hookless.id
    for owner in (None, hookless_id):  # no client, or a client without a webhook: nothing owed
        gen_id = _queued(runtime, owner)  # type: ignore[arg-type]
        with runtime.ledger.session() as s:
            states.move(s, gen_id, ("queued",), "cancelled")
    assert len(_outbox(runtime)) == 1


def test_delivered_signed_and_audited(runtime: Runtime) -> None:
    with Receiver() as receiver:
        gen_id = _queued(runtime, _client(runtime, receiver.url))
        with runtime.ledger.session() as s:
            states.move(s, gen_id, ("queued",), "cancelled")
        assert Deliverer(runtime.ledger, actor="test").run_once() == 1
    headers, body = receiver.received[0]
    assert verify_signature(SECRET, headers["Credence-Signature"], body)
    assert json.loads(body) == {**json.loads(body), "id": gen_id, "status": "cancelled"}
    (row,) = _outbox(runtime)
    assert row.delivered_at is not None and row.attempts == 1 and row.lease_owner is None
    (entry,) = _audit(runtime, "webhook.delivered")
    assert entry.subject == gen_id and entry.details["attempts"] == 1
    assert Deliverer(runtime.ledger, actor="test").run_once() == 0  # nothing left


def test_retried_on_the_schedule_then_given_up(runtime: Runtime) -> None:
    backoff = (0.05, 0.1)
    with Receiver(answers=(500, 503, 200)) as flaky, Receiver(answers=(500,)) as broken:
        ok_id = _queued(runtime, _client(runtime, flaky.url))
        bad_id = _queued(runtime, _client(runtime, broken.url))
        with runtime.ledger.session() as s:
            states.move(s, ok_id, ("queued",), "cancelled")
            states.move(s, bad_id, ("queued",), "cancelled")
        deliverer = Deliverer(runtime.ledger, actor="test", backoff=backoff, poll_seconds=0.02).start()
        try:
            deadline = time.monotonic() + 20
            while any(r.delivered_at is None and r.failed_at is None for r in _outbox(runtime)):
                assert time.monotonic() < deadline, _outbox(runtime)
                time.sleep(0.05)
        finally:
            deliverer.stop()
        assert len(flaky.received) == 3 and len(broken.received) == 1 + len(backoff)
    rows = {r.generation_id: r for r in _outbox(runtime)}
    assert rows[ok_id].delivered_at is not None and rows[ok_id].attempts == 3
    assert rows[bad_id].failed_at is not None and rows[bad_id].attempts == 3
    assert "answered 500" in (rows[bad_id].last_error or "")
    assert [e.subject for e in _audit(runtime, "webhook.failed")] == [bad_id]


def test_an_internal_address_is_refused_at_delivery_without_sending(runtime: Runtime) -> None:
    """A row for a client whose webhook points inside the network (set before this check existed, or
    straight in the database) is given up at delivery; the receiver hears nothing."""
    with Receiver() as receiver:
        gen_id = _queued(runtime, _client(runtime, receiver.url, allow_private=False))
        with runtime.ledger.session() as s:
            states.move(s, gen_id, ("queued",), "cancelled")
        Deliverer(runtime.ledger, actor="test").run_once()
        assert receiver.received == []
    (row,) = _outbox(runtime)
    assert row.failed_at is not None and "loopback" in (row.last_error or "")


DELIVER_ONCE = """
import sys
from credence.webhooks import Deliverer
from provenance.ledger import Ledger
Deliverer(Ledger(sys.argv[1]), actor="doomed").run_once()
"""


@pytest.mark.slow
def test_a_delivery_in_flight_when_its_process_dies_is_sent_again(runtime: Runtime) -> None:
    with Receiver(stall=True) as receiver:
        gen_id = _queued(runtime, _client(runtime, receiver.url))
        with runtime.ledger.session() as s:
            states.move(s, gen_id, ("queued",), "cancelled")
        doomed = subprocess.Popen([sys.executable, "-c", DELIVER_ONCE, runtime.settings.database_url],
                                  env={**os.environ, "PYTHONPATH": os.getcwd()})
        try:
            assert receiver.arrived.wait(60), "the first deliverer never called"
            (row,) = _outbox(runtime)
            assert row.lease_owner and row.lease_owner.split(":")[1] == str(doomed.pid) and row.delivered_at is None
            os.kill(doomed.pid, signal.SIGKILL)  # dies mid-call, lease held
            doomed.wait(30)
        finally:
            if doomed.poll() is None:
                doomed.kill()
        # Another deliverer takes the row at once (its owner is a dead process on this host) and sends it.
        assert Deliverer(runtime.ledger, actor="survivor").run_once() == 1
        assert len(receiver.received) == 2
    (row,) = _outbox(runtime)
    assert row.delivered_at is not None and row.attempts == 2
    first, second = receiver.received
    assert first[1] == second[1]  # the same call, sent again
    assert verify_signature(SECRET, second[0]["Credence-Signature"], second[1])


def test_an_expired_lease_of_another_host_is_taken_over(runtime: Runtime) -> None:
    """A lease held by a process on another machine is not taken while it runs, and is once it expires."""
    with Receiver() as receiver:
        gen_id = _queued(runtime, _client(runtime, receiver.url))
        with runtime.ledger.session() as s:
            states.move(s, gen_id, ("queued",), "cancelled")
        elsewhere = Deliverer(runtime.ledger, actor="other", owner="other-host:1:abcd", lease_seconds=0.3)
        from provenance.ledger.outbox import claim_due

        with runtime.ledger.session() as s:
            assert len(claim_due(s, elsewhere.owner, 0.3)) == 1  # claimed, then that machine went quiet
        here = Deliverer(runtime.ledger, actor="here")
        assert here.run_once() == 0 and receiver.received == []
        time.sleep(0.4)
        assert here.run_once() == 1 and len(receiver.received) == 1


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """A migrated ledger on each database."""
    from credence import db

    from .conftest import postgres_schema

    if request.param == "sqlite":
        address = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
        db.upgrade(address)
        yield address
        return
    for address in postgres_schema("credence_outbox"):
        db.upgrade(address)
        yield address


def test_two_deliverers_never_claim_one_row_twice(ledger_url: str) -> None:
    """Claims race on each database: every due row goes to exactly one of the racing deliverers."""
    from provenance.ledger import Ledger
    from provenance.ledger.outbox import claim_due

    ledger = Ledger(ledger_url)
    try:
        with ledger.session() as s:
            client = Client(name="racer", webhook_url="http://127.0.0.1:9/h", webhook_secret=SECRET)
            s.add(client)
            s.flush()
            for _ in range(40):
                gen = Generation(prompt="p", prompt_sha256="0" * 64, model="m", status="queued", client_id=client.id)
                gen.mark_id = new_mark_id()
                s.add(gen)
                s.flush()
                states.move(s, gen.id, ("queued",), "cancelled")
        claimed: dict[str, list[int]] = {}
        barrier = threading.Barrier(4)

        def unleased() -> int:
            with ledger.session() as s:
                return len(s.scalars(select(WebhookOutbox.id).where(WebhookOutbox.lease_owner.is_(None))).all())

        def claim(owner: str) -> None:
            barrier.wait()
            mine: list[int] = []
            for _ in range(200):  # racing deliverers often lose a row to another: go on until none is left
                with ledger.session() as s:
                    mine += [d.id for d in claim_due(s, owner, 60, limit=3)]
                if not unleased():
                    break
            claimed[owner] = mine

        threads = [threading.Thread(target=claim, args=(f"host:{i}:x",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        every = [row for rows in claimed.values() for row in rows]
        assert len(every) == len(set(every)) == 40, claimed
        with ledger.session() as s:
            rows = s.scalars(select(WebhookOutbox)).all()
            assert all(r.attempts == 1 and r.lease_owner in claimed for r in rows)
    finally:
        ledger.dispose()
