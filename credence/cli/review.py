"""`credence review ...`: the review queue at the command line.

`list` prints one JSON object per held generation with `--json`; `show` one object; `approve` and
`reject` need `--note`. Exit 0 when the action was carried out, 2 when it could not be (not held,
unknown id), 5 when the policy refuses it (a never-approvable category, the same reviewer twice).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .common import console, fail, handles_errors, runtime

review_app = typer.Typer(help="Held prompts and outputs: list, show, approve, reject.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
NoteOption = Annotated[str, typer.Option("--note", help="Why (recorded with the decision; never shown to clients).")]
AsOption = Annotated[str | None, typer.Option("--as", help="The reviewer's name (default: the OS user).")]
EXIT_REFUSED = 5


@review_app.command("list")
@handles_errors
def list_(stage: Annotated[str | None, typer.Option("--stage", help="prompt or output.")] = None,
          category: Annotated[str | None, typer.Option("--category", help="Held for this category.")] = None,
          limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 100,
          json_: JsonOption = False) -> None:
    """Generations held for review, oldest first."""
    from ..review import list_held

    items = list_held(runtime(), stage=stage, category=category, limit=limit)
    if json_:
        for item in items:
            print(json.dumps(item))
        return
    if not items:
        console.print("nothing is held for review")
        return
    from rich.table import Table

    table = Table("id", "stage", "held at", "categories", "approvals", "client")
    for item in items:
        table.add_row(item["id"], item["stage"] or "", (item["held_at"] or "")[:19], ", ".join(item["categories"]),
                      f"{len(item['approvals'])}/{item['reviewers_needed']}", item["client_id"] or "")
    console.print(table)


@review_app.command("show")
@handles_errors
def show(generation_id: Annotated[str, typer.Argument(help="The generation id.")], json_: JsonOption = False) -> None:
    """One generation as a reviewer sees it (prompt, reasons, decisions, audit trail)."""
    from ..review import show as show_item

    item = show_item(runtime(), generation_id)
    if json_:
        print(json.dumps(item))
        return
    console.print(f"[bold]{item['id']}[/] {item['status']} {item['stage'] or ''}", highlight=False)
    console.print(f"prompt: {item['prompt']}", highlight=False, soft_wrap=True)
    for reason in item["reasons"]:
        console.print(f"  {reason.get('category')}: {reason.get('score')} ({reason.get('source')})", highlight=False)
    for decision in item["decisions"]:
        console.print(f"  {decision['created_at'][:19]} {decision['stage']}: {decision['action']}", highlight=False)


def _decide(action: str, generation_id: str, note: str, reviewer_name: str | None, json_: bool) -> None:
    from ..review import Reviewer, ReviewRefused, approve, reject

    rt = runtime(actor="review")
    reviewer = Reviewer.local(reviewer_name)
    enqueue = None
    if action == "approve" and rt.settings.broker_url:  # a queue engine runs jobs: hand it over
        from ..generation.queue import QueueExecutor

        enqueue = QueueExecutor(rt.settings).enqueue
    try:
        outcome = (approve(rt, generation_id, reviewer, note, enqueue=enqueue) if action == "approve"
                   else reject(rt, generation_id, reviewer, note))
    except ReviewRefused as exc:
        raise fail(str(exc), EXIT_REFUSED) from None
    if json_:
        print(json.dumps(outcome.to_dict()))
    else:
        console.print(f"{generation_id}: {outcome.status} ({outcome.detail})", highlight=False)


@review_app.command("approve")
@handles_errors
def approve(generation_id: Annotated[str, typer.Argument(help="The generation id.")], note: NoteOption,
            as_: AsOption = None, json_: JsonOption = False) -> None:
    """Approve: a held prompt's job runs (here, without a queue engine); a held output is published."""
    _decide("approve", generation_id, note, as_, json_)


@review_app.command("reject")
@handles_errors
def reject(generation_id: Annotated[str, typer.Argument(help="The generation id.")], note: NoteOption,
           as_: AsOption = None, json_: JsonOption = False) -> None:
    """Reject: the generation ends `rejected` and its held output is deleted."""
    _decide("reject", generation_id, note, as_, json_)


@review_app.command("expire")
@handles_errors
def expire(json_: JsonOption = False) -> None:
    """Reject held outputs whose time in quarantine ran out (CREDENCE_QUARANTINE_HOURS) and delete them."""
    from ..review import expire_held_outputs

    done = expire_held_outputs(runtime(actor="review"))
    if json_:
        print(json.dumps({"expired": done}))
    else:
        console.print(f"{len(done)} held outputs expired", highlight=False)
