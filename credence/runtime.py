"""Wiring: build the ledger, signer, watermark and verifier that the settings describe.

The CLI and the HTTP app both start from `Runtime(settings)`; nothing below `credence/` knows
about settings or the environment. Parts are built on first use, so `credence verify` does not
pay for a generator and `credence moderate` does not open the ledger.
"""

from __future__ import annotations

import importlib.util
from functools import cached_property
from typing import Any

from sqlalchemy import select

from detector import VerificationContext
from provenance.errors import KeyMissing
from provenance.keys import (
    SigningIdentity,
    active_watermark_secret,
    ensure_development_keys,
    load_signing_identity,
    load_watermark_secrets,
    trust_anchors_pem,
)
from provenance.ledger import KeyRecord, Ledger
from provenance.publish import Publisher, WatermarkSpec

from . import db
from .settings import Settings


class Runtime:
    """The process-wide objects for one configuration."""

    def __init__(self, settings: Settings, *, actor: str = "cli") -> None:
        self.settings = settings
        self.actor = actor

    # -- setup -------------------------------------------------------------------------------
    def init(self) -> dict[str, Any]:
        """`credence init`: folders, development keys and the migrated ledger; idempotent."""
        home = self.settings.home
        home.mkdir(parents=True, exist_ok=True)
        self.settings.outputs_dir.mkdir(parents=True, exist_ok=True)
        created = ensure_development_keys(self.settings.keys_dir)
        revision = db.upgrade(self.settings.database_url)
        self.register_keys()
        return {"home": str(home), "created": created, "database": _safe_url(self.settings.database_url),
                "revision": revision}

    def register_keys(self) -> None:
        """Record the signing certificate and watermark key ids (never the secrets) in the ledger."""
        identity = self.identity
        with self.ledger.session() as s:
            # Signing keys are named by the leaf's serial: it is what C2PA readers report.
            records = [(f"x509-{identity.leaf_serial}", "signing", identity.leaf_fingerprint)]
            records += [(k.key_id, "watermark", None) for k in load_watermark_secrets(self.settings.keys_dir)]
            for key_id, kind, fingerprint in records:
                if s.get(KeyRecord, key_id) is None:
                    s.add(KeyRecord(id=key_id, kind=kind, fingerprint=fingerprint))
                    self.ledger.audit(s, self.actor, "key.registered", key_id, kind=kind)

    # -- parts -------------------------------------------------------------------------------
    @cached_property
    def ledger(self) -> Ledger:
        """The ledger, checked to be migrated."""
        ledger = Ledger(self.settings.database_url)
        ledger.require_schema()
        return ledger

    @cached_property
    def identity(self) -> SigningIdentity:
        """The C2PA signing identity (production chain/key/callback, else the development CA)."""
        s = self.settings
        return load_signing_identity(s.keys_dir, chain=s.signing_chain, key=s.signing_key,
                                     callback=s.signing_callback)

    @cached_property
    def trust_pem(self) -> str:
        """PEM anchors the verifier trusts."""
        return trust_anchors_pem(self.settings.keys_dir, self.settings.trust_anchors)

    @cached_property
    def watermark(self) -> WatermarkSpec:
        """The watermark every published clip carries; a missing key fails closed (`KeyMissing`)."""
        from provenance.watermark import ALGORITHM, WatermarkEmbedder, WatermarkKey

        secret = active_watermark_secret(self.settings.keys_dir)
        key = WatermarkKey(secret.key_id, secret.secret)
        return WatermarkSpec(ALGORITHM, key.key_id, lambda mark_id: WatermarkEmbedder(key, mark_id))

    @cached_property
    def publisher(self) -> Publisher:
        """The publisher: watermark, encode, fingerprint, sign and record."""
        return Publisher(self.ledger, self.identity, trust_pem=self.trust_pem, watermark=self.watermark,
                         recorders=self.recorders, actor=self.actor)

    @cached_property
    def recorders(self) -> list[Any]:
        """Per-frame recorders that add ledger rows at publish time (fingerprints)."""
        return [importlib.import_module("provenance.fingerprint").fingerprint_recorder]

    @cached_property
    def verification(self) -> VerificationContext:
        """What the detector consults. Works without a ledger (C2PA alone) before `init`."""
        try:
            ledger: Ledger | None = self.ledger
        except Exception:
            ledger = None
        signers: set[str] = set()
        try:
            signers.add(self.identity.leaf_serial)
        except KeyMissing:
            pass
        if ledger is not None:
            # Certificates we signed with before a rotation still vouch for the clips they signed.
            with ledger.session() as s:
                rows = s.scalars(select(KeyRecord.id).where(KeyRecord.kind == "signing")).all()
            signers.update(r.removeprefix("x509-") for r in rows)
        from provenance.watermark import WatermarkKey

        keys = tuple(WatermarkKey(k.key_id, k.secret) for k in load_watermark_secrets(self.settings.keys_dir))
        return VerificationContext(ledger=ledger, trust_pem=self.trust_pem, our_signers=frozenset(signers),
                                   watermark_keys=keys)


def _safe_url(url: str) -> str:
    """The database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
