"""The audit log as an RFC 9162 transparency log.

Proofs are checked against an independent implementation written here from the RFC's
definitions (recursive MTH, PATH, PROOF/SUBPROOF of §2.1; a verifier that folds a path by the
same recursion), for every size 1..70 and random larger ones, on leaves read from a real ledger.
Then the attacks of issue 21, finding 3, each against the real `credence audit verify --anchor`:
rows cut from the end with the chain head rewritten or deleted, a row edited with every later
hash recomputed, and heads signed by an attacker's certificates, each exits 1 naming the first
inconsistent checkpoint, where plain `audit verify` still passes; a clean log exits 0. Last, the
HTTP head and a published clip's proof, fetched from a running server, verify with this file's
own code.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, text

from credence.runtime import Runtime
from provenance.errors import LedgerError
from provenance.keys import SigningIdentity
from provenance.ledger import transparency as tl
from provenance.ledger.audit_chain import row_hash, signed_head, verify_signed_head
from provenance.ledger.checkpoints import (
    HeadInvalid,
    fresh_head,
    sign_tree_head,
    verify_anchored,
    verify_tree_head,
    write_checkpoint,
)
from provenance.trust import UntrustedSigner, verify_path

from .conftest import LiveServer, make_clip, settings_for


# -- RFC 9162 §2.1, written from the text --------------------------------------------------------
def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def k_of(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) over leaf *inputs*."""
    if not leaves:
        return sha(b"")
    if len(leaves) == 1:
        return sha(b"\x00" + leaves[0])
    k = k_of(len(leaves))
    return sha(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = k_of(len(leaves))
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if b else [ref_mth(leaves)]
    k = k_of(n)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], b), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def ref_root_from_path(index: int, size: int, leaf_hash: bytes, path: list[bytes]) -> bytes | None:
    """The root a PATH implies, by the recursion that defines PATH (None when the path has the wrong length)."""
    if size == 1:
        return leaf_hash if not path else None
    if not path:
        return None
    k = k_of(size)
    if index < k:
        left = ref_root_from_path(index, k, leaf_hash, path[:-1])
        return None if left is None else sha(b"\x01" + left + path[-1])
    right = ref_root_from_path(index - k, size - k, leaf_hash, path[:-1])
    return None if right is None else sha(b"\x01" + path[-1] + right)


def ref_leaf_inputs(url: str) -> list[bytes]:
    """Each audit row's leaf input as the documented encoding, built here from the raw table."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, at, action, subject, row_hash FROM audit_log ORDER BY id")).all()
    engine.dispose()
    out = []
    for entry_id, at, action, subject, digest in rows:
        if isinstance(at, str):  # SQLite hands back text through a raw query
            at = dt.datetime.fromisoformat(at)
        at = at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out.append(json.dumps([1, entry_id, stamp, action, subject, digest], separators=(",", ":")).encode())
    return out


def _fill(rt: Runtime, rows: int, prefix: str = "s") -> None:
    for i in range(rows):
        with rt.ledger.session() as s:
            rt.ledger.audit(s, "test", "thing.done", f"{prefix}-{i}", client_id="c1", n=i, note="é")


# -- proofs against the reference ------------------------------------------------------------------
def test_proofs_equal_the_rfc_for_every_size_to_70(runtime: Runtime) -> None:
    _fill(runtime, 70 - tl.log_size(runtime.ledger.engine))
    engine, url = runtime.ledger.engine, runtime.settings.database_url
    leaves = ref_leaf_inputs(url)
    assert len(leaves) == 70
    hashes = [sha(b"\x00" + d) for d in leaves]
    cache = tl.TreeCache(engine, block_bits=2)  # blocks of 4: partial blocks at both edges of most ranges
    cache.extend()
    assert [tl.leaf_hash(d) for d in leaves] == hashes
    for n in range(1, 71):
        root = ref_mth(leaves[:n])
        assert tl.stream_root(engine, n) == (n, root) and cache.root(n) == root
        for m in range(n):  # every inclusion proof, pure ranges; from the ledger for a spread of leaves
            path = [tl.mth(hashes[a:b]) for a, b in tl.inclusion_ranges(m, n)]
            assert path == ref_path(m, leaves[:n]), (m, n)
            assert tl.verify_inclusion(hashes[m], m, n, path, root)
            assert ref_root_from_path(m, n, hashes[m], path) == root
            if m in (0, n // 2, n - 1):
                assert tl.inclusion_proof(engine, m, n, cache) == path
            if m in (0, n - 1):
                assert tl.inclusion_proof(engine, m, n) == path  # streaming, no cache
            if n > 1:  # the wrong leaf, or a path cut short, does not verify
                assert not tl.verify_inclusion(hashes[(m + 1) % n], m, n, path, root)
                assert not tl.verify_inclusion(hashes[m], m, n, path[:-1], root)
        for m in range(1, n + 1):
            proof = [tl.mth(hashes[a:b]) for a, b in tl.consistency_ranges(m, n)]
            assert proof == (ref_subproof(m, leaves[:n], True) if m < n else []), (m, n)
            assert tl.verify_consistency(m, n, ref_mth(leaves[:m]), root, proof), (m, n)
            if m in (1, n // 3, n - 1) and m < n:
                assert tl.consistency_proof(engine, m, n, cache) == proof
                assert tl.consistency_proof(engine, m, n) == proof
                assert not tl.verify_consistency(m, n, ref_mth(leaves[:m]), root, proof[:-1])
                other = ref_mth([b"x", *leaves[1:m]])
                assert not tl.verify_consistency(m, n, other, root, proof)


def test_random_large_sizes_against_the_rfc() -> None:
    rng = random.Random(21)
    leaves = [rng.randbytes(20) for _ in range(3000)]
    hashes = [tl.leaf_hash(d) for d in leaves]
    for _ in range(40):
        n = rng.randint(71, 3000)
        root = ref_mth(leaves[:n])
        assert tl.mth(hashes[:n]) == root
        m = rng.randrange(n)
        path = [tl.mth(hashes[a:b]) for a, b in tl.inclusion_ranges(m, n)]
        assert path == ref_path(m, leaves[:n]) and tl.verify_inclusion(hashes[m], m, n, path, root)
        old = rng.randint(1, n - 1)
        proof = [tl.mth(hashes[a:b]) for a, b in tl.consistency_ranges(old, n)]
        assert proof == ref_subproof(old, leaves[:n], True)
        assert tl.verify_consistency(old, n, ref_mth(leaves[:old]), root, proof)
        assert not tl.verify_consistency(old, n, ref_mth(leaves[:old]), ref_mth(leaves[: n - 1]), proof)


# -- signers ---------------------------------------------------------------------------------------
def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          *, ca: bool, days: int = 30) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    name = lambda cn: x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Credence development"),  # noqa: E731
                                 x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    usage = (x509.KeyUsage(False, False, False, False, False, True, True, False, False) if ca else
             x509.KeyUsage(True, False, False, False, False, False, False, False, False))
    return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage, critical=True).sign(issuer_key, hashes.SHA256()))


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _identity(leaf_key: ec.EllipticCurvePrivateKey, *certs: x509.Certificate) -> SigningIdentity:
    key_pem = leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    return SigningIdentity(_pem(*certs), key_pem=key_pem)


def attacker_identities() -> dict[str, SigningIdentity]:
    """A self-signed signer, and a look-alike CA (the development CA's very names) with its leaf."""
    key = ec.generate_private_key(ec.SECP256R1())
    self_signed = _cert("Credence Development Signer", key, "Credence Development Signer", key, ca=False)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Credence Development Root CA", ca_key, "Credence Development Root CA", ca_key, ca=True)
    leaf = _cert("Credence Development Signer", leaf_key, "Credence Development Root CA", ca_key, ca=False)
    return {"self_signed": _identity(key, self_signed), "look_alike_ca": _identity(leaf_key, leaf, ca)}


def test_signed_heads_verify_only_through_the_trust_anchors(runtime: Runtime) -> None:
    _fill(runtime, 3)
    engine, anchors = runtime.ledger.engine, runtime.trust_pem
    document = fresh_head(engine, runtime.identity)
    head = verify_tree_head(document, anchors)
    assert head.size == tl.log_size(engine) and head.root == tl.stream_root(engine)[1]
    altered = json.loads(json.dumps(document))
    altered["tree_head"]["tree_size"] -= 1
    with pytest.raises(HeadInvalid, match="altered"):
        verify_tree_head(altered, anchors)
    for name, identity in attacker_identities().items():
        forged = sign_tree_head(head.size, head.root, identity)
        with pytest.raises(HeadInvalid, match="not trusted"):
            verify_tree_head(forged, anchors)
        # The audit chain's own signed head (finding 3): the carried certificate alone is not trusted.
        chain_doc = signed_head(engine, identity)
        assert verify_signed_head(signed_head(engine, runtime.identity), anchors), name
        assert not verify_signed_head(chain_doc, anchors), name
    with pytest.raises(HeadInvalid, match="no trust anchors"):
        verify_tree_head(document, "")


def test_a_production_chain_through_an_intermediate(runtime: Runtime) -> None:
    """A root given in CREDENCE_TRUST_ANCHORS, an intermediate carried in the chain, a signer below it."""
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _cert("Prod Root", root_key, "Prod Root", root_key, ca=True)
    mid = _cert("Prod Issuing CA", mid_key, "Prod Root", root_key, ca=True)
    leaf = _cert("Prod Signer", leaf_key, "Prod Issuing CA", mid_key, ca=False)
    identity = _identity(leaf_key, leaf, mid)
    document = sign_tree_head(0, tl.EMPTY_ROOT, identity)
    anchors = runtime.trust_pem + _pem(root).decode()
    assert verify_tree_head(document, anchors).size == 0
    with pytest.raises(HeadInvalid, match="not trusted"):
        verify_tree_head(document, runtime.trust_pem)  # without the production root
    with pytest.raises(UntrustedSigner, match="not a CA"):  # a leaf cannot issue
        rogue_key = ec.generate_private_key(ec.SECP256R1())
        rogue = _cert("Rogue", rogue_key, "Prod Signer", leaf_key, ca=False)
        verify_path(_pem(rogue, leaf, mid), anchors, at=dt.datetime.now(dt.UTC))
    with pytest.raises(UntrustedSigner, match="not valid at"):
        verify_path(_pem(leaf, mid), anchors, at=dt.datetime.now(dt.UTC) + dt.timedelta(days=400))
    with pytest.raises(UntrustedSigner, match="CA certificate"):
        verify_path(_pem(mid), anchors, at=dt.datetime.now(dt.UTC))


def test_checkpoints_are_never_overwritten(runtime: Runtime, tmp_path: Path) -> None:
    document = fresh_head(runtime.ledger.engine, runtime.identity)
    first = write_checkpoint(tmp_path / "cp", document)
    with pytest.raises(LedgerError, match="never overwritten"):
        write_checkpoint(tmp_path / "cp", document)
    assert json.loads(first.read_text()) == document
    assert [p.name for p in (tmp_path / "cp").iterdir()] == [first.name]  # no temporary file left behind


# -- the attacks, through the real command ---------------------------------------------------------
def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CREDENCE_HOME=str(home))
    env.pop("CREDENCE_DATABASE_URL", None)
    env.pop("CREDENCE_TRUST_ANCHORS", None)
    return subprocess.run([sys.executable, "-m", "credence", *args], env=env, capture_output=True, text=True,
                          timeout=180)


def _raw(url: str, *statements: tuple[str, dict[str, object]]) -> None:
    """SQL with the append-only triggers lifted, as someone with the database owner's rights could."""
    engine = create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
        else:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        for statement, params in statements:
            conn.execute(text(statement), params)
    engine.dispose()


def _rows(url: str) -> list[tuple]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, at, actor, action, subject, details, client_id, key_id, prev_hash, "
                                 "row_hash FROM audit_log ORDER BY id")).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def _rewrite(url: str, row: int) -> None:
    """Edit one row's details and recompute every later hash and the head: the chain still verifies."""
    statements: list[tuple[str, dict[str, object]]] = []
    prev = None
    for entry_id, at, actor, action, subject, details, client, key, prev_hash, _digest in _rows(url):
        details = json.loads(details) if isinstance(details, str) else details
        if isinstance(at, str):
            at = dt.datetime.fromisoformat(at)
        if entry_id == row:
            details = details | {"n": 999}
        if entry_id >= row:
            prev_hash = prev if prev is not None else prev_hash
            digest = row_hash(entry_id, at, actor, action, subject, details, client, key, prev_hash)
            cast = "CAST(:d AS JSON)" if url.startswith("postgresql") else ":d"
            statements.append((f"UPDATE audit_log SET details = {cast}, prev_hash = :p, row_hash = :h WHERE id = :i",
                               {"d": json.dumps(details), "p": prev_hash, "h": digest, "i": entry_id}))
            prev = digest
    statements.append(("UPDATE audit_chain_head SET last_hash = :h WHERE id = 1", {"h": prev}))
    _raw(url, *statements)


@pytest.fixture
def anchored(runtime: Runtime, tmp_path: Path) -> dict[str, object]:
    """A log with two checkpoints written by `credence audit checkpoint`, and rows after each."""
    home, folder = runtime.settings.home, tmp_path / "checkpoints"
    _fill(runtime, 20, "a")
    first = _cli(home, "audit", "checkpoint", "--out", str(folder), "--json")
    assert first.returncode == 0, first.stderr
    _fill(runtime, 6, "b")
    second = _cli(home, "audit", "checkpoint", "--out", str(folder))
    assert second.returncode == 0 and "checkpoint checkpoint-" in second.stdout, second.stderr
    _fill(runtime, 4, "c")
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 2 and json.loads(first.stdout)["file"].endswith(files[0])
    return {"home": home, "folder": folder, "files": files, "url": runtime.settings.database_url,
            "sizes": [json.loads((folder / f).read_text())["tree_head"]["tree_size"] for f in files]}


@pytest.mark.slow
def test_a_clean_log_verifies_against_its_checkpoints(anchored: dict[str, object]) -> None:
    home, folder, files = anchored["home"], anchored["folder"], anchored["files"]
    result = _cli(home, "audit", "verify", "--anchor", str(folder))  # type: ignore[arg-type]
    assert result.returncode == 0 and "consistent with 2 checkpoint" in result.stdout, result.stdout + result.stderr
    one = _cli(home, "audit", "verify", "--anchor", str(folder / files[0]), "--json")  # type: ignore[index,operator]
    assert one.returncode == 0 and json.loads(one.stdout)["checkpoints"] == 1, one.stdout + one.stderr


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["truncate_rewrite_head", "truncate_delete_head", "rewrite", "forged_signer",
                                    "forged_look_alike_ca"])
def test_attacks_exit_1_naming_the_first_inconsistency(anchored: dict[str, object], runtime: Runtime,
                                                      attack: str) -> None:
    home, folder, files, url = anchored["home"], anchored["folder"], anchored["files"], str(anchored["url"])
    sizes: list[int] = anchored["sizes"]  # type: ignore[assignment]
    rows = _rows(url)
    if attack.startswith("truncate"):
        keep = rows[sizes[0] - 3]  # cut back below the first checkpoint
        cut = [("DELETE FROM audit_log WHERE id > :i", {"i": keep[0]})]
        if attack == "truncate_rewrite_head":
            cut.append(("UPDATE audit_chain_head SET last_id = :i, last_hash = :h, row_count = :n WHERE id = 1",
                        {"i": keep[0], "h": keep[9], "n": sizes[0] - 2}))
        else:
            cut.append(("DELETE FROM audit_chain_head", {}))
        _raw(url, *cut)
        first_bad, words = files[0], "cut back"  # type: ignore[index]
    elif attack == "rewrite":
        _rewrite(url, rows[sizes[0] - 5][0])
        first_bad, words = files[0], "rewritten"  # type: ignore[index]
    else:
        # The attacker rewrites the log and signs a fresh checkpoint of it with their own certificate.
        _rewrite(url, rows[sizes[1] + 1][0])
        identity = attacker_identities()["self_signed" if attack == "forged_signer" else "look_alike_ca"]
        head = fresh_head(runtime.ledger.engine, identity)
        forged = folder / f"{files[1][:-5]}-z.json"  # type: ignore[index,operator]
        forged.write_text(json.dumps(head))
        first_bad, words = forged.name, "signer not trusted"
    plain = _cli(home, "audit", "verify")  # type: ignore[arg-type]
    assert plain.returncode == 0, plain.stdout  # what finding 3 reported: the chain alone passes
    result = _cli(home, "audit", "verify", "--anchor", str(folder))  # type: ignore[arg-type]
    out = result.stdout + result.stderr
    assert result.returncode == 1 and f"checkpoint {first_bad}" in out and words in out, out
    report = verify_anchored(runtime.ledger.engine, runtime.trust_pem, folder)  # type: ignore[arg-type]
    assert not report.ok and report.checkpoint == first_bad, report
    if attack == "rewrite":  # the cron job refuses to anchor the rewritten log, and says so
        refused = _cli(home, "audit", "checkpoint", "--out", str(folder))  # type: ignore[arg-type]
        assert refused.returncode == 1 and "not consistent with checkpoint" in refused.stderr, refused.stderr
        assert len(list(folder.iterdir())) == 2  # type: ignore[attr-defined]


# -- over HTTP, from a running server --------------------------------------------------------------
def _check_head_signature(document: dict, ca_pem: bytes) -> None:
    """This test's own check: the carried leaf was issued by the deployment's CA and signed the head."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    leaf = x509.load_pem_x509_certificates(document["certificate_chain"].encode())[0]
    leaf.verify_directly_issued_by(ca)
    message = json.dumps(document["tree_head"], sort_keys=True, separators=(",", ":")).encode()
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(base64.b64decode(document["signature"]), message, ec.ECDSA(hashes.SHA256()))


@pytest.mark.slow
def test_http_head_and_publish_proof_verify_offline(runtime: Runtime, tmp_path: Path) -> None:
    from credence.app import create_app
    from provenance.publish import PublishRequest

    out = runtime.settings.outputs_dir / "clip.mp4"
    out.parent.mkdir(parents=True, exist_ok=True)
    published = runtime.publisher.publish_file(make_clip(tmp_path / "src.mp4"), out,
                                               PublishRequest(prompt="a red circle moving left", model_name="m"))
    queued = runtime.publisher.begin(PublishRequest(prompt="not yet", model_name="m"), status="blocked")
    _fill(runtime, 5)
    ca_pem = (runtime.settings.keys_dir / "ca.pem").read_bytes()
    with LiveServer(create_app(settings_for(runtime.settings.home))) as server, \
            httpx.Client(base_url=server.url, timeout=60) as http:
        head = http.get("/v1/transparency/head")
        assert head.status_code == 200, head.text
        _check_head_signature(head.json(), ca_pem)
        size = head.json()["tree_head"]["tree_size"]
        leaves = ref_leaf_inputs(runtime.settings.database_url)
        assert size == len(leaves) and head.json()["tree_head"]["root_hash"] == ref_mth(leaves).hex()
        response = http.get(f"/v1/transparency/proof/{published.generation_id}")
        assert response.status_code == 200, response.text
        proof = response.json()
        _check_head_signature(proof["signed_tree_head"], ca_pem)
        data = proof["leaf"]["data"].encode()
        fields = json.loads(data)
        assert fields[3] == "generation.published" and fields[4] == published.generation_id
        index, tree = proof["inclusion_proof"]["leaf_index"], proof["signed_tree_head"]["tree_head"]
        assert data == leaves[index] and tree["tree_size"] == proof["inclusion_proof"]["tree_size"]
        path = [bytes.fromhex(h) for h in proof["inclusion_proof"]["audit_path"]]
        assert path == ref_path(index, leaves[: tree["tree_size"]])
        root = ref_root_from_path(index, tree["tree_size"], sha(b"\x00" + data), path)
        assert root is not None and root.hex() == tree["root_hash"]
        # Nothing of the row beyond the leaf: no server path, client or prompt.
        assert str(out) not in response.text and "a red circle" not in response.text
        for missing in (queued.id, "no-such-generation"):
            absent = http.get(f"/v1/transparency/proof/{missing}")
            assert absent.status_code == 404 and absent.headers["content-type"].startswith("application/problem+json")
            assert absent.json()["status"] == 404
    # `credence audit prove`, against a checkpoint that contains the row, checked the same way.
    home = runtime.settings.home
    assert _cli(home, "audit", "checkpoint", "--out", str(tmp_path / "cp")).returncode == 0
    _fill(runtime, 3, "later")
    proved = _cli(home, "audit", "prove", published.generation_id, "--anchor", str(tmp_path / "cp"))
    assert proved.returncode == 0, proved.stderr
    document = json.loads(proved.stdout)
    _check_head_signature(document["signed_tree_head"], ca_pem)
    tree = document["signed_tree_head"]["tree_head"]
    assert tree == json.loads(next((tmp_path / "cp").iterdir()).read_text())["tree_head"]  # the checkpoint's head
    data = document["leaf"]["data"].encode()
    path = [bytes.fromhex(h) for h in document["inclusion_proof"]["audit_path"]]
    root = ref_root_from_path(document["leaf"]["index"], tree["tree_size"], sha(b"\x00" + data), path)
    assert root is not None and root.hex() == tree["root_hash"]
    unknown = _cli(home, "audit", "prove", queued.id)
    assert unknown.returncode == 1 and "no publish record" in unknown.stderr, unknown.stderr


def test_postgresql_leaves_proofs_and_a_rewrite(tmp_path: Path) -> None:
    """Time zones come back aware on PostgreSQL: the same leaves, proofs and anchored verdicts."""
    from credence import db
    from provenance.ledger import Ledger

    from .conftest import postgres_schema

    for url in postgres_schema("credence_tlog"):
        db.upgrade(url)
        runtime = Runtime(settings_for(tmp_path / "home", CREDENCE_DATABASE_URL=url))
        runtime.init()
        _fill(runtime, 40)
        engine = runtime.ledger.engine
        leaves = ref_leaf_inputs(url)
        n = len(leaves)
        assert tl.stream_root(engine) == (n, ref_mth(leaves))
        for m in (0, 17, n - 1):
            assert tl.inclusion_proof(engine, m, n) == ref_path(m, leaves)
        assert tl.consistency_proof(engine, 13, n) == ref_subproof(13, leaves, True)
        folder = tmp_path / "cp"
        write_checkpoint(folder, fresh_head(engine, runtime.identity))
        assert verify_anchored(engine, runtime.trust_pem, folder).ok
        _rewrite(url, _rows(url)[10][0])
        other = Ledger(url)
        from provenance.ledger.audit_chain import verify

        assert verify(other.engine).ok  # the chain alone is fooled
        report = verify_anchored(other.engine, runtime.trust_pem, folder)
        assert not report.ok and "rewritten" in (report.problem or ""), report
        other.dispose()
        runtime.ledger.dispose()
