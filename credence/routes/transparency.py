"""`GET /v1/transparency/head` and `GET /v1/transparency/proof/{generation_id}`: the audit log's tree.

Public on purpose (no API key): the point of a transparency log is that a platform holding a
clip checks, without an account and without trusting this operator's database, that the clip's
publish record was logged before a signed tree head. What a proof discloses is only the publish
row's leaf: row id, time, `generation.published`, the generation id (already in the clip's C2PA
manifest) and the row's hash, which commits to the rest of the row (client, key, server path,
digests) without showing it; the audit path holds only hashes of other subtrees. Unknown and
unpublished generations get the same 404, so the route tells no more than a published clip does.

Cost: a head or proof reads at most two partial blocks of 1,024 rows; the hashes of complete
blocks are kept per process (`TreeCache`, 32 bytes a block) and extended as the log grows.
"""

from __future__ import annotations

import threading
from typing import Any
from weakref import WeakKeyDictionary

from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from provenance.ledger.checkpoints import fresh_head, prove_publish
from provenance.ledger.transparency import TreeCache

from ..deps import get_runtime
from ..runtime import Runtime
from .problems import problems

router = APIRouter(tags=["transparency"])

_caches: WeakKeyDictionary[Runtime, TreeCache] = WeakKeyDictionary()
_lock = threading.Lock()


def _cache(runtime: Runtime) -> TreeCache:
    with _lock:
        cache = _caches.get(runtime)
        if cache is None or cache.engine is not runtime.ledger.engine:
            cache = _caches[runtime] = TreeCache(runtime.ledger.engine)
        return cache


class TreeHeadBody(BaseModel):
    """What the head signs."""

    version: int
    log_id: str = Field(description="SHA-256 (hex) of the signing certificate's public key.")
    tree_size: int = Field(description="Audit rows in the tree (leaves 0 .. tree_size - 1, in row id order).")
    root_hash: str = Field(description="RFC 9162 Merkle tree hash of those rows' leaves (hex).")
    timestamp: str = Field(description="When it was signed (UTC).")
    leaf_encoding: int
    hash_alg: str


class SignedTreeHead(BaseModel):
    """A tree head signed (ES256) by the deployment's signing key, with its certificate chain."""

    tree_head: TreeHeadBody
    alg: str
    signature: str = Field(description="Base64 DER ECDSA P-256/SHA-256 signature over the compact, key-sorted "
                                       "JSON of tree_head.")
    certificate_chain: str = Field(description="PEM, leaf first. Trust it only through a path to the "
                                               "deployment's CA, obtained out of band.")


class InclusionProof(BaseModel):
    """The audit path of one leaf."""

    leaf_index: int
    tree_size: int
    audit_path: list[str] = Field(description="Sibling hashes (hex), leaf to root (RFC 9162 section 2.1.3).")


class Leaf(BaseModel):
    """The publish row as a leaf."""

    index: int
    encoding: int
    data: str = Field(description="The leaf bytes (ASCII JSON [1, id, at, action, subject, row_hash]); the leaf "
                                  "hash is SHA-256(0x00 || data).")
    hash: str
    fields: dict[str, Any] = Field(description="`data` parsed, for convenience; only `data` is hashed.")


class PublishProof(BaseModel):
    """Everything a platform needs to check offline that a generation's publish row is in the log."""

    generation_id: str
    leaf: Leaf
    inclusion_proof: InclusionProof
    signed_tree_head: SignedTreeHead
    verification: str


@router.get("/v1/transparency/head", response_model=SignedTreeHead, responses=problems(503))
def transparency_head(runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """A freshly signed tree head of the audit log (size, root, time, log id)."""
    return fresh_head(runtime.ledger.engine, runtime.identity, _cache(runtime))


@router.get("/v1/transparency/proof/{generation_id}", response_model=PublishProof, responses=problems(404, 422, 503))
def transparency_proof(generation_id: str = PathParam(max_length=64),
                       runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """The inclusion proof of a published generation's publish row, and the signed head it is relative to."""
    document = prove_publish(runtime.ledger.engine, runtime.identity, generation_id, cache=_cache(runtime))
    if document is None:
        raise HTTPException(404, "no published generation with this id")
    return document
