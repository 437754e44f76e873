"""Publishing: watermark, encode, fingerprint, sign and record a clip, crash-consistent by construction.

No clip leaves without its record, and no record points at a file that is not there. The order
is what makes a crash at any instant recoverable (`provenance.recovery` finishes or rolls back):

1. commit the final path and the temporary names on the generation row (stage `publishing`),
   before any byte is written, so that recovery knows which files are this publish's;
2. write the labelled (the visible AI label), marked, encoded clip under a temporary name in the
   output folder, sign it into a second temporary name, fsync it, and read it back as valid and ours,
   and its mark as readable, also after a simulated re-encode (`provenance.readback`, issue 22);
3. commit the published-file, fingerprint and audit rows (stage `releasing`);
4. rename the signed file to its final path (atomic on one file system) and fsync the folder;
5. move the row to `published`.

Only a generation that is `running` under this process's lease can be published, and the moves
are compare-and-sets, so a generation is published at most once. A clip marked by hand
(`credence watermark embed`) is released by the same steps (`Publisher.publish_external`), less
the manifest and the fingerprints.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .credentials import ManifestContent, mime_for, read_credentials, sign_manifest
from .errors import InvalidVideo, OutputNotWritable, ProvenanceError, SigningUnavailable
from .fsio import fsync_dir, fsync_file
from .keys import SigningIdentity
from .label import LabelSpec, burn_in
from .ledger import Generation, Ledger, PublishedFile, new_mark_id, prompt_digest, states
from .ledger.models import Base, Fingerprint, utcnow
from .ledger.outbox import NOTIFIED_STATUSES, enqueue_for_generation
from .readback import FrameSpool, MarkReader, ReadBack, WatermarkUnreadable, encode_marked, platform_copy
from .video import VideoWriter, iter_frames, probe

MIN_PUBLISH_SIDE = 64

#: Temporary files of a publish are `.credence-<generation id>.<part><suffix>` in the output folder.
TEMP_PREFIX = ".credence-"
TEMP_PARTS = ("encoded", "signed")


def temp_path_for(output: Path, generation_id: str, part: str = "signed") -> Path:
    """The temporary name one part of a publish is written under, beside its final path."""
    return output.parent / f"{TEMP_PREFIX}{generation_id}.{part}{output.suffix}"


def temp_paths(signed: Path) -> list[Path]:
    """Every temporary file of the publish whose signed temporary is `signed`."""
    return [signed.with_name(signed.name.replace(".signed", f".{part}", 1)) for part in TEMP_PARTS]


class FrameMarker(Protocol):
    """Embeds the watermark into one frame; `index` is the frame's position in the clip."""

    def embed(self, frame: np.ndarray, index: int) -> np.ndarray: ...


class FrameRecorder(Protocol):
    """Sees every released frame and contributes ledger rows (fingerprints) to the publish."""

    def add(self, frame: np.ndarray, index: int) -> None: ...

    def records(self, generation_id: str) -> list[Base]: ...


@dataclass(frozen=True)
class WatermarkSpec:
    """How published clips are marked: the algorithm name, the key id, and the embedder factory."""

    algorithm: str
    key_id: str
    make_marker: Callable[[int], FrameMarker]
    #: Reads the mark back from the signed file before release (issue 22); None: no read-back.
    read_back: MarkReader | None = None
    #: The next strength step, used once when the read-back fails; None: fail at once.
    make_stronger: Callable[[int], FrameMarker] | None = None


@dataclass(frozen=True)
class PublishRequest:
    """What the ledger records about a clip's origin."""

    prompt: str
    model_name: str
    model_hash: str | None = None
    model_version: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    policy_version: str | None = None
    client: str | None = None
    client_id: str | None = None
    key_id: str | None = None
    idempotency_key: str | None = None
    #: SHA-256 of the request that carried `idempotency_key` (the same key with another body is refused).
    request_sha256: str | None = None
    #: The visible AI label burned in before the watermark (None: no label decided, none drawn).
    label: LabelSpec | None = None


@dataclass(frozen=True)
class PublishedClip:
    """A released clip and the record that vouches for it."""

    generation_id: str
    mark_id: int
    path: Path
    sha256: str
    size_bytes: int
    manifest_label: str | None
    signer_fingerprint: str
    watermark_key_id: str | None
    frames: int

    @property
    def mark_hex(self) -> str:
        """The watermark payload as 16 hex digits."""
        return f"{self.mark_id:016x}"


def file_sha256(path: Path) -> str:
    """SHA-256 hex of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_output_path(output: Path, *, overwrite: bool = False) -> Path:
    """Refuse an output we could not (or should not) write before doing any work."""
    output = output.expanduser().absolute()
    mime_for(output)  # UnsupportedFormat for WebM and friends
    if output.is_dir():
        raise OutputNotWritable(f"{output}: is a directory")
    if output.exists() and not overwrite:
        raise OutputNotWritable(f"{output}: already exists (pass --overwrite to replace it)")
    parent = output.parent
    if not parent.is_dir():
        raise OutputNotWritable(f"{parent}: the output folder does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputNotWritable(f"{parent}: the output folder is not writable")
    return output


class Publisher:
    """Turns frames into a released, watermarked, signed and recorded clip.

    `owner` names this process's leases (see `provenance.ledger.states`); `checkpoint`, when set,
    is called with the name of each step boundary (fault-injection tests stop the process there).
    """

    def __init__(self, ledger: Ledger, identity: SigningIdentity, *, trust_pem: str,
                 watermark: WatermarkSpec | None = None,
                 recorders: Sequence[Callable[[float], FrameRecorder]] = (),
                 actor: str = "cli", crf: int = 18, owner: str | None = None,
                 lease_seconds: float = states.DEFAULT_LEASE_SECONDS,
                 checkpoint: Callable[[str], None] | None = None) -> None:
        self.ledger = ledger
        self.identity = identity
        self.trust_pem = trust_pem
        self.watermark = watermark
        self.recorders = list(recorders)
        self.actor = actor
        self.crf = crf
        self.owner = owner or states.new_lease_owner()
        self.lease_seconds = lease_seconds
        self.checkpoint = checkpoint or (lambda _name: None)

    # -- the generation record -------------------------------------------------------------
    def begin(self, request: PublishRequest, *, status: str = "running", stage: str | None = None,
              failure_reason: str | None = None) -> Generation:
        """Create the generation row (with a fresh mark id) before any work is done.

        `running` rows are created under this process's lease (the synchronous executor: the
        CLI); `queued`, `blocked` and `review` rows hold no lease.
        """
        if status not in ("running", "queued", "blocked", "review"):
            raise ValueError(f"a generation cannot start as {status!r}")
        running = status == "running"
        with self.ledger.session() as s:
            gen = Generation(
                prompt=request.prompt, prompt_sha256=prompt_digest(request.prompt),
                model=request.model_name, model_hash=request.model_hash, parameters=request.parameters,
                seed=request.seed, status=status, policy_version=request.policy_version,
                client=request.client, client_id=request.client_id, key_id=request.key_id,
                idempotency_key=request.idempotency_key, request_sha256=request.request_sha256,
                failure_reason=failure_reason,
                started_at=utcnow() if running else None,
                finished_at=utcnow() if status == "blocked" else None,
                stage=stage or ("generating" if running else None),
                lease_owner=self.owner if running else None,
                lease_expires_at=states.lease_deadline(self.lease_seconds) if running else None,
                attempts=1 if running else 0,
                watermark_key_id=self.watermark.key_id if self.watermark else None,
            )
            gen.mark_id = new_mark_id()
            s.add(gen)
            s.flush()
            self.ledger.audit(s, self.actor, "generation.created", gen.id, status=status,
                              model=request.model_name, client_id=request.client_id, key_id=request.key_id)
            if status in NOTIFIED_STATUSES:  # born blocked or held: the client's webhook call, same transaction
                enqueue_for_generation(s, gen.id)
        return gen

    def renew(self, generation_id: str, stage: str | None = None) -> None:
        """Extend this process's lease on a running generation (and say which stage it is in)."""
        fields = {"stage": stage} if stage else {}
        with self.ledger.session() as s:
            states.renew(s, generation_id, self.owner, self.lease_seconds, **fields)

    @contextmanager
    def keep_lease(self, generation_id: str) -> Iterator[None]:
        """Renew this process's lease in the background while a long step (the model) runs.

        A renewal that fails (the lease was taken over) stops the heartbeat; the next move under
        the lease then fails with `StateConflict`, so the run cannot publish twice.
        """
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease_seconds / 3):
                try:
                    self.renew(generation_id)
                except states.StateConflict:
                    return
                except ProvenanceError:
                    continue  # the ledger hiccuped: try again before the lease runs out

        thread = threading.Thread(target=beat, name=f"lease-{generation_id[:8]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def fail(self, generation_id: str, reason: str) -> None:
        """Mark a generation this process runs `failed`, with the reason, in its own unit of work.

        A row that moved on meanwhile (another process took over an expired lease, or it is
        already final) is left as it is: failing it would overwrite someone else's outcome.
        """
        try:
            with self.ledger.session() as s:
                states.move(s, generation_id, ("running", "queued"), "failed", owner=self.owner,
                            failure_reason=reason[:2000])
                self.ledger.audit(s, self.actor, "generation.failed", generation_id, **_who(s, generation_id),
                                  reason=reason[:500])
        except states.StateConflict:
            pass

    # -- publishing ------------------------------------------------------------------------
    def publish_file(self, source: Path, output: Path, request: PublishRequest, *,
                     overwrite: bool = False) -> PublishedClip:
        """Put content credentials (and the watermark) on a clip any generator made."""
        output = check_output_path(output, overwrite=overwrite)
        if source.expanduser().absolute() == output:
            raise OutputNotWritable(f"{output}: the output must differ from the input")
        info = probe(source)  # InvalidVideo before any ledger row exists
        if min(info.width, info.height) < MIN_PUBLISH_SIDE:
            raise InvalidVideo(f"{source}: {info.width}x{info.height} is below the {MIN_PUBLISH_SIDE}px "
                               "minimum a watermark and fingerprint need")
        gen = self.begin(request, stage="publishing")
        return self.publish(gen.id, iter_frames(source), info.fps, output, request, overwrite=overwrite)

    def publish(self, generation_id: str, frames: Iterable[np.ndarray], fps: float, output: Path,
                request: PublishRequest, *, overwrite: bool = False) -> PublishedClip:
        """Release `frames` as `output`, recorded under `generation_id`; fails closed.

        The generation must be `running` under this process's lease (`StateConflict` otherwise:
        a blocked, held, failed or already published generation is never published).
        """
        output = check_output_path(output, overwrite=overwrite)
        signed = temp_path_for(output, generation_id, "signed")
        encoded = temp_path_for(output, generation_id, "encoded")
        # 1. Name the files on the row before any byte exists.
        with self.ledger.session() as s:
            states.renew(s, generation_id, self.owner, self.lease_seconds, stage="publishing",
                         output_path=str(output), temp_path=str(signed))
            gen = s.get(Generation, generation_id)
            assert gen is not None
            mark_id, who = gen.mark_id, {"client_id": gen.client_id, "key_id": gen.key_id}
        self.checkpoint("named")
        recorded = released = False
        try:
            # 2. Write, sign, flush and read back under the temporary names.
            # The visible label first, then the mark: the mark and the fingerprints cover the labelled frames.
            labelled = burn_in(frames, request.label, fps)
            # Read the mark back before release (issue 22): if it does not read, mark once more at the
            # next strength step from the kept frames; if it still does not, the generation fails.
            wm = self.watermark
            reader = wm.read_back if wm is not None else None
            markers = [wm.make_marker] + ([wm.make_stronger] if wm.make_stronger else []) if wm else [None]
            spool = FrameSpool() if reader is not None and len(markers) > 1 else None
            source = spool.through(labelled) if spool is not None else labelled
            read: ReadBack | None = None
            for attempt, make_marker in enumerate(markers):
                recorders = [make(fps) for make in self.recorders]
                with platform_copy(reader) as platform:
                    count = encode_marked(source, mark_id, make_marker, fps, encoded, self.crf, recorders,
                                          platform, reader)
                    self.checkpoint("encoded")
                    manifest, creds, verified = self._sign(encoded, signed, generation_id, output, request, mark_id)
                    if reader is None or platform is None:
                        break
                    read = reader.read(signed, platform, mark_id)
                self.checkpoint("read_back")
                if read.ok:
                    break
                signed.unlink(missing_ok=True)
                if attempt + 1 == len(markers):
                    twice = " (twice)" if attempt else ""
                    raise WatermarkUnreadable(f"the watermark could not be read back before release{twice}, so the "
                                              f"clip was not published: {read.reason}")
                source = spool.replay()  # type: ignore[union-attr]  # two markers: spooled
            del spool  # the kept frames (an anonymous temporary file beyond the memory budget)
            digest, size = file_sha256(signed), signed.stat().st_size
            self.checkpoint("signed")
            # 3. Commit the record, still under the lease (a lost lease aborts here).
            with self.ledger.session() as s:
                states.renew(s, generation_id, self.owner, self.lease_seconds, stage="releasing")
                s.add(PublishedFile(
                    generation_id=generation_id, path=str(output), sha256=digest, size_bytes=size,
                    mime_type=mime_for(output), manifest_label=creds.manifest_label, manifest=manifest,
                    signer_fingerprint=self.identity.leaf_fingerprint, manifest_verified=verified,
                    label_mode=request.label.mode if request.label is not None else None,
                    label_text=(request.label.shown_text or None) if request.label is not None else None,
                    watermark_read_back=read.ok if read is not None else None,
                    watermark_read_back_p=read.p_value if read is not None else None,
                    watermark_read_back_margin=read.margin if read is not None else None,
                    watermark_read_back_headroom_db=read.headroom_db if read is not None else None,
                ))
                for recorder in recorders:
                    s.add_all(recorder.records(generation_id))
            recorded = True
            self.checkpoint("recorded")
            # 4. Release: the rename is atomic; the folder's fsync makes it durable.
            os.replace(signed, output)
            released = True
            fsync_dir(output.parent)
            self.checkpoint("renamed")
            # 5. Published.
            with self.ledger.session() as s:
                states.move(s, generation_id, ("running",), "published", owner=self.owner, temp_path=None)
                self.ledger.audit(s, self.actor, "generation.published", generation_id, **who, path=str(output),
                                  sha256=digest, frames=count)
            self.checkpoint("published")
            return PublishedClip(generation_id, mark_id, output, digest, size, creds.manifest_label,
                                 self.identity.leaf_fingerprint,
                                 self.watermark.key_id if self.watermark else None, count)
        except BaseException as exc:
            self.abandon(generation_id, output if released else None, [encoded, signed], recorded, exc)
            raise

    def publish_external(self, frames: Iterable[np.ndarray], fps: float, output: Path,
                         make_marker: Callable[[int], FrameMarker], *, mark_id: int, key_id: str, model_name: str,
                         source_name: str, crf: int = 18) -> PublishedClip:
        """Release a clip marked by hand (`credence watermark embed`) by the same crash-safe steps as `publish`.

        Every mark our detector trusts has a record, so the clip is recorded as an external-publish
        generation: created `running` under this process's lease, with `model_name`, `mark_id` as its
        mark id (`WatermarkError` for a mark id the ledger already knows) and `output` and its
        temporary named on the row. Then the marked clip is written under the temporary name and
        fsynced, its published-file row committed under the lease (stage `releasing`), renamed into
        place, the folder fsynced, and the row moved to `published` with a `watermark.embedded` audit
        entry. No manifest and no fingerprints: the content is not ours. Any failure rolls back
        (`abandon`). `output` is absolute and already checked by the caller.
        """
        generation_id = self._begin_external(mark_id, key_id, model_name, source_name, output)
        signed = temp_path_for(output, generation_id)
        marker = make_marker(mark_id)
        released = False
        try:
            with VideoWriter(signed, fps, crf=crf) as writer:
                for index, frame in enumerate(frames):
                    writer.write(marker.embed(frame, index))
                count = writer.frames_written
            fsync_file(signed)
            digest, size = file_sha256(signed), signed.stat().st_size
            with self.ledger.session() as s:
                states.renew(s, generation_id, self.owner, self.lease_seconds, stage="releasing")
                s.add(PublishedFile(generation_id=generation_id, path=str(output), sha256=digest, size_bytes=size,
                                    mime_type=mime_for(output), manifest_label=None, manifest=None,
                                    signer_fingerprint=""))
            os.replace(signed, output)
            released = True
            fsync_dir(output.parent)
            with self.ledger.session() as s:
                states.move(s, generation_id, ("running",), "published", owner=self.owner, temp_path=None)
                self.ledger.audit(s, self.actor, "watermark.embedded", generation_id, payload=f"{mark_id:016x}",
                                  key_id=key_id, path=str(output), sha256=digest)
        except BaseException as exc:
            self.abandon(generation_id, output if released else None, [signed], True, exc)
            raise
        return PublishedClip(generation_id, mark_id, output, digest, size, None, "", key_id, count)

    def _begin_external(self, mark_id: int, key_id: str, model_name: str, source_name: str, output: Path) -> str:
        """The external-publish row (step 1 of `publish_external`); refuses a mark id the ledger already knows."""
        # Imported here: the watermark loads torch, which publishing's other callers (recovery,
        # `credence doctor`) never need; whoever marks a clip has loaded it already.
        from .watermark.embed import WatermarkError

        if self.ledger.find_by_mark(mark_id) is not None:
            raise WatermarkError(f"payload {mark_id:016x} is already a mark id in the ledger: choose another payload")
        with self.ledger.session() as s:
            gen = Generation(prompt="", prompt_sha256=prompt_digest(""), model=model_name,
                             parameters={"external": True, "source": source_name}, status="running",
                             stage="publishing", lease_owner=self.owner,
                             lease_expires_at=states.lease_deadline(self.lease_seconds), attempts=1,
                             watermark_key_id=key_id, client=None, output_path=str(output),
                             temp_path=str(temp_path_for(output, "0" * 36)))
            gen.mark_id = mark_id
            s.add(gen)
            s.flush()
            gen.temp_path = str(temp_path_for(output, gen.id))
            self.ledger.audit(s, self.actor, "generation.created", gen.id, status="running", model=model_name)
            return gen.id

    def abandon(self, generation_id: str, released: Path | None, temps: list[Path], recorded: bool,
                 exc: BaseException) -> None:
        """Undo a publish that failed in this process: no file at the final path without `published`.

        When the ledger itself is what failed, the row keeps its lease and names its files, and
        recovery finishes or rolls it back once the lease runs out.
        """
        try:
            with self.ledger.session() as s:
                gen = s.get(Generation, generation_id)
                if gen is not None and gen.status == "published":
                    return  # the failure came after the release was committed: it stands
                if recorded:
                    s.query(Fingerprint).filter(Fingerprint.generation_id == generation_id).delete()
                    s.query(PublishedFile).filter(PublishedFile.generation_id == generation_id).delete()
                reason = f"{type(exc).__name__}: {exc}"
                states.move(s, generation_id, ("running",), "failed", owner=self.owner,
                            failure_reason=reason[:2000], temp_path=None)
                self.ledger.audit(s, self.actor, "generation.failed", generation_id, **_who(s, generation_id),
                                  reason=reason[:500])
        except (ProvenanceError, states.StateConflict):
            return  # recovery will see the named files once the lease expires
        for temp in temps:
            temp.unlink(missing_ok=True)
        if released is not None:
            released.unlink(missing_ok=True)

    def _sign(self, encoded: Path, signed: Path, generation_id: str, output: Path, request: PublishRequest,
              mark_id: int) -> tuple[bytes, Any, bool]:
        """Sign the encoded clip into `signed`, fsync it and read it back as valid, trusted and ours."""
        content = ManifestContent(
            generation_id=generation_id, title=output.name, model_name=request.model_name,
            model_version=request.model_version or (request.model_hash or "")[:12] or None,
            policy_version=request.policy_version,
            watermark_alg=self.watermark.algorithm if self.watermark else None,
            watermark_id=f"{mark_id:016x}" if self.watermark else None,
            watermark_key_id=self.watermark.key_id if self.watermark else None,
            label=request.label.record() if request.label is not None else None,
        )
        manifest = sign_manifest(encoded, signed, content, self.identity, trust_pem=self.trust_pem)
        encoded.unlink(missing_ok=True)
        fsync_file(signed)
        creds = read_credentials(signed, trust_pem=self.trust_pem, our_signers={self.identity.leaf_serial})
        verified = creds.ours and creds.state == "Trusted" and creds.generation_id == generation_id
        if not verified:
            raise SigningUnavailable(f"the signed file does not verify as ours (state {creds.state}, "
                                     f"codes {creds.codes})")
        return manifest, creds, verified


def _who(session: Any, generation_id: str) -> dict[str, str | None]:
    """The client and key a generation belongs to, for its audit entries."""
    gen = session.get(Generation, generation_id)
    return {"client_id": gen.client_id if gen else None, "key_id": gen.key_id if gen else None}
