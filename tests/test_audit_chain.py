"""The audit log's hash chain on SQLite and PostgreSQL: verified intact, then one row edited, one
deleted and one inserted through raw SQL (triggers lifted the way an intruder with the owner's
password would), each named by `verify` and by `credence audit verify` (exit 1, `row <id>`);
concurrent appends from several connections; the 0005 backfill and its guarded downgrade."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from credence import db
from credence.runtime import Runtime
from provenance.errors import LedgerError
from provenance.ledger import Ledger
from provenance.ledger.audit_chain import GENESIS, row_hash, signed_head, verify, verify_signed_head

from .conftest import postgres_schema


def _postgres_schema() -> Iterator[str]:
    yield from postgres_schema("credence_chain")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated ledger on each database."""
    if request.param == "sqlite":
        address = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
        db.upgrade(address)
        yield address
        return
    for address in _postgres_schema():
        db.upgrade(address)
        yield address


def _fill(url: str, rows: int = 12) -> Ledger:
    ledger = Ledger(url)
    for i in range(rows):
        with ledger.session() as s:
            ledger.audit(s, "test", "thing.done", f"subject-{i}", client_id="c1", key_id="k1", n=i,
                         nested={"b": [1, 2], "a": "é"})
    return ledger


def _raw(url: str, statement: str, **params: object) -> None:
    """Run SQL with the append-only triggers lifted, as someone with the database owner's rights could."""
    engine = create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
        else:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        conn.execute(text(statement), params)
    engine.dispose()


def _cli_verify(url: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CREDENCE_HOME=str(home), CREDENCE_DATABASE_URL=url)
    return subprocess.run([sys.executable, "-m", "credence", "audit", "verify"], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_intact_chain_verifies_and_cli_exits_0(url: str, tmp_path: Path) -> None:
    ledger = _fill(url)
    report = verify(ledger.engine)
    assert report.ok and report.rows == 12 and report.head_id == 12, report
    result = _cli_verify(url, tmp_path / "home")
    assert result.returncode == 0 and "intact: 12 rows" in result.stdout, result.stdout + result.stderr
    ledger.dispose()


@pytest.mark.parametrize("tamper", ["edit", "delete", "insert_out_of_order", "insert_rehashed"])
@pytest.mark.slow
def test_tampering_is_named(url: str, tamper: str, tmp_path: Path) -> None:
    ledger = _fill(url)
    assert verify(ledger.engine).ok
    if tamper == "edit":
        _raw(url, "UPDATE audit_log SET actor = 'someone-else' WHERE id = 5")
        row, word = 5, "edited"
    elif tamper == "delete":
        _raw(url, "DELETE FROM audit_log WHERE id = 7")
        row, word = 7, "deleted"
    elif tamper == "insert_out_of_order":
        # A row appended claiming to follow row 3 (its hash right for that claim).
        with ledger.engine.connect() as conn:
            prev = conn.execute(text("SELECT row_hash FROM audit_log WHERE id = 3")).scalar_one()
        import datetime as dt

        at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        digest = row_hash(13, at, "intruder", "thing.done", "x", {}, None, None, prev)
        _raw(url, "INSERT INTO audit_log (id, at, actor, action, subject, details, prev_hash, row_hash) "
                  "VALUES (13, :at, 'intruder', 'thing.done', 'x', '{}', :prev, :h)", at=at, prev=prev, h=digest)
        row, word = 13, "inserted"
    else:
        # A perfectly chained row appended past the head: only the recorded head gives it away.
        with ledger.engine.connect() as conn:
            prev = conn.execute(text("SELECT row_hash FROM audit_log WHERE id = 12")).scalar_one()
        import datetime as dt

        at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        digest = row_hash(13, at, "intruder", "thing.done", "x", {}, None, None, prev)
        _raw(url, "INSERT INTO audit_log (id, at, actor, action, subject, details, prev_hash, row_hash) "
                  "VALUES (13, :at, 'intruder', 'thing.done', 'x', '{}', :prev, :h)", at=at, prev=prev, h=digest)
        row, word = 13, "inserted"
    report = verify(ledger.engine)
    assert not report.ok and report.row == row and word in (report.problem or ""), report
    if not (url.startswith("sqlite") or tamper == "edit"):
        ledger.dispose()
        return  # the command is the same code; once per kind on SQLite (and once on PostgreSQL) keeps CI short
    result = _cli_verify(url, tmp_path / "home")
    assert result.returncode == 1 and f"row {row}" in result.stdout, result.stdout + result.stderr
    ledger.dispose()


def test_concurrent_appends_are_serialised(url: str) -> None:
    """Eight writers on their own connections append at once; the chain has no fork and no gap."""
    ledger = Ledger(url)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        own = Ledger(url)  # its own engine and pool, as another process would have
        try:
            for i in range(15):
                with own.session() as s:
                    own.audit(s, f"writer-{n}", "thing.done", f"{n}-{i}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    report = verify(ledger.engine)
    assert report.ok and report.rows == 120 and report.head_id == 120, report
    ledger.dispose()


APPENDER = """
import sys
from provenance.ledger import Ledger
ledger = Ledger(sys.argv[1])
for i in range(25):
    with ledger.session() as s:
        ledger.audit(s, "process-" + sys.argv[2], "thing.done", str(i))
"""


@pytest.mark.slow
def test_appends_from_several_processes_on_postgresql() -> None:
    """Four processes (as API replicas and workers would be) append at once to one PostgreSQL ledger."""
    for url in _postgres_schema():
        db.upgrade(url)
        procs = [subprocess.Popen([sys.executable, "-c", APPENDER, url, str(n)], stderr=subprocess.PIPE, text=True)
                 for n in range(4)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errors
        ledger = Ledger(url)
        report = verify(ledger.engine)
        assert report.ok and report.rows == 100 and report.head_id == 100, report
        with ledger.engine.connect() as conn:
            actors = conn.execute(text("SELECT actor, count(*) FROM audit_log GROUP BY actor")).all()
        assert sorted(n for _a, n in actors) == [25, 25, 25, 25]
        ledger.dispose()


def test_signed_head_verifies_and_a_changed_head_does_not(runtime: Runtime) -> None:
    rt = runtime
    with rt.ledger.session() as s:
        rt.ledger.audit(s, "test", "thing.done", None)
    document = signed_head(rt.ledger.engine, rt.identity)
    assert verify_signed_head(document, rt.trust_pem) and document["head"]["last_hash"] != GENESIS
    forged = json.loads(json.dumps(document))
    forged["head"]["rows"] += 1
    assert not verify_signed_head(forged, rt.trust_pem)
    # Only through the trust anchors: a CA the verifier was not given makes the same head untrusted
    # (a self-signed attacker's head: tests/test_transparency.py).
    assert not verify_signed_head(document, "")


@pytest.mark.slow
def test_migration_backfills_the_chain_keeps_triggers_and_guards_downgrade(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    db.upgrade(url, "0004")
    engine = create_engine(url)
    with engine.begin() as conn:
        for i in range(1, 6):
            conn.execute(text("INSERT INTO audit_log (id, at, actor, action, subject, details) "
                              f"VALUES ({i * 2}, CURRENT_TIMESTAMP, 'old', 'thing.done', 's{i}', '{{\"n\": {i}}}')"))
    db.upgrade(url)
    ledger = Ledger(url)
    with ledger.session() as s:
        ledger.audit(s, "new", "thing.done", "after")
    report = verify(ledger.engine)
    assert report.ok and report.rows == 6 and report.head_id == 11, report
    with pytest.raises(DBAPIError), engine.begin() as conn:  # the triggers are back
        conn.execute(text("UPDATE audit_log SET actor = 'x'"))
    monkeypatch.delenv("CREDENCE_FORCE_AUDIT_DOWNGRADE", raising=False)
    with pytest.raises(LedgerError, match="--force"):
        db.downgrade(url, "0004")
    assert db.current_revision(url) == db.head_revision()
    env = dict(os.environ, CREDENCE_HOME=str(tmp_path / "home"), CREDENCE_DATABASE_URL=url)
    refused = subprocess.run([sys.executable, "-m", "credence", "db", "downgrade", "0004"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--force" in refused.stderr and "Traceback" not in refused.stderr
    monkeypatch.setenv("CREDENCE_FORCE_AUDIT_DOWNGRADE", "1")
    assert db.downgrade(url, "0004") == "0004"
    db.upgrade(url)
    forced = subprocess.run([sys.executable, "-m", "credence", "db", "downgrade", "0004", "--force"],
                            env=env | {"CREDENCE_FORCE_AUDIT_DOWNGRADE": ""}, capture_output=True, text=True,
                            timeout=120)
    assert forced.returncode == 0 and db.current_revision(url) == "0004", forced.stderr
    engine.dispose()
    ledger.dispose()


# -- search and export on a large ledger ---------------------------------------------------------------

BIG = 100_000


@pytest.fixture(scope="module")
def big_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """100k generations, their decisions and chained audit rows (bulk-inserted as bench/audit.py does),
    served by a real server with an auditor's key and a reviewer's key."""
    from credence.app import create_app
    from credence.auth import new_key
    from credence.runtime import Runtime
    from provenance.ledger.models import Client
    from tests.support.bulk_ledger import populate

    from .conftest import LiveServer, settings_for

    settings = settings_for(tmp_path_factory.mktemp("big") / "home")
    rt = Runtime(settings)
    rt.init()
    populate(rt.ledger, BIG, seed=7)
    keys = {}
    with rt.ledger.session() as s:
        for name, scopes in (("auditor", ["audit"]), ("reviewer", ["review"])):
            client = Client(name=name)
            s.add(client)
            s.flush()
            keys[name] = new_key(s, client, scopes)[1]
    with LiveServer(create_app(settings)) as server:
        yield {"rt": rt, "url": server.url, "keys": keys}
    rt.ledger.dispose()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_export_of_100k_rows_streams_in_bounded_memory(big_ledger: dict[str, object]) -> None:
    """The full export over HTTP (server in this process): memory does not grow with the rows sent."""
    url, keys = big_ledger["url"], big_ledger["keys"]
    auditor = {"Authorization": f"Bearer {keys['auditor']}"}  # type: ignore[index]
    count, size, ids, baseline = 0, 0, set(), 0
    with httpx.Client(base_url=str(url), timeout=300) as http, \
            http.stream("GET", "/v1/audit/export", params={"format": "jsonl"}, headers=auditor) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
        for line in response.iter_lines():
            count += 1
            size += len(line)
            if count == 10_000:
                baseline = _rss_bytes()
            if count % 997 == 0:
                ids.add(json.loads(line)["id"])
        growth = _rss_bytes() - baseline
    assert count == BIG and len(ids) == BIG // 997
    # The whole export is tens of MB; after the first batches the process holds no more than before.
    assert size > 30 * 2**20 and growth < 16 * 2**20, (size, growth)
    report = verify(big_ledger["rt"].ledger.engine)  # type: ignore[attr-defined]
    assert report.ok and report.rows >= BIG


@pytest.mark.slow
def test_search_and_export_over_http_on_100k_rows(big_ledger: dict[str, object]) -> None:
    url, keys = big_ledger["url"], big_ledger["keys"]
    auditor = {"Authorization": f"Bearer {keys['auditor']}"}  # type: ignore[index]
    reviewer = {"Authorization": f"Bearer {keys['reviewer']}"}  # type: ignore[index]
    with httpx.Client(base_url=str(url), timeout=120) as http:
        assert http.get("/v1/audit/generations", headers=reviewer).status_code == 403
        assert http.get("/v1/audit/generations").status_code == 401
        head = http.get("/v1/audit/head", headers=auditor).json()
        assert head["last_id"] >= BIG and head["rows"] >= BIG and len(head["last_hash"]) == 64
        assert http.get("/v1/audit/head", headers=reviewer).status_code == 403
        # The prompt text (case-insensitive): exactly one generation is "number 99999".
        found = http.get("/v1/audit/generations", params={"prompt": "NUMBER 99999"}, headers=auditor).json()
        assert [g["prompt"].endswith("number 99999") for g in found["items"]] == [True]
        item = found["items"][0]
        by_mark = http.get("/v1/audit/generations", params={"mark": item["mark_id"]}, headers=auditor).json()
        assert [g["id"] for g in by_mark["items"]] == [item["id"]]
        # Filters combine; pages follow one another without overlap, newest first.
        params = {"action": "block", "category": "violence", "client": item["client_id"], "limit": 100}
        first = http.get("/v1/audit/generations", params=params, headers=auditor).json()
        second = http.get("/v1/audit/generations", params=params | {"cursor": first["next_cursor"]},
                          headers=auditor).json()
        assert len(first["items"]) == 100 and second["items"]
        seen = first["items"] + second["items"]
        assert len({g["id"] for g in seen}) == len(seen)
        assert all(g["client_id"] == item["client_id"] and g["status"] == "blocked" and any(
            d["action"] == "block" and d["reasons"][0]["category"] == "violence" for d in g["decisions"]) for g in seen)
        assert [g["created_at"] for g in seen] == sorted((g["created_at"] for g in seen), reverse=True)
        # Export streams: a time window of the ledger, as CSV, counted line by line as it arrives.
        window = {"since": "2026-11-10T00:00:00Z", "until": "2026-11-12T00:00:00Z", "format": "csv"}
        lines = 0
        with http.stream("GET", "/v1/audit/export", params=window, headers=auditor) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
            for _line in response.iter_lines():
                lines += 1
        assert abs((lines - 1) - BIG * 2 / 30) < 3  # two days of thirty, rows spread evenly


@pytest.mark.slow
def test_prompt_retention_redacts_to_the_hash_and_says_so(runtime: Runtime) -> None:
    import datetime as dt

    from credence.audit import REDACTED_PREFIX, SearchFilters, redact_prompts, search_generations
    from provenance.ledger import AuditEntry, prompt_digest
    from provenance.publish import PublishRequest

    rt = runtime
    old = rt.publisher.begin(PublishRequest(prompt="an old prompt", model_name="m"), status="queued")
    with rt.ledger.session() as s:
        s.execute(text("UPDATE generations SET created_at = :t WHERE id = :i"),
                  {"t": dt.datetime(2020, 1, 1, tzinfo=dt.UTC), "i": old.id})
    new = rt.publisher.begin(PublishRequest(prompt="a new prompt", model_name="m"), status="queued")
    assert redact_prompts(rt.ledger, dt.timedelta(days=30), actor="test") == 1
    items = {g["id"]: g for g in search_generations(rt.ledger, SearchFilters()).items}
    assert items[old.id]["prompt"] == REDACTED_PREFIX + prompt_digest("an old prompt")
    assert items[new.id]["prompt"] == "a new prompt"
    with rt.ledger.session() as s:
        entry = s.query(AuditEntry).filter_by(action="prompts.redacted").one()
        assert entry.details["count"] == 1
    assert verify(rt.ledger.engine).ok


@pytest.mark.slow
def test_cli_search_and_export(runtime: Runtime, tmp_path: Path) -> None:
    from provenance.publish import PublishRequest

    for prompt in ("a red circle", "a blue square", "a red triangle"):
        runtime.publisher.begin(PublishRequest(prompt=prompt, model_name="m"), status="queued")
    env = dict(os.environ, CREDENCE_HOME=str(runtime.settings.home))
    env.pop("CREDENCE_DATABASE_URL", None)
    found = subprocess.run([sys.executable, "-m", "credence", "audit", "search", "--prompt", "RED", "--json"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    items = [json.loads(line) for line in found.stdout.splitlines()]
    assert [i["prompt"] for i in items] == ["a red triangle", "a red circle"]  # newest first
    out = tmp_path / "all.csv"
    exported = subprocess.run([sys.executable, "-m", "credence", "audit", "export", "--format", "csv", "-o", str(out)],
                              env=env, capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0 and "3 rows" in exported.stdout, exported.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("id,created_at") and [line.split(",")[11] for line in lines[1:]] == [
        "a red circle", "a blue square", "a red triangle"]
    bad = subprocess.run([sys.executable, "-m", "credence", "audit", "export", "--since", "yesterday"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr
