"""What a generation is asked to do, built in one place each.

`GenerateOptions.for_deployment` merges a caller's choices (CLI flags, an API body) with the
deployment's settings; `job_options` rebuilds a job's options from its ledger row, which is the
one record of what the client asked; `publish_request` is what the publisher records and signs,
read from the same row once the model has run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provenance.ledger import Generation
from provenance.publish import PublishRequest

if TYPE_CHECKING:
    from ..settings import Settings
    from .protocols import Decision


@dataclass
class GenerateOptions:
    """What the caller may choose; None means the model's own default."""

    model: Path | None = None
    seed: int | None = None
    frames: int | None = None
    steps: int | None = None
    height: int | None = None
    width: int | None = None
    guidance: float | None = None
    overwrite: bool = False
    client: str | None = None
    client_id: str | None = None
    key_id: str | None = None
    overlay_hash: str | None = None
    device: str | None = None  # None: CUDA, then MPS, then CPU
    dtype: str | None = None
    cpu_offload: bool = False
    vae_tiling: bool = False
    #: A visible-label mode for this run (`--label`): it may strengthen the policy's label, never weaken it.
    label: str | None = None

    @classmethod
    def for_deployment(cls, settings: Settings, *, model: Path | None = None, device: str | None = None,
                       cpu_offload: bool = False, vae_tiling: bool = False, **choices: Any) -> GenerateOptions:
        """The caller's choices over the deployment's model, device, dtype and memory options."""
        return cls(model=model or settings.default_model, device=device or settings.device, dtype=settings.dtype,
                   cpu_offload=cpu_offload or settings.cpu_offload, vae_tiling=vae_tiling or settings.vae_tiling,
                   **choices)

    @property
    def model_label(self) -> str:
        """The model's name as the ledger records it before the model has run."""
        return self.model.name if self.model else "credence-default"

    @property
    def parameters(self) -> dict[str, Any]:
        """The generation parameters the caller set (the ledger row's `parameters`)."""
        return {k: v for k, v in {"frames": self.frames, "steps": self.steps, "height": self.height,
                                  "width": self.width, "guidance": self.guidance}.items() if v is not None}


def job_options(gen: Generation, settings: Settings, overlay_hash: str | None = None) -> GenerateOptions:
    """A queued job's options, from its ledger row: what the client asked, on this deployment's model.

    A job always overwrites its own output (one file name per generation: a retry replaces it).
    """
    params = dict(gen.parameters or {})
    return GenerateOptions.for_deployment(
        settings, seed=gen.seed, frames=params.get("frames"), steps=params.get("steps"), height=params.get("height"),
        width=params.get("width"), guidance=params.get("guidance"), overwrite=True, client_id=gen.client_id,
        key_id=gen.key_id, overlay_hash=overlay_hash)


def begin_request(prompt: str, options: GenerateOptions, decision: Decision, *,
                  idempotency_key: str | None = None, request_sha256: str | None = None) -> PublishRequest:
    """What the ledger records when a generation's row is created, before any model runs."""
    return PublishRequest(prompt=prompt, model_name=options.model_label, policy_version=decision.policy_label,
                          client=options.client, client_id=options.client_id, key_id=options.key_id,
                          idempotency_key=idempotency_key, request_sha256=request_sha256, seed=options.seed,
                          parameters=options.parameters)


def publish_request(gen: Generation) -> PublishRequest:
    """What the publisher signs and records for a generation, from its row (model, seed and
    parameters are what actually ran once the model has been recorded)."""
    return PublishRequest(prompt=gen.prompt, model_name=gen.model, model_hash=gen.model_hash,
                          policy_version=gen.policy_version, client=gen.client, client_id=gen.client_id,
                          key_id=gen.key_id, seed=gen.seed, parameters=dict(gen.parameters or {}))
