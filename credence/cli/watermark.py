"""`credence watermark embed|detect`: the keyed invisible watermark on any clip, for users and benchmarks.

`embed` marks a clip with the active key (from `credence init`) and a 64-bit payload given as
16 hex digits, and writes H.264 CRF 18. Every mark our detector trusts has a ledger record, so
`embed` records an external-publish generation with the payload as its mark id (a payload
already in the ledger is refused) and releases the file the way `provenance.publish` does:
named on the row, written and fsynced under a temporary name, recorded, renamed, published.
`detect` tries every key under CREDENCE_HOME (old keys
too, so rotated keys still find old clips) and prints the decision, its p-value and the payload.
Exit 2 with a one-line reason for a bad payload, a missing key or a file that is not a usable video.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..settings import Settings
from .common import console, handles_errors, runtime

if TYPE_CHECKING:
    from provenance.watermark import WatermarkKey

    from ..runtime import Runtime

# The watermark loads torch, the ledger SQLAlchemy, the video PyAV: each command imports what it
# uses, so `credence --help` and the other commands do not wait for them.

#: The model name of the generation a hand-made mark is recorded as.
EXTERNAL_MODEL = "external (credence watermark embed)"

app = typer.Typer(help="Embed and detect Credence's keyed invisible watermark.", no_args_is_help=True)

_HEX16 = re.compile(r"[0-9a-fA-F]{16}")


def parse_payload(text: str) -> int:
    """A payload written as exactly 16 hex digits (an optional 0x prefix is allowed)."""
    from provenance.watermark import WatermarkError

    digits = text[2:] if text.lower().startswith("0x") else text
    if not _HEX16.fullmatch(digits):
        raise WatermarkError(f"payload {text!r} must be exactly 16 hex digits (64 bits), e.g. 00c0ffee12345678")
    return int(digits, 16)


def _keys_dir() -> Path:
    return Settings.from_env().keys_dir


def _key(key_id: str | None) -> WatermarkKey:
    from provenance.errors import KeyMissing
    from provenance.keys import active_watermark_secret, load_watermark_secrets
    from provenance.watermark import WatermarkKey

    keys_dir = _keys_dir()
    if key_id is None:
        secret = active_watermark_secret(keys_dir)
        return WatermarkKey(secret.key_id, secret.secret)
    for secret in load_watermark_secrets(keys_dir):
        if secret.key_id == key_id:
            return WatermarkKey(secret.key_id, secret.secret)
    raise KeyMissing(f"no watermark key {key_id!r} under {keys_dir}; run `credence init` or check the id")


@app.command()
@handles_errors
def embed(
    input: Annotated[Path, typer.Argument(help="Clip to mark.")],
    output: Annotated[Path, typer.Argument(help="Where to write the marked clip (H.264, CRF 18).")],
    payload: Annotated[str, typer.Option("--payload", help="64-bit payload as 16 hex digits.")],
    key_id: Annotated[str | None, typer.Option("--key-id", help="Mark with this key (default: the active one).")]
    = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Mark every frame of INPUT with PAYLOAD and write OUTPUT."""
    from provenance.credentials import mime_for
    from provenance.errors import InvalidVideo, OutputNotWritable
    from provenance.fsio import fsync_dir, fsync_file
    from provenance.ledger import PublishedFile, states
    from provenance.publish import file_sha256, temp_path_for
    from provenance.video import VideoWriter, iter_frames, probe
    from provenance.watermark import MIN_SIDE, WatermarkEmbedder

    value = parse_payload(payload)
    key = _key(key_id)
    output = output.expanduser().absolute()
    if input.expanduser().absolute() == output:
        raise OutputNotWritable(f"{output}: the output must differ from the input")
    if output.exists() and not overwrite:
        raise OutputNotWritable(f"{output}: already exists (pass --overwrite to replace it)")
    if not output.parent.is_dir():
        raise OutputNotWritable(f"{output.parent}: the output folder does not exist")
    info = probe(input)
    if min(info.width, info.height) < MIN_SIDE:
        raise InvalidVideo(f"{input}: {info.width}x{info.height} is below the {MIN_SIDE}px minimum the watermark needs")
    rt = runtime(actor="cli")
    gen_id = _begin_external(rt, value, key.key_id, input, output)
    signed = temp_path_for(output, gen_id)
    marker = WatermarkEmbedder(key, value)
    released = False
    try:
        with VideoWriter(signed, info.fps, crf=18) as writer:
            for index, frame in enumerate(iter_frames(input)):
                writer.write(marker.embed(frame, index))
        fsync_file(signed)
        digest, size = file_sha256(signed), signed.stat().st_size
        with rt.ledger.session() as s:
            states.renew(s, gen_id, rt.owner, rt.settings.lease_seconds, stage="releasing")
            s.add(PublishedFile(generation_id=gen_id, path=str(output), sha256=digest, size_bytes=size,
                                mime_type=mime_for(output), manifest_label=None, manifest=None, signer_fingerprint=""))
        os.replace(signed, output)
        released = True
        fsync_dir(output.parent)
        with rt.ledger.session() as s:
            states.move(s, gen_id, ("running",), "published", owner=rt.owner, temp_path=None)
            rt.ledger.audit(s, rt.actor, "watermark.embedded", gen_id, payload=f"{value:016x}", key_id=key.key_id,
                            path=str(output), sha256=digest)
    except BaseException as exc:
        rt.publisher.abandon(gen_id, output if released else None, [signed], True, exc)
        raise
    console.print(f"marked [bold]{output}[/] with payload {value:016x} (key {key.key_id}), "
                  f"recorded as generation {gen_id}")


def _begin_external(rt: Runtime, mark_id: int, key_id: str, source: Path, output: Path) -> str:
    """The external-publish row for a mark made by hand; refuses a payload the ledger already knows."""
    from provenance.ledger import Generation, prompt_digest, states
    from provenance.publish import temp_path_for
    from provenance.watermark import WatermarkError

    if rt.ledger.find_by_mark(mark_id) is not None:
        raise WatermarkError(f"payload {mark_id:016x} is already a mark id in the ledger: choose another payload")
    with rt.ledger.session() as s:
        gen = Generation(prompt="", prompt_sha256=prompt_digest(""), model=EXTERNAL_MODEL,
                         parameters={"external": True, "source": source.name}, status="running", stage="publishing",
                         lease_owner=rt.owner, lease_expires_at=states.lease_deadline(rt.settings.lease_seconds),
                         attempts=1, watermark_key_id=key_id, client=None, output_path=str(output),
                         temp_path=str(temp_path_for(output, "0" * 36)))
        gen.mark_id = mark_id
        s.add(gen)
        s.flush()
        gen.temp_path = str(temp_path_for(output, gen.id))
        rt.ledger.audit(s, rt.actor, "generation.created", gen.id, status="running", model=EXTERNAL_MODEL)
        return gen.id


@app.command()
@handles_errors
def detect(
    file: Annotated[Path, typer.Argument(help="Clip to check.")],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Look for the watermark of any key under CREDENCE_HOME; print the decision, p-value and payload."""
    from provenance.errors import InvalidVideo, KeyMissing
    from provenance.keys import load_watermark_secrets
    from provenance.watermark import WatermarkKey, detect_watermark_file

    secrets = load_watermark_secrets(_keys_dir())
    if not secrets:
        raise KeyMissing(f"no watermark keys under {_keys_dir()}; run `credence init`")
    keys = [WatermarkKey(s.key_id, s.secret) for s in secrets]
    result = detect_watermark_file(file, keys)
    if result.reason and not result.detected and result.frames_used == 0:
        raise InvalidVideo(f"{file}: {result.reason}")
    body = result.to_dict()
    if json_:
        print(json.dumps(body))
        return
    verdict = "[bold green]detected[/]" if result.detected else "not detected"
    console.print(f"{verdict}  p-value {result.p_value:.3g}  payload {body['payload'] or '-'}  "
                  f"key {body['key_id'] or '-'}")
