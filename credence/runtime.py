"""Wiring: build the ledger, signer, watermark, verifier and moderators that the settings describe.

The CLI and the HTTP app both start from `Runtime(settings)`; nothing below `credence/` knows
about settings or the environment. Parts are built on first use, so `credence verify` does not
pay for a generator and `credence moderate` does not open the ledger.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from detector import LedgerState, VerificationContext
from provenance.errors import KeyMissing
from provenance.keys import (
    SigningIdentity,
    active_watermark_secret,
    ensure_development_keys,
    load_signing_identity,
    load_watermark_secrets,
    trust_anchors_pem,
)
from provenance.ledger import KeyRecord, Ledger, states
from provenance.ledger.models import Client
from provenance.publish import Publisher, WatermarkSpec
from provenance.video_limits import set_process_limits

from . import db
from .settings import Settings

if TYPE_CHECKING:
    from moderation import Moderator


class Runtime:
    """The process-wide objects for one configuration."""

    def __init__(self, settings: Settings, *, actor: str = "cli") -> None:
        self.settings = settings
        self.actor = actor
        self.owner = states.new_lease_owner()
        # Every decoder of this process (verification's sources, publishing, the console's preview) is
        # held to the deployment's decoding budget (provenance.video_limits).
        set_process_limits(settings.decode_limits)

    def checkpoint(self, name: str) -> None:
        """A step boundary of a generation. With `CREDENCE_FAULT_POINT` naming it (crash tests only),
        the process stops itself there (SIGSTOP) so that the test can kill it with SIGKILL at exactly
        that point; otherwise nothing happens."""
        if self.settings.fault_point == name:
            import signal

            print(f"credence: stopped at fault point {name}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)

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

    def recover(self, *, check_published: bool = False, requeue: Any = None) -> Any:
        """Finish, re-queue (with `requeue`, a job executor's enqueue) or roll back generations that a crash
        interrupted (`credence doctor`, and at the start of `serve` and `worker`)."""
        from provenance.recovery import recover

        self.settings.outputs_dir.mkdir(parents=True, exist_ok=True)
        return recover(self.ledger, owner=self.owner, folders=[self.settings.outputs_dir],
                       managed=self.settings.outputs_dir, check_published=check_published,
                       lease_seconds=self.settings.lease_seconds, actor=self.actor, requeue=requeue)

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
        from provenance.watermark.readback import KeyedReadBack, stronger_embedder

        secret = active_watermark_secret(self.settings.keys_dir)
        key = WatermarkKey(secret.key_id, secret.secret)
        # Every clip's mark is read back before release, and re-marked once a step stronger if it does not read.
        return WatermarkSpec(ALGORITHM, key.key_id, lambda mark_id: WatermarkEmbedder(key, mark_id),
                             read_back=KeyedReadBack(key),
                             make_stronger=lambda mark_id: stronger_embedder(key, mark_id))

    @cached_property
    def publisher(self) -> Publisher:
        """The publisher: watermark, encode, fingerprint, sign and record."""
        return Publisher(self.ledger, self.identity, trust_pem=self.trust_pem, watermark=self.watermark,
                         recorders=self.recorders, actor=self.actor, owner=self.owner,
                         lease_seconds=self.settings.lease_seconds, checkpoint=self.checkpoint)

    @cached_property
    def recorders(self) -> list[Any]:
        """Per-frame recorders that add ledger rows at publish time (fingerprints)."""
        return [importlib.import_module("provenance.fingerprint").fingerprint_recorder]

    @property
    def verification(self) -> VerificationContext:
        """What the detector consults, with the ledger's state said (C2PA alone before `init`).

        A context is kept only once the ledger answered. An outage, or a ledger not initialised yet,
        is looked at again on the next call, so a database that comes back is used at once with no
        restart; an outage after that is the sources' business (they report "ledger unavailable").
        """
        cached: VerificationContext | None = self.__dict__.get("_verification_context")
        if cached is not None:
            return cached
        signers: set[str] = set()
        try:
            signers.add(self.identity.leaf_serial)
        except KeyMissing:
            pass
        ledger, state, recorded_signers = self._verification_ledger()
        signers.update(recorded_signers)
        from provenance.watermark import WatermarkKey

        keys = tuple(WatermarkKey(k.key_id, k.secret) for k in load_watermark_secrets(self.settings.keys_dir))
        if ledger is not None and not self.settings.index_shards:
            # Register this ledger's process-wide index with the configured snapshot folder, so that
            # every source and route that asks `index_for(ledger)` starts from the snapshot.
            from provenance.index import index_for

            index_for(ledger, snapshot_dir=self.settings.index_folder)
        context = VerificationContext(ledger=ledger, trust_pem=self.trust_pem, our_signers=frozenset(signers),
                                      watermark_keys=keys, ledger_state=state)
        if state == "ok":
            self.__dict__["_verification_context"] = context
        return context

    def verification_sources(self, max_seconds: float | None = None) -> list[Any]:
        """The detector's sources for this configuration: shard servers when `index_shards` is set."""
        from detector import default_sources

        shards = None
        if self.settings.index_shards:
            from provenance.index.shards import ShardedIndex

            shards = self.__dict__.get("_shards")
            if shards is None:
                shards = self.__dict__["_shards"] = ShardedIndex(list(self.settings.index_shards))
        return default_sources(max_seconds=max_seconds, fingerprint_index=shards)

    def _verification_ledger(self) -> tuple[Ledger | None, LedgerState, set[str]]:
        """The ledger and the signing certificates it records; else why not: "absent" or "unavailable".

        The two differ for a verdict: with no ledger ever initialised C2PA decides alone, while a
        ledger that cannot be asked might hold the very clip, so nothing may be cleared.
        """
        from pathlib import Path

        from sqlalchemy import inspect
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import SQLAlchemyError

        from provenance.errors import LedgerError

        url = make_url(self.settings.database_url)
        if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).exists()):
            # The default SQLite file appears with `credence init`; asking would create it empty.
            return None, "absent", set()
        try:
            ledger = self.ledger
            # Certificates we signed with before a rotation still vouch for the clips they signed.
            with ledger.session() as s:
                rows = s.scalars(select(KeyRecord.id).where(KeyRecord.kind == "signing")).all()
            return ledger, "ok", {r.removeprefix("x509-") for r in rows}
        except (LedgerError, SQLAlchemyError):
            pass
        try:
            probe = Ledger(self.settings.database_url)
        except LedgerError:
            return None, "unavailable", set()  # a URL or driver that does not work is not "never initialised"
        try:
            with probe.engine.connect() as connection:
                tables = inspect(connection).get_table_names()
        except SQLAlchemyError:
            return None, "unavailable", set()
        finally:
            probe.dispose()
        return None, ("absent" if "generations" not in tables else "unavailable"), set()


class ModeratorCache:
    """The deployment's moderator, loaded once, and per client its stricter overlay (same heads).

    Called with a client id it answers (moderator, overlay hash): what a generation job screens with.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._base: Moderator | None = None
        self._by_overlay: dict[str, Moderator] = {}
        self._lock = threading.Lock()

    def base(self) -> Moderator:
        """The deployment's moderator (loads the sentence model on first use)."""
        with self._lock:
            if self._base is None:
                from moderation import Moderator, load_policy

                settings = self.runtime.settings
                self._base = Moderator.load(load_policy(settings.policy_path), clip_checkpoint=settings.clip_model)
            return self._base

    def __call__(self, client_id: str | None) -> tuple[Moderator, str | None]:
        """(moderator, overlay hash) for a client: its overlay applied when it has one."""
        base = self.base()
        if client_id is None:
            return base, None
        with self.runtime.ledger.session() as s:
            client = s.get(Client, client_id)
            text = client.policy_overlay if client is not None else None
        if not text:
            return base, None
        from moderation import Moderator
        from moderation.frames import available_screens
        from moderation.overlay import apply_overlay, overlay_hash

        digest = overlay_hash(text)
        with self._lock:
            if digest not in self._by_overlay:
                policy = apply_overlay(base.policy, text)
                self._by_overlay[digest] = Moderator(policy, base.heads, available_screens(
                    policy, self.runtime.settings.clip_model))
            return self._by_overlay[digest], digest


def _safe_url(url: str) -> str:
    """The database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
