"""The generation flow: moderate → generate → screen the output → publish, in that order.

A blocked or held prompt never reaches the generator; a held output is never written; any
failure after moderation leaves a `failed` generation row with the reason and no released file.
The row moves through the ledger's state machine (`provenance.ledger.states`): created `running`
under this process's lease (or straight to `blocked` / `review` when the prompt screen says so),
then `running` stages, then `published`, `review` (output held), `blocked` or `failed`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provenance.ledger import Generation, ModerationDecision, prompt_digest, states
from provenance.ledger.models import utcnow
from provenance.publish import PublishRequest, check_output_path

from ..labels import resolve_label
from ..runtime import Runtime
from .hold import held_output_message, quarantine_output
from .options import GenerateOptions, begin_request, publish_request
from .protocols import Decision, Model, Moderator

if TYPE_CHECKING:
    from generator import Clip

#: Exit codes of `credence generate`, by outcome.
EXIT_CODES = {"published": 0, "blocked": 3, "review": 4}


@dataclass
class GenerateOutcome:
    """The answer of `credence generate --json` and `POST /v1/generations`."""

    status: str  # "published" | "blocked" | "review"
    generation_id: str
    path: str | None
    moderation: dict[str, Any]
    output_moderation: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form; `output_moderation` only when the output was screened."""
        result = {"status": self.status, "generation_id": self.generation_id, "path": self.path,
                  "moderation": self.moderation}
        if self.output_moderation is not None:
            result["output_moderation"] = self.output_moderation
        return result | self.extra


@dataclass
class Progress:
    """Callbacks the CLI turns into progress bars (the API passes none)."""

    loading: Callable[[str, int, int], None] | None = None
    denoising: Callable[[int, int], None] | None = None
    stage: Callable[[str], None] | None = None


_models: dict[tuple[Any, ...], Model] = {}
_models_lock = threading.Lock()


def load_model(folder: Path | None, progress: Progress | None = None,
               options: GenerateOptions | None = None) -> Model:
    """The text-to-video model in `folder` (the shipped default when None), loaded once per process.

    Device, dtype and the memory options are part of the cache key: the same folder loaded for
    another device is another model.
    """
    from generator import TextToVideoModel

    o = options or GenerateOptions()
    key = (str(folder.resolve()) if folder else "<default>", o.device, o.dtype, o.cpu_offload, o.vae_tiling)
    with _models_lock:
        if key not in _models:
            _models[key] = TextToVideoModel.load(folder, device=o.device, dtype=o.dtype, cpu_offload=o.cpu_offload,
                                                 vae_tiling=o.vae_tiling, vae_slicing=o.vae_tiling,
                                                 progress=progress.loading if progress else None)
        return _models[key]


def record_decision(runtime: Runtime, generation_id: str | None, stage: str, prompt: str, decision: Decision,
                    status: str | None = None, actor: str | None = None, *, client_id: str | None = None,
                    key_id: str | None = None, overlay_hash: str | None = None) -> None:
    """Record one decision (the prompt's SHA-256, never the prompt) and its audit entry; with `status`,
    move the running generation (this process's lease) to it in the same unit of work."""
    data = decision.to_dict()
    with runtime.ledger.session() as s:
        s.add(ModerationDecision(
            generation_id=generation_id, stage=stage, prompt_sha256=prompt_digest(prompt), action=decision.action,
            scores=data.get("scores", {}), reasons=data.get("reasons", []),
            policy_version=decision.policy_version, policy_hash=getattr(decision, "policy_hash", None),
            overlay_hash=overlay_hash, client_id=client_id, key_id=key_id,
        ))
        if status is not None and generation_id is not None:
            states.move(s, generation_id, ("running",), status, owner=runtime.publisher.owner, stage=stage)
        runtime.ledger.audit(s, actor or runtime.actor, f"moderation.{stage}.{decision.action}", generation_id,
                             client_id=client_id, key_id=key_id)


def screen_and_create(runtime: Runtime, moderator: Moderator, prompt: str, options: GenerateOptions, *,
                      start: str = "running", idempotency_key: str | None = None,
                      request_sha256: str | None = None) -> tuple[Generation, Decision, str]:
    """Screen the prompt and create the generation row where the decision puts it.

    Returns (row, decision, status). A blocked prompt's row is `blocked`, a held one `review`
    (stage `prompt`): neither ever holds a lease or reaches a model. Otherwise the row is `start`:
    `running` under this process's lease (the synchronous CLI) or `queued` (a job).
    """
    decision = moderator.screen_prompt(prompt)  # raises (fails closed) when no decision can be made
    held = {"block": "blocked", "review": "review"}.get(decision.action)
    status = held or start
    gen = runtime.publisher.begin(begin_request(prompt, options, decision, idempotency_key=idempotency_key,
                                                request_sha256=request_sha256),
                                  status=status, stage="prompt" if held else None)
    record_decision(runtime, gen.id, "prompt", prompt, decision, client_id=options.client_id, key_id=options.key_id,
                    overlay_hash=options.overlay_hash)
    return gen, decision, status


def generate(runtime: Runtime, moderator: Moderator, prompt: str, output: Path, options: GenerateOptions,
             progress: Progress | None = None) -> GenerateOutcome:
    """The whole generation flow for one prompt, synchronously (`credence generate`). Reads as its steps."""
    stage = progress.stage if progress and progress.stage else (lambda _s: None)
    output = check_output_path(output, overwrite=options.overwrite)
    stage("moderating the prompt")
    gen, decision, status = screen_and_create(runtime, moderator, prompt, options)
    if status != "running":
        return GenerateOutcome(status, gen.id, None, decision.to_dict())
    return execute(runtime, moderator, gen.id, prompt, output, options, decision.to_dict(), progress)


def execute(runtime: Runtime, moderator: Moderator, generation_id: str, prompt: str, output: Path,
            options: GenerateOptions, prompt_decision: dict[str, Any], progress: Progress | None = None,
            ) -> GenerateOutcome:
    """Generate, screen the output and publish a generation this process holds (`running`, its lease).

    The one job function: the CLI calls it after creating the row, a worker after claiming it.
    """
    stage = progress.stage if progress and progress.stage else (lambda _s: None)
    publisher = runtime.publisher
    ids = {"client_id": options.client_id, "key_id": options.key_id, "overlay_hash": options.overlay_hash}
    try:
        with publisher.keep_lease(generation_id):
            # The visible label (the policy's, a client overlay's, a stronger `--label`): decided
            # before the model runs, so a refused mode costs no GPU time.
            label = resolve_label(runtime.ledger, moderator, options.label, options.client_id, options.client)
            stage("loading the model")
            model = load_model(options.model, progress, options)
            from generator import GenerationRequest

            stage("generating")
            runtime.checkpoint("generating")
            clip = model.generate(GenerationRequest(
                prompt=prompt, seed=options.seed, num_frames=options.frames, height=options.height,
                width=options.width, steps=options.steps, guidance=options.guidance,
            ), progress=progress.denoising if progress else None)
            request = _record_model(runtime, generation_id, clip)

            stage("screening the output")
            screened = moderator.screen_frames(clip.frames)
    except BaseException as exc:
        publisher.fail(generation_id, f"{type(exc).__name__}: {exc}")
        raise
    held = {"block": "blocked", "review": "review"}.get(screened.action)
    if held == "review":  # the reviewer needs exactly these frames: kept before the row says `review`
        quarantine_output(runtime, generation_id, clip.frames, clip.fps)
    record_decision(runtime, generation_id, "output", prompt, screened, held, **ids)
    if held is not None:
        # The client is told that the video, not the prompt, was held (the category messages speak of requests).
        message = held_output_message(held)
        return GenerateOutcome(held, generation_id, None, prompt_decision,
                               screened.to_dict() | {"user_message": message}, extra={"user_message": message})

    stage("publishing")
    request = replace(request, label=label)
    published = publisher.publish(generation_id, clip.frames, clip.fps, output, request, overwrite=options.overwrite)
    return GenerateOutcome("published", generation_id, str(published.path), prompt_decision, screened.to_dict(),
                           extra={"mark_id": published.mark_hex, "sha256": published.sha256,
                                  "label": label.record() if label.enabled else {"mode": "off"}})


def _record_model(runtime: Runtime, generation_id: str, clip: Clip) -> PublishRequest:
    """Record what actually ran (model, weights' hash, seed, parameters), still under the lease; returns
    what the publisher will sign and record, read from the row just written."""
    with runtime.ledger.session() as s:
        states.renew(s, generation_id, runtime.publisher.owner, runtime.publisher.lease_seconds, stage="screening")
        gen = s.get(Generation, generation_id)
        assert gen is not None
        gen.model, gen.model_hash, gen.seed = clip.model_name, clip.model_hash, clip.seed
        gen.parameters, gen.updated_at = dict(clip.parameters), utcnow()
        return publish_request(gen)
