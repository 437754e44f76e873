"""`credence watermark embed|detect`: the keyed invisible watermark on any clip, for users and benchmarks.

`embed` marks a clip with the active key (from `credence init`) and a 64-bit payload given as
16 hex digits, and writes H.264 CRF 18. Every mark our detector trusts has a ledger record, so
`embed` records an external-publish generation with the payload as its mark id (a payload
already in the ledger is refused) and releases the file by `Publisher.publish_external`, the
publisher's own crash-safe steps: named on the row, written and fsynced under a temporary name,
recorded, renamed, published.
`detect` tries every key under CREDENCE_HOME (old keys
too, so rotated keys still find old clips) and prints the decision, its p-value and the payload.
Exit 2 with a one-line reason for a bad payload, a missing key or a file that is not a usable video.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..settings import Settings
from .common import console, handles_errors, runtime

if TYPE_CHECKING:
    from provenance.watermark import WatermarkKey

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
    from provenance.errors import InvalidVideo, OutputNotWritable
    from provenance.video import iter_frames, probe
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
    clip = rt.publisher.publish_external(iter_frames(input), info.fps, output,
                                         lambda mark_id: WatermarkEmbedder(key, mark_id), mark_id=value,
                                         key_id=key.key_id, model_name=EXTERNAL_MODEL, source_name=input.name)
    console.print(f"marked [bold]{output}[/] with payload {value:016x} (key {key.key_id}), "
                  f"recorded as generation {clip.generation_id}")


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
