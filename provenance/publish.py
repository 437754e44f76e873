"""Publishing: watermark, encode, fingerprint, sign and record a clip in one unit of work.

No clip leaves without its record. Everything is written to hidden temporary files beside the
output; the final name appears (an atomic rename) only after the manifest was signed, read back
as valid and ours, and the ledger rows are in the same transaction that commits. Any failure
removes the temporaries and marks the generation `failed` with the reason.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .credentials import ManifestContent, mime_for, read_credentials, sign_manifest
from .errors import InvalidVideo, OutputNotWritable, ProvenanceError, SigningUnavailable
from .keys import SigningIdentity
from .ledger import Generation, Ledger, PublishedFile, new_mark_id, prompt_digest
from .ledger.models import Base, utcnow
from .video import VideoWriter, iter_frames, probe

MIN_PUBLISH_SIDE = 64


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
    """Turns frames into a released, watermarked, signed and recorded clip."""

    def __init__(self, ledger: Ledger, identity: SigningIdentity, *, trust_pem: str,
                 watermark: WatermarkSpec | None = None,
                 recorders: Sequence[Callable[[float], FrameRecorder]] = (),
                 actor: str = "cli", crf: int = 18) -> None:
        self.ledger = ledger
        self.identity = identity
        self.trust_pem = trust_pem
        self.watermark = watermark
        self.recorders = list(recorders)
        self.actor = actor
        self.crf = crf

    # -- the generation record -------------------------------------------------------------
    def begin(self, request: PublishRequest, *, status: str = "pending") -> Generation:
        """Create the generation row (with a fresh mark id) before any work is done."""
        with self.ledger.session() as s:
            gen = Generation(
                prompt=request.prompt, prompt_sha256=prompt_digest(request.prompt),
                model=request.model_name, model_hash=request.model_hash, parameters=request.parameters,
                seed=request.seed, status=status, policy_version=request.policy_version,
                client=request.client,
                watermark_key_id=self.watermark.key_id if self.watermark else None,
            )
            gen.mark_id = new_mark_id()
            s.add(gen)
            s.flush()
            self.ledger.audit(s, self.actor, "generation.created", gen.id, status=status,
                              model=request.model_name)
        return gen

    def fail(self, generation_id: str, reason: str) -> None:
        """Mark a generation failed, with the reason, in its own unit of work."""
        with self.ledger.session() as s:
            gen = s.get(Generation, generation_id)
            if gen is not None:
                gen.status, gen.failure_reason, gen.updated_at = "failed", reason[:2000], utcnow()
                self.ledger.audit(s, self.actor, "generation.failed", generation_id, reason=reason[:500])

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
        gen = self.begin(request)
        return self.publish(gen.id, iter_frames(source), info.fps, output, request, overwrite=overwrite)

    def publish(self, generation_id: str, frames: Iterable[np.ndarray], fps: float, output: Path,
                request: PublishRequest, *, overwrite: bool = False) -> PublishedClip:
        """Release `frames` as `output`, recorded under `generation_id`; fails closed."""
        output = check_output_path(output, overwrite=overwrite)
        with self.ledger.session() as s:
            gen = s.get(Generation, generation_id)
            if gen is None:
                raise ProvenanceError(f"unknown generation {generation_id}")
            mark_id = gen.mark_id
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
        encoded, signed = tmp_dir / f"encoded{output.suffix}", tmp_dir / f"signed{output.suffix}"
        renamed = False
        try:
            recorders = [make(fps) for make in self.recorders]
            count = self._encode(self._marked(frames, mark_id), fps, encoded, recorders)
            content = ManifestContent(
                generation_id=generation_id, title=output.name, model_name=request.model_name,
                model_version=request.model_version or (request.model_hash or "")[:12] or None,
                policy_version=request.policy_version,
                watermark_alg=self.watermark.algorithm if self.watermark else None,
                watermark_id=f"{mark_id:016x}" if self.watermark else None,
                watermark_key_id=self.watermark.key_id if self.watermark else None,
            )
            manifest = sign_manifest(encoded, signed, content, self.identity, trust_pem=self.trust_pem)
            creds = read_credentials(signed, trust_pem=self.trust_pem, our_signers={self.identity.leaf_serial})
            if not (creds.ours and creds.state == "Trusted" and creds.generation_id == generation_id):
                raise SigningUnavailable(f"the signed file does not verify as ours (state {creds.state}, "
                                         f"codes {creds.codes})")
            digest, size = file_sha256(signed), signed.stat().st_size
            with self.ledger.session() as s:
                gen = s.get(Generation, generation_id)
                assert gen is not None
                gen.status, gen.updated_at = "published", utcnow()
                s.add(PublishedFile(
                    generation_id=generation_id, path=str(output), sha256=digest, size_bytes=size,
                    mime_type=mime_for(output), manifest_label=creds.manifest_label, manifest=manifest,
                    signer_fingerprint=self.identity.leaf_fingerprint,
                ))
                for recorder in recorders:
                    s.add_all(recorder.records(generation_id))
                self.ledger.audit(s, self.actor, "generation.published", generation_id, path=str(output),
                                  sha256=digest, frames=count)
                s.flush()
                # The rename is the release; it happens inside the transaction so that a failed
                # commit can take it back, and a failed rename rolls the rows back.
                os.replace(signed, output)
                renamed = True
            return PublishedClip(generation_id, mark_id, output, digest, size, creds.manifest_label,
                                 self.identity.leaf_fingerprint,
                                 self.watermark.key_id if self.watermark else None, count)
        except BaseException as exc:
            if renamed and not _is_recorded(self.ledger, generation_id, output):
                output.unlink(missing_ok=True)
            self.fail(generation_id, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            for leftover in tmp_dir.glob("*"):
                leftover.unlink(missing_ok=True)
            tmp_dir.rmdir()

    def _marked(self, frames: Iterable[np.ndarray], mark_id: int) -> Iterator[np.ndarray]:
        if self.watermark is None:
            yield from frames
            return
        marker = self.watermark.make_marker(mark_id)
        for index, frame in enumerate(frames):
            yield marker.embed(frame, index)

    def _encode(self, frames: Iterable[np.ndarray], fps: float, path: Path,
                recorders: list[FrameRecorder]) -> int:
        with VideoWriter(path, fps, crf=self.crf) as writer:
            for index, frame in enumerate(frames):
                if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                    raise InvalidVideo(f"frame {index} is {frame.dtype} {frame.shape}, expected uint8 HxWx3")
                writer.write(frame)
                for recorder in recorders:
                    recorder.add(frame, index)
            if writer.frames_written == 0:
                raise InvalidVideo("the clip has no frames")
            return writer.frames_written


def _is_recorded(ledger: Ledger, generation_id: str, output: Path) -> bool:
    """True when `output` is the committed release of this generation (never delete that)."""
    try:
        gen = ledger.get_generation(generation_id)
    except ProvenanceError:
        return False
    return gen is not None and gen.status == "published" and any(f.path == str(output) for f in gen.files)
