"""Recovery after a crash: finish or roll back every interrupted publish, and sweep its debris.

A publish names its final path and temporary file on the generation row before writing a byte,
commits its published-file and fingerprint rows before the rename, and moves to `published`
last (see `provenance.publish`). So for a `running` row whose owner is gone, what is on disk and
in the ledger says exactly how far it got:

- record committed and the final file (or the signed temporary) has the recorded SHA-256:
  finish it (rename, fsync, `published`);
- anything less: roll it back to `failed` (its rows deleted, its temporaries removed).

Rows under a live lease are never touched: each takeover is a compare-and-set `claim` on an
expired lease (or on an owner `owner_is_dead` proved gone), so two recoverers cannot both act.
Afterwards there is no file at a final path without its record, nor a record without its file.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from .fsio import fsync_dir
from .ledger import Generation, Ledger, PublishedFile, states
from .ledger.models import Fingerprint, as_utc, utcnow
from .publish import TEMP_PREFIX, file_sha256, temp_paths

#: `.credence-<generation id>.<part><suffix>`: the temporaries `provenance.publish` writes.
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"(?P<id>[0-9a-f-]{36})\.(?:encoded|signed)\.\w+$")
#: `.<output name>.<random>/` holding encoded/signed files: the temporary folders of the old publisher.
_LEGACY_PARTS = {"encoded.mp4", "signed.mp4", "encoded.mov", "signed.mov", "encoded.avi", "signed.avi"}


@dataclass
class RecoveryReport:
    """What recovery did, and what it found that needs a person."""

    actions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    examined: int = 0

    @property
    def exit_code(self) -> int:
        """0: consistent or repaired; 1: something needs a person."""
        return 1 if self.problems else 0

    def to_dict(self) -> dict[str, object]:
        """JSON form for `credence doctor --json`."""
        return {"actions": self.actions, "problems": self.problems, "examined": self.examined,
                "exit_code": self.exit_code}


def recover(ledger: Ledger, *, owner: str, folders: Iterable[Path] = (), managed: Path | None = None,
            check_published: bool = False, lease_seconds: float = states.DEFAULT_LEASE_SECONDS,
            actor: str = "doctor", requeue: Callable[[str], None] | None = None) -> RecoveryReport:
    """Repair what crashed publishes left; with `check_published`, also look for released files that vanished.

    With `requeue` (a queue engine is configured), an interrupted generation that was not yet
    published is queued again (up to `states.MAX_ATTEMPTS` runs) instead of rolled back.

    `folders` are swept for orphaned temporaries (the output folders of the rows repaired are
    swept as well). `managed` is the folder the service serves clips from: a published file
    missing there is a problem; one a user moved elsewhere is only noted.
    """
    report = RecoveryReport()
    sweep = {Path(f) for f in folders}
    now = utcnow()
    with ledger.session() as s:
        rows = s.execute(select(Generation.id, Generation.lease_owner, Generation.lease_expires_at)
                         .where(Generation.status == "running")).all()
    for generation_id, lease_owner, expires in rows:
        report.examined += 1
        dead = states.owner_is_dead(lease_owner, this_owner=owner)
        if not dead and expires is not None and as_utc(expires) > now:
            continue  # a live process holds it
        folder = _repair(ledger, generation_id, owner, lease_owner if dead else None, lease_seconds, actor, report,
                         requeue)
        if folder is not None:
            sweep.add(folder)
    for folder in sorted(sweep):
        _sweep(ledger, folder, report)
    if check_published:
        _check_published(ledger, managed, report)
    return report


def _repair(ledger: Ledger, generation_id: str, owner: str, dead_owner: str | None, lease_seconds: float,
            actor: str, report: RecoveryReport, requeue: Callable[[str], None] | None) -> Path | None:
    """Take over one interrupted generation and finish, re-queue or roll it back; returns its output folder."""
    try:
        with ledger.session() as s:
            gen = s.get(Generation, generation_id)
            stage = gen.stage if gen is not None else None
            states.claim(s, generation_id, owner, lease_seconds, stage=stage or "generating", dead_owner=dead_owner,
                         run=False)
    except states.StateConflict:
        return None  # someone else moved it first
    with ledger.session() as s:
        gen = s.get(Generation, generation_id)
        assert gen is not None
        folder = Path(gen.output_path).parent if gen.output_path else None
        attempts = gen.attempts
    done = settle(ledger, generation_id, owner, actor=actor, report=report)
    if done is None:
        if requeue is not None and attempts < states.MAX_ATTEMPTS:
            with ledger.session() as s:
                states.move(s, generation_id, ("running",), "queued", owner=owner, output_path=None)
                ledger.audit(s, actor, "generation.requeued", generation_id, interrupted_stage=stage)
            requeue(generation_id)
            report.actions.append(f"queued generation {generation_id} again (interrupted while {stage})")
        else:
            _roll_back(ledger, generation_id, owner, actor, report, stage, "it had not been published")
    return folder


def settle(ledger: Ledger, generation_id: str, owner: str, *, actor: str = "recovery",
           report: RecoveryReport | None = None) -> str | None:
    """For a generation `owner` has just claimed, deal with what an earlier, interrupted run left.

    Returns "published" when that run had recorded its publish and the signed file is intact
    (the publish is finished now). Otherwise removes its records and temporaries and returns
    None: the row stays `running` under `owner`, clean, for a fresh run or a roll-back.
    """
    report = report if report is not None else RecoveryReport()
    with ledger.session() as s:
        gen = s.get(Generation, generation_id)
        assert gen is not None
        output = Path(gen.output_path) if gen.output_path else None
        signed = Path(gen.temp_path) if gen.temp_path else None
        record = s.scalars(select(PublishedFile).where(PublishedFile.generation_id == generation_id)
                           .order_by(PublishedFile.id.desc())).first()
        digest = record.sha256 if record is not None else None
    result: str | None = None
    if digest is not None and output is not None:
        if output.is_file() and file_sha256(output) == digest:
            _finish(ledger, generation_id, owner, actor, report, output, "its file was already in place")
            result = "published"
        elif signed is not None and signed.is_file() and file_sha256(signed) == digest:
            signed.replace(output)
            fsync_dir(output.parent)
            _finish(ledger, generation_id, owner, actor, report, output, "renamed the signed file into place")
            result = "published"
    if result is None and digest is not None:
        with ledger.session() as s:
            s.query(Fingerprint).filter(Fingerprint.generation_id == generation_id).delete()
            s.query(PublishedFile).filter(PublishedFile.generation_id == generation_id).delete()
    for temp in temp_paths(signed) if signed is not None else []:
        if temp.exists():
            temp.unlink()
            report.actions.append(f"removed temporary {temp}")
    return result


def _finish(ledger: Ledger, generation_id: str, owner: str, actor: str, report: RecoveryReport, output: Path,
            how: str) -> None:
    with ledger.session() as s:
        states.move(s, generation_id, ("running",), "published", owner=owner, temp_path=None)
        ledger.audit(s, actor, "generation.published", generation_id, path=str(output), recovered=True)
    report.actions.append(f"finished publishing generation {generation_id} ({how}): {output}")


def _roll_back(ledger: Ledger, generation_id: str, owner: str, actor: str, report: RecoveryReport,
               stage: str | None, why: str) -> None:
    reason = f"interrupted while {stage or 'running'} and rolled back by recovery ({why})"
    with ledger.session() as s:
        s.query(Fingerprint).filter(Fingerprint.generation_id == generation_id).delete()
        s.query(PublishedFile).filter(PublishedFile.generation_id == generation_id).delete()
        states.move(s, generation_id, ("running",), "failed", owner=owner, failure_reason=reason, temp_path=None)
        ledger.audit(s, actor, "generation.failed", generation_id, reason=reason, recovered=True)
    report.actions.append(f"rolled back generation {generation_id} to failed: {reason}")


def _sweep(ledger: Ledger, folder: Path, report: RecoveryReport) -> None:
    """Remove temporaries in `folder` that no live publish owns (and the old publisher's folders)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match and entry.is_file():
            with ledger.session() as s:
                gen = s.get(Generation, match["id"])
                live = gen is not None and gen.status == "running"
            if not live:
                entry.unlink(missing_ok=True)
                report.actions.append(f"removed orphaned temporary {entry}")
        elif entry.name.startswith(".") and entry.is_dir() and not entry.is_symlink():
            names = {p.name for p in entry.iterdir()}
            if names and names <= _LEGACY_PARTS:
                shutil.rmtree(entry, ignore_errors=True)
                report.actions.append(f"removed an interrupted publish's temporary folder {entry}")


def _check_published(ledger: Ledger, managed: Path | None, report: RecoveryReport) -> None:
    """Every published generation's file should still be where its record says."""
    with ledger.session() as s:
        rows = s.execute(select(PublishedFile.generation_id, PublishedFile.path)
                         .join(Generation, Generation.id == PublishedFile.generation_id)
                         .where(Generation.status == "published")).all()
    for generation_id, path in rows:
        if Path(path).is_file():
            continue
        if managed is not None and Path(path).is_relative_to(managed):
            report.problems.append(f"generation {generation_id} is published but its file is missing: {path}")
        else:
            report.actions.append(f"note: generation {generation_id}'s file is no longer at {path} "
                                  "(moved or deleted after release)")


__all__ = ["RecoveryReport", "recover"]
