"""`credence moderate`: screen prompts against the policy, one JSON object per prompt, in input order."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..settings import Settings, SettingsError

#: Prompts embedded per batch when reading a file (bounded memory, same answers as one by one).
BATCH = 64


def moderate(
    prompt: Annotated[str | None, typer.Argument(help="The prompt to screen (or use --file).")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="A UTF-8 file of prompts, one per line; "
                                              "'-' reads standard input.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object per prompt, one per line.")] = False,
) -> None:
    """Screen prompts with the moderation policy. Exit 0 when every prompt is allowed, 3 if any is blocked,
    4 if any is held for review (and none blocked)."""
    from rich.console import Console

    from moderation import Moderator, load_policy
    from moderation.moderator import SEVERITY

    if (prompt is None) == (file is None):
        raise SettingsError("give exactly one of PROMPT or --file")
    prompts = [prompt] if prompt is not None else _read_prompts(file)  # type: ignore[arg-type]
    settings = Settings.from_env()
    moderator = Moderator.load(load_policy(settings.policy_path), clip_checkpoint=None)
    console = Console()
    worst = 0
    for start in range(0, len(prompts), BATCH):
        for decision in moderator.screen_prompts(prompts[start:start + BATCH]):
            worst = max(worst, SEVERITY[decision.action])
            if json_:
                print(json.dumps(decision.to_dict(), ensure_ascii=False), flush=False)
            else:
                colour = {"allow": "green", "review": "yellow", "block": "red"}[decision.action]
                why = "; ".join(f"{r.category} {r.score:.2f} ≥ {r.threshold:.2f}"
                                + (f" (matched '{r.span}')" if r.span else "") for r in decision.reasons)
                console.print(f"[bold {colour}]{decision.action}[/] {why}".rstrip(), highlight=False)
    sys.stdout.flush()
    raise typer.Exit({0: 0, 1: 4, 2: 3}[worst])


def _read_prompts(file: Path) -> list[str]:
    """Non-empty lines of `file` (or stdin for '-'); a bad file is a one-line error."""
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"--file {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"--file {file}: not UTF-8 text") from None
    prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise SettingsError(f"--file {file}: no prompts in it")
    return prompts
