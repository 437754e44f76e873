"""The `credence` command line: init, publish, verify, db, and the sub-apps of each area.

Exit codes: 0 success, 2 bad usage or bad input (a one-line reason on stderr, no traceback);
`generate` adds 3 (blocked by policy) and 4 (held for review).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..settings import Settings, SettingsError

# The shared helpers live in `.common`, below every CLI module (no sub-app imports this one);
# re-exported here for callers that know them as `credence.cli.*`. Heavy modules (the runtime, the ledger, torch
# through the watermark, diffusers) are imported inside the commands that use them: `--help` and
# every command's argument parsing start without them.
from .common import EXIT_BAD_INPUT, console, err_console, fail, handles_errors, runtime, user_errors

__all__ = ["EXIT_BAD_INPUT", "app", "console", "err_console", "fail", "handles_errors", "main", "runtime",
           "user_errors"]

app = typer.Typer(help="Credence: safe and accountable text-to-video.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="Ledger schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command()
@handles_errors
def init(json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Create CREDENCE_HOME, the development CA and signing certificate, a watermark key and the ledger.

    Idempotent: existing keys are never overwritten.
    """
    result = runtime().init()
    if json_:
        print(json.dumps(result))
        return
    console.print(f"Credence home: [bold]{result['home']}[/]")
    for name in result["created"]:
        console.print(f"  created {name}")
    if not result["created"]:
        console.print("  keys already present, nothing overwritten")
    console.print(f"Ledger: {result['database']} at revision {result['revision']}")


@app.command()
@handles_errors
def publish(
    input: Annotated[Path, typer.Argument(help="Clip to publish (any generator's output).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the published .mp4/.mov.")],
    prompt: Annotated[str, typer.Option("--prompt", help="The prompt that made the clip.")],
    model: Annotated[str, typer.Option("--model", help="Name of the model that made it.")] = "external",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Label, watermark, sign (C2PA) and record a clip; prints the generation id.

    The prompt goes through the same prompt screen as `generate`: a clip whose prompt the policy
    blocks or holds gets no content credentials (exit 3 or 4, recorded like any decision).
    """
    from provenance.publish import PublishRequest

    from ..generation import EXIT_CODES, record_decision
    from ..labels import label_spec, policy_label
    from ..runtime import ModeratorCache

    rt = runtime()
    moderator = ModeratorCache(rt).base()
    decision = moderator.screen_prompt(prompt)
    # The deployment's visible label goes on a clip from elsewhere too: every clip we publish discloses.
    request = PublishRequest(prompt=prompt, model_name=model, policy_version=decision.policy_label,
                             label=label_spec(policy_label(moderator)))
    held = {"block": "blocked", "review": "review"}.get(decision.action)
    if held is not None:
        gen = rt.publisher.begin(request, status=held, stage="prompt")
        record_decision(rt, gen.id, "prompt", prompt, decision)
        answer = {"status": held, "generation_id": gen.id, "moderation": decision.to_dict()}
        if json_:
            print(json.dumps(answer))
        else:
            reason = decision.to_dict().get("user_message") or "the prompt violates the policy"
            err_console.print(f"[bold red]{held}[/]: {reason} (generation id {gen.id}); nothing was published")
        raise typer.Exit(EXIT_CODES[held])
    clip = rt.publisher.publish_file(input, output, request, overwrite=overwrite)
    record_decision(rt, clip.generation_id, "prompt", prompt, decision)
    result = {"generation_id": clip.generation_id, "path": str(clip.path), "sha256": clip.sha256,
              "mark_id": clip.mark_hex, "manifest_label": clip.manifest_label,
              "watermark_key_id": clip.watermark_key_id}
    if json_:
        print(json.dumps(result))
    else:
        console.print(f"published [bold]{clip.path}[/]")
        console.print(f"generation id [bold green]{clip.generation_id}[/]  mark {clip.mark_hex}")


@app.command()
@handles_errors
def verify(
    file: Annotated[Path, typer.Argument(help="Clip to check.")],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Did Credence make this clip? Prints the verdict and its evidence."""
    from rich.table import Table

    from provenance.errors import InvalidVideo
    from provenance.video import probe

    if not file.is_file():
        raise InvalidVideo(f"{file}: no such file")
    rt = runtime()
    # InvalidVideo for a non-video; VideoTooLarge (exit 2, naming the limit) over the decoding budget,
    # before any decoder opens: the same check as POST /v1/verify.
    probe(file, decode_check=False, limits=rt.settings.decode_limits)
    from detector import matched_record
    from detector import verify as run_verify

    context = rt.verification
    verdict = run_verify(file, context, rt.verification_sources())
    result = verdict.to_dict()
    if verdict.verdict == "generated":
        result["record"] = matched_record(context, verdict.generation_id)
    if json_:
        print(json.dumps(result, default=str))
        return
    colour = {"generated": "green", "not_generated": "yellow", "review": "red"}[verdict.verdict]
    console.print(f"verdict: [bold {colour}]{verdict.verdict}[/]  generation: {verdict.generation_id}")
    table = Table("source", "figures")
    for item in result["evidence"]:
        table.add_row(item["source"], json.dumps({k: v for k, v in item.items() if k != "source"}, default=str))
    console.print(table)
    for seg in result["segments"]:
        clip_part = (f"  (its {seg['clip_start_s']:.1f}-{seg['clip_end_s']:.1f} s)"
                     if seg.get("clip_start_s") is not None else "")
        console.print(f"segment {seg['start_s']:6.1f}-{seg['end_s']:6.1f} s  {seg['generation_id']}{clip_part}  "
                      f"[{', '.join(seg['sources'])}]")


@app.command()
@handles_errors
def generate(
    prompt: Annotated[str, typer.Argument(help="What to generate.")],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Output .mp4 (default: in CREDENCE_HOME/outputs).")] = None,
    model: Annotated[Path | None, typer.Option(
        "--model", help="A diffusers pipeline folder (default: the shipped model).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (same seed, same device: same clip).")] = None,
    frames: Annotated[int | None, typer.Option("--frames", help="Number of frames.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Denoising steps.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")] = False,
    device: Annotated[str | None, typer.Option(
        "--device", help="cuda, cuda:N, mps or cpu (default: CREDENCE_DEVICE, else CUDA, MPS, CPU).")] = None,
    cpu_offload: Annotated[bool, typer.Option(
        "--cpu-offload", help="Keep components on the CPU, move each to the GPU while it runs (big models).")] = False,
    vae_tiling: Annotated[bool, typer.Option(
        "--vae-tiling", help="Decode in tiles and slices where the VAE supports it (lower peak memory).")] = False,
    label: Annotated[str | None, typer.Option(
        "--label", help="Visible AI label for this clip: off, corner, badge or moving. It may only strengthen the "
                        "policy's label (default: the policy's).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Moderate, generate, watermark, sign and record a clip. Exit 3 if blocked, 4 if held for review."""
    import datetime as dt
    import secrets

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .. import generation
    from ..runtime import ModeratorCache

    if frames is not None and frames <= 0:
        raise SettingsError(f"--frames must be positive, got {frames}")
    if steps is not None and steps <= 0:
        raise SettingsError(f"--steps must be positive, got {steps}")
    if model is not None and not model.is_dir():
        raise SettingsError(f"--model {model}: not a folder (pass a diffusers pipeline folder)")
    rt = runtime()
    if output is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        rt.settings.outputs_dir.mkdir(parents=True, exist_ok=True)
        output = rt.settings.outputs_dir / f"clip-{stamp}-{secrets.token_hex(2)}.mp4"
    moderator = ModeratorCache(rt).base()
    if label is not None:  # a weaker mode than the policy's is refused here, before any model runs
        from ..labels import check_requested_mode, policy_label

        check_requested_mode(policy_label(moderator), label)
    options = generation.GenerateOptions.for_deployment(
        rt.settings, model=model, device=device, cpu_offload=cpu_offload, vae_tiling=vae_tiling, seed=seed,
        frames=frames, steps=steps, overwrite=overwrite, label=label)
    # Progress is for a person at a terminal; piped or --json runs keep stderr to the one-line error.
    quiet = json_ or not err_console.is_terminal
    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=json_, disable=quiet)
    tasks: dict[str, Any] = {}

    def loading(name: str, done: int, total: int) -> None:
        tasks.setdefault("load", bars.add_task("loading model", total=total))
        bars.update(tasks["load"], completed=done, total=total, description=f"loading {name}")

    def denoising(step: int, total: int) -> None:
        tasks.setdefault("denoise", bars.add_task("denoising", total=total))
        bars.update(tasks["denoise"], completed=step, total=total)

    def stage(text: str) -> None:
        if not quiet:
            err_console.print(f"[dim]{text}…[/]")

    with bars:
        outcome = generation.generate(rt, moderator, prompt, output, options,
                                      generation.Progress(loading=loading, denoising=denoising, stage=stage))
    result = outcome.to_dict()
    if json_:
        print(json.dumps(result, default=str))
    elif outcome.status == "published":
        console.print(f"published [bold]{outcome.path}[/]")
        console.print(f"generation id [bold green]{outcome.generation_id}[/]")
    else:
        reason = outcome.moderation.get("user_message") or "the prompt or output violates the policy"
        console.print(f"[bold red]{outcome.status}[/]: {reason} (generation id {outcome.generation_id})")
    raise typer.Exit(generation.EXIT_CODES[outcome.status])


@app.command()
@handles_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without API keys (local use only).")] = False,
) -> None:
    """Run the HTTP API (generation jobs, verification, moderation, C2PA soft-binding resolution).

    Keys come from the ledger (`credence clients create`); CREDENCE_API_KEYS, when set, are
    bootstrap keys of the operator client with every scope. At start-up the server recovers what
    a crashed predecessor left (interrupted jobs are queued again) and starts the job executor.
    """
    import uvicorn

    from ..app import create_app, serve_config

    settings = Settings.from_env()
    uvicorn.run(create_app(settings, auth=not no_auth), host=host, port=port, log_level="info",
                **serve_config(settings))


@app.command()
@handles_errors
def doctor(
    check_files: Annotated[bool, typer.Option(
        "--check-files/--no-check-files", help="Also check that every published file is still in place.")] = True,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Finish or roll back interrupted publishes and remove their debris.

    Exit 0 when everything is consistent or was repaired, 1 when something needs a person;
    what was done is printed either way. Rows that a live process holds are never touched.
    """
    rt = runtime(actor="doctor")
    report = rt.recover(check_published=check_files)
    if json_:
        print(json.dumps(report.to_dict()))
    else:
        for line in report.actions:
            console.print(line, highlight=False, soft_wrap=True)
        for line in report.problems:
            console.print(f"[bold red]needs a person:[/] {line}", highlight=False, soft_wrap=True)
        if not report.actions and not report.problems:
            console.print(f"consistent ({report.examined} running generations examined)")
    raise typer.Exit(report.exit_code)


@db_app.command("upgrade")
@handles_errors
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the ledger's Alembic revisions."""
    from .. import db

    settings = Settings.from_env()
    if settings.database_url.startswith("sqlite:///"):
        Path(settings.database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    console.print(f"ledger at revision {db.upgrade(settings.database_url, revision)}")


@db_app.command("downgrade")
@handles_errors
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, or 'base'.")],
                 force: Annotated[bool, typer.Option("--force", help="Also drop the audit log's hash chain "
                                                                     "(refused without it while the log has rows).")]
                 = False) -> None:
    """Revert the ledger's schema to an earlier revision."""
    from .. import db

    console.print(f"ledger at revision {db.downgrade(Settings.from_env().database_url, revision, force=force)}")


@db_app.command("current")
@handles_errors
def db_current() -> None:
    """Print the ledger's current revision."""
    from .. import db

    console.print(db.current_revision(Settings.from_env().database_url) or "base (not migrated)")


@app.command()
@handles_errors
def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Jobs run at once in this process.")] = 1,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="Torch intra-op threads per job (default: this worker's share of the cores "
        "among the workers alive on this machine, re-checked before each job).")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="cpu, cuda (one GPU per worker slot) or cuda:K (pin GPU K); default CREDENCE_DEVICE.")]
    = None,
) -> None:
    """Take generation jobs from the queue (CREDENCE_BROKER_URL) until stopped; loads the model once."""
    from ..worker import run_worker

    if device is not None and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device):
        raise typer.BadParameter(f"{device!r}: expected cpu, cuda, cuda:K or mps", param_hint="--device")
    run_worker(Settings.from_env(), concurrency, threads=threads, device=device)


def _register_subcommands() -> None:
    """Sub-commands of each area: always part of Credence, so a missing one is an error."""
    from .audit import audit_app
    from .clients import clients_app, keys_app
    from .compliance import compliance_app
    from .index import index_app
    from .moderate import moderate
    from .review import review_app
    from .watermark import app as watermark_app

    app.add_typer(watermark_app, name="watermark")
    app.add_typer(clients_app, name="clients")
    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")
    app.add_typer(compliance_app, name="compliance")
    app.add_typer(review_app, name="review")
    app.add_typer(index_app, name="index")
    app.command("moderate")(handles_errors(moderate))


_register_subcommands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SettingsError as exc:  # raised before a command's own handler runs
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(EXIT_BAD_INPUT)
