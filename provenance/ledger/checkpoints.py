"""Signed tree heads of the audit log, the checkpoint folder, and verification against them.

Why: a tree head (size, root, time, log id) signed with the deployment's signing key and kept
where the database's owner cannot rewrite it (a write-once bucket; here a folder written one new
file at a time, never overwriting) pins the log's first `size` rows. Later, `verify_anchored`
checks the log against every checkpoint: a signature by a trusted signer (a path to the trust
anchors, never the carried certificate alone: `provenance.trust`), a size the log still reaches,
the same root recomputed from the rows, and consistency proofs from each checkpoint to the next
and to the current head. Truncation, a rewritten tail and a forged signer each fail there, named.

Document (version 1): `{"tree_head": {version, log_id, tree_size, root_hash, timestamp,
leaf_encoding, hash_alg}, "alg": "ES256", "signature", "certificate_chain"}`; the signature is
ECDSA P-256/SHA-256 (DER, base64) over the compact, key-sorted JSON of `tree_head`. `log_id` is
the SHA-256 of the signing certificate's public key (SubjectPublicKeyInfo, DER), as in CT.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.engine import Engine

from ..errors import LedgerError, ProvenanceError
from ..fsio import fsync_dir, fsync_handle
from ..trust import UntrustedSigner, load_certificates, verify_path
from . import transparency as tl
from .audit_chain import canonical_time
from .audit_chain import verify as verify_chain
from .models import utcnow

VERSION = 1
ALG = "ES256"
#: A head signed further in the future than this is refused (clock skew between hosts).
MAX_SKEW = dt.timedelta(minutes=5)
PREFIX = "checkpoint-"


class HeadInvalid(ProvenanceError):
    """A signed tree head that is malformed, badly signed, or signed by no trusted signer."""


@dataclass(frozen=True)
class TreeHead:
    """A verified tree head: `size` leaves with MTH `root`, signed at `timestamp` by `log_id`."""

    size: int
    root: bytes
    timestamp: str
    log_id: str


def log_id(chain_pem: bytes | str) -> str:
    """SHA-256 hex of the leaf certificate's SubjectPublicKeyInfo: the log's name."""
    leaf = load_certificates(chain_pem, "the certificate chain")[0]
    spki = leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def message(body: dict[str, Any]) -> bytes:
    """The bytes signed: compact JSON of the tree head with sorted keys."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _sign(identity: Any, data: bytes) -> bytes:
    """ES256 (DER) with the deployment's key, or through its KMS/HSM callback."""
    if identity.callback is not None:
        return bytes(identity.callback(data))
    key = serialization.load_pem_private_key(identity.key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise HeadInvalid("the signing key is not an EC key (ES256 needs P-256)")
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def sign_tree_head(size: int, root: bytes, identity: Any, *, timestamp: dt.datetime | None = None) -> dict[str, Any]:
    """A signed tree head document for (size, root), carrying the signer's certificate chain."""
    body = {"version": VERSION, "log_id": log_id(identity.chain_pem), "tree_size": size, "root_hash": root.hex(),
            "timestamp": canonical_time(timestamp or utcnow()), "leaf_encoding": tl.LEAF_ENCODING,
            "hash_alg": "SHA-256"}
    signature = _sign(identity, message(body))
    return {"tree_head": body, "alg": ALG, "signature": base64.b64encode(signature).decode("ascii"),
            "certificate_chain": identity.chain_pem.decode("ascii")}


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise HeadInvalid(f"tree_head.{name} is missing or not a {kind.__name__}")
    return value


def verify_tree_head(document: Any, anchors_pem: str, *, now: dt.datetime | None = None) -> TreeHead:
    """The head a document signs, once its signer chains to `anchors_pem`; `HeadInvalid` otherwise.

    The certificate the document carries is only a claim: the path from it to an anchor is
    checked (signatures, validity at the signing time, CA flags, key usage) before its key is
    used, so a head signed with anyone else's key, self-signed or not, is refused.
    """
    if not isinstance(document, dict) or not isinstance(document.get("tree_head"), dict):
        raise HeadInvalid("not a signed tree head (no tree_head object)")
    body = document["tree_head"]
    if document.get("alg") != ALG or body.get("version") != VERSION or body.get("hash_alg") != "SHA-256":
        raise HeadInvalid(f"unsupported head (alg {document.get('alg')!r}, version {body.get('version')!r})")
    if body.get("leaf_encoding") != tl.LEAF_ENCODING:
        raise HeadInvalid(f"unsupported leaf encoding {body.get('leaf_encoding')!r}")
    size, stamp = _field(body, "tree_size", int), _field(body, "timestamp", str)
    if size < 0:
        raise HeadInvalid(f"tree_size {size} is negative")
    try:
        root = bytes.fromhex(_field(body, "root_hash", str))
        signature = base64.b64decode(_field(document, "signature", str), validate=True)
        signed_at = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    except (ValueError, binascii.Error) as exc:
        raise HeadInvalid(f"malformed root_hash, signature or timestamp ({exc})") from None
    if len(root) != 32:
        raise HeadInvalid("root_hash is not 32 bytes")
    if signed_at > (now or dt.datetime.now(dt.UTC)) + MAX_SKEW:
        raise HeadInvalid(f"signed in the future ({stamp})")
    chain = _field(document, "certificate_chain", str)
    try:
        leaf = verify_path(chain, anchors_pem, at=signed_at)
    except UntrustedSigner as exc:
        raise HeadInvalid(f"signer not trusted: {exc}") from None
    if body.get("log_id") != log_id(chain):
        raise HeadInvalid("log_id does not name the signing certificate's key")
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)  # verify_path checked it is P-256
    try:
        public.verify(signature, message(body), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise HeadInvalid("the signature does not match the tree head (altered after signing)") from None
    return TreeHead(size, root, stamp, body["log_id"])


def fresh_head(engine: Engine, identity: Any, cache: tl.TreeCache | None = None) -> dict[str, Any]:
    """Sign the log's current tree head (streamed, or from `cache` when given)."""
    if cache is not None:
        cache.extend()
        size = cache.size
        return sign_tree_head(size, cache.root(size), identity)
    size, root = tl.stream_root(engine)
    return sign_tree_head(size, root, identity)


# -- the checkpoint folder -------------------------------------------------------------------
def write_checkpoint(folder: Path, document: dict[str, Any]) -> Path:
    """Add `document` to `folder` as a new file, atomically; an existing file is never replaced.

    The bytes go to a temporary file that is flushed, then hard-linked to the final name (which
    fails if the name exists) and the folder flushed: a reader sees the whole file or none.
    """
    folder.mkdir(parents=True, exist_ok=True)
    head = document["tree_head"]
    stamp = head["timestamp"].replace("-", "").replace(":", "").replace(".", "")
    final = folder / f"{PREFIX}{stamp}-{head['tree_size']:012d}.json"
    temp = folder / f".{final.name}.{os.getpid()}.tmp"
    try:
        with open(temp, "x", encoding="utf-8") as handle:
            handle.write(json.dumps(document, indent=2) + "\n")
            fsync_handle(handle)
        os.link(temp, final)
    except FileExistsError:
        raise LedgerError(f"{final} already exists; a checkpoint is never overwritten") from None
    except OSError as exc:
        raise LedgerError(f"cannot write the checkpoint in {folder}: {exc.strerror or exc}") from None
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(folder)
    return final


def checkpoint_files(path: Path) -> list[Path]:
    """The checkpoint files `path` names: itself, or the `*.json` files in it by name (time) order."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LedgerError(f"{path}: no such checkpoint file or folder")
    return sorted(p for p in path.glob("*.json") if not p.name.startswith("."))


@dataclass(frozen=True)
class AnchorReport:
    """What `credence audit verify --anchor` found: the first inconsistency, or none."""

    ok: bool
    checkpoints: int
    log_size: int
    root_hash: str | None
    checkpoint: str | None = None
    problem: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    def line(self) -> str:
        """One line for a terminal."""
        if self.ok:
            return (f"log consistent with {self.checkpoints} checkpoint(s): {self.log_size} rows, root "
                    f"{self.root_hash}")
        where = f"checkpoint {self.checkpoint}: " if self.checkpoint else ""
        return f"log inconsistent: {where}{self.problem}"


def verify_anchored(engine: Engine, anchors_pem: str, path: Path, *, block_bits: int = 10) -> AnchorReport:
    """Check the log against every checkpoint under `path`; the report names the first inconsistency.

    In order: each checkpoint's signature (file order), the hash chain row by row, then each
    checkpoint by signing time: its size within the log, its root equal to the root recomputed
    at its size, a consistency proof from the previous checkpoint; last, a consistency proof
    from the latest checkpoint to the current head. O(rows) once, plus O(log n) per checkpoint.
    """
    started = time.perf_counter()
    files = checkpoint_files(path)

    def broken(name: str | None, problem: str, size: int = 0, root: str | None = None) -> AnchorReport:
        return AnchorReport(False, len(files), size, root, name, problem, time.perf_counter() - started)

    if not files:
        return broken(None, f"no checkpoint in {path}: nothing anchors the log")
    heads: list[tuple[TreeHead, str]] = []
    for file in files:
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
            heads.append((verify_tree_head(document, anchors_pem), file.name))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return broken(file.name, f"unreadable ({exc})")
        except HeadInvalid as exc:
            return broken(file.name, str(exc))
    chain = verify_chain(engine)
    if not chain.ok:
        return broken(None, f"audit chain broken at row {chain.row}: {chain.problem}")
    cache = tl.TreeCache(engine, block_bits)
    cache.extend()
    size = cache.size
    root = cache.root(size)
    previous: tuple[TreeHead, str] | None = None
    for head, name in sorted(heads, key=lambda item: (item[0].timestamp, item[0].size)):
        what = f"size {head.size}, signed {head.timestamp}"
        if head.size > size:
            return broken(name, f"({what}) the log has only {size} rows: it was cut back (rows deleted from its "
                                "end) after this checkpoint", size, root.hex())
        if previous is not None and previous[0].size > head.size:
            return broken(name, f"({what}) is smaller than the earlier checkpoint {previous[1]} "
                                f"(size {previous[0].size})", size, root.hex())
        recomputed = cache.root(head.size)
        if recomputed != head.root:
            return broken(name, f"({what}) root {head.root.hex()} but the log's first {head.size} rows give "
                                f"{recomputed.hex()}: rows up to {head.size} were rewritten or replaced",
                          size, root.hex())
        if previous is not None:
            proof = tl.consistency_proof(engine, previous[0].size, head.size, cache)
            if not tl.verify_consistency(previous[0].size, head.size, previous[0].root, head.root, proof):
                return broken(name, f"({what}) no consistency proof from checkpoint {previous[1]}", size, root.hex())
        previous = (head, name)
    assert previous is not None
    proof = tl.consistency_proof(engine, previous[0].size, size, cache)
    if not tl.verify_consistency(previous[0].size, size, previous[0].root, root, proof):
        return broken(previous[1], f"no consistency proof to the current head ({size} rows)", size, root.hex())
    return AnchorReport(True, len(files), size, root.hex(), seconds=time.perf_counter() - started)


def prove_publish(engine: Engine, identity: Any, generation_id: str, *, head: dict[str, Any] | None = None,
                  cache: tl.TreeCache | None = None) -> dict[str, Any] | None:
    """The inclusion proof of a generation's publish row against `head` (or a freshly signed head).

    None when the generation has no publish row. The proof is checked before it is returned.
    Everything a platform needs offline is in it: the leaf bytes (hashed as SHA-256(0x00 || data)),
    the audit path, and the signed head (checked against the deployment's CA, obtained out of band).
    """
    if cache is not None:
        cache.extend()
    leaf = tl.publish_leaf(engine, generation_id, cache)
    if leaf is None:
        return None
    if head is None:
        head = fresh_head(engine, identity, cache)
    size, root = head["tree_head"]["tree_size"], bytes.fromhex(head["tree_head"]["root_hash"])
    if leaf.index >= size:
        raise LedgerError(f"the publish row of {generation_id} was logged after the head (size {size})")
    path = tl.inclusion_proof(engine, leaf.index, size, cache)
    if not tl.verify_inclusion(leaf.hash, leaf.index, size, path, root):
        raise LedgerError(f"the log no longer matches the tree head of size {size}; run `credence audit verify "
                          "--anchor`")
    fields = json.loads(leaf.data)
    return {
        "generation_id": generation_id,
        "leaf": {"index": leaf.index, "encoding": tl.LEAF_ENCODING, "data": leaf.data.decode("ascii"),
                 "hash": leaf.hash.hex(),
                 "fields": dict(zip(("encoding", "id", "at", "action", "subject", "row_hash"), fields, strict=True))},
        "inclusion_proof": {"leaf_index": leaf.index, "tree_size": size, "audit_path": [p.hex() for p in path]},
        "signed_tree_head": head,
        "verification": "leaf hash = SHA-256(0x00 || data); check audit_path with RFC 9162 section 2.1.3.2 "
                        "against signed_tree_head.tree_head.root_hash; check the head's ES256 signature with "
                        "the leaf of certificate_chain after building its path to the deployment's CA.",
    }


def latest_trusted(files: list[Path], anchors_pem: str, *, min_size: int = 0) -> tuple[TreeHead, str,
                                                                                       dict[str, Any]] | None:
    """The newest checkpoint among `files` that verifies and holds at least `min_size` leaves.

    Files that do not parse or verify are skipped here (`verify_anchored` is what reports them).
    """
    best: tuple[TreeHead, str, dict[str, Any]] | None = None
    for file in files:
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
            head = verify_tree_head(document, anchors_pem)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, HeadInvalid):
            continue
        if head.size >= min_size and (best is None or (head.timestamp, head.size) > (best[0].timestamp, best[0].size)):
            best = (head, file.name, document)
    return best


def latest_covering(path: Path, anchors_pem: str, index: int) -> dict[str, Any] | None:
    """The newest trusted checkpoint under `path` whose tree contains leaf `index` (None if none)."""
    found = latest_trusted(checkpoint_files(path), anchors_pem, min_size=index + 1)
    return found[2] if found else None
