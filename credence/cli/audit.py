"""`credence audit ...`: walk the audit chain, export its signed head, search and export the ledger.

`verify` exits 0 when the chain is intact and 1 when it is broken, naming the first bad row
(`row <id>`); with `--anchor DIR` it also checks the log against the signed checkpoints in DIR
and exits 1 naming the first inconsistent one. `checkpoint --out DIR` (cron) adds a signed tree
head to DIR; `prove ID` prints a generation's inclusion proof (`provenance.ledger.transparency`).
`search` prints one JSON object per line with `--json`; `export` streams CSV or JSON lines for
any number of rows in constant memory.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import console, fail, handles_errors, runtime

audit_app = typer.Typer(help="The audit log's hash chain; search and export of generations and decisions.",
                        no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@audit_app.command("verify")
@handles_errors
def verify(json_: JsonOption = False,
           anchor: Annotated[Path | None, typer.Option("--anchor", help="Also check the log against every signed "
                                                       "checkpoint in this folder (or this one file).")] = None,
           ) -> None:
    """Walk the hash chain once (streaming, O(rows)); exit 0 intact, 1 broken (the first bad row named).

    With --anchor: also each checkpoint's signer (through the trust anchors), its size and root
    against the log, and consistency proofs between them and to the current head; exit 1 names the
    first inconsistent checkpoint (truncation, a rewritten tail, a forged signer).
    """
    from provenance.ledger.audit_chain import verify as verify_chain

    if anchor is not None:
        from provenance.ledger.checkpoints import verify_anchored

        rt = runtime()
        anchored = verify_anchored(rt.ledger.engine, rt.trust_pem, anchor)
        if json_:
            print(json.dumps(anchored.to_dict()))
        else:
            console.print(anchored.line(), highlight=False, soft_wrap=True)
        raise typer.Exit(0 if anchored.ok else 1)
    report = verify_chain(runtime().ledger.engine)
    if json_:
        print(json.dumps(report.to_dict()))
    else:
        console.print(report.line(), highlight=False, soft_wrap=True)
        if report.ok and report.seconds > 0:
            console.print(f"{report.rows / report.seconds:,.0f} rows/s", highlight=False)
    raise typer.Exit(0 if report.ok else 1)


@audit_app.command("head")
@handles_errors
def head(sign: Annotated[bool, typer.Option("--sign", help="Sign it with the deployment's signing key.")] = False,
         output: Annotated[Path | None, typer.Option("-o", "--output", help="Write it here instead of stdout.")]
         = None) -> None:
    """Print the chain's head (last id, last hash, rows) as JSON; `--sign` adds an ES256 signature."""
    from provenance.ledger.audit_chain import head as chain_head
    from provenance.ledger.audit_chain import signed_head

    rt = runtime()
    document = signed_head(rt.ledger.engine, rt.identity) if sign else chain_head(rt.ledger.engine)
    text = json.dumps(document, indent=2 if output else None)
    if output is None:
        print(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        console.print(f"head written to {output}", highlight=False)


@audit_app.command("checkpoint")
@handles_errors
def checkpoint(out: Annotated[Path, typer.Option("--out", help="Folder of checkpoints (a write-once bucket's "
                                                 "mount): one new file per run.")],
               json_: Annotated[bool, typer.Option("--json", help="Print the signed head as JSON.")] = False) -> None:
    """Sign the log's tree head (size, root, time) and add it to --out as a new file."""
    from provenance.ledger.checkpoints import (
        HeadInvalid,
        checkpoint_files,
        fresh_head,
        latest_trusted,
        verify_tree_head,
        write_checkpoint,
    )
    from provenance.ledger.transparency import TreeCache

    rt = runtime()
    cache = TreeCache(rt.ledger.engine)  # one pass: the new head, and the check against the last one
    document = fresh_head(rt.ledger.engine, rt.identity, cache)
    try:  # fail closed: a checkpoint the verifier would refuse anchors nothing
        verify_tree_head(document, rt.trust_pem)
    except HeadInvalid as exc:
        raise fail(f"the signed head does not verify against the trust anchors ({exc}); "
                   "set CREDENCE_TRUST_ANCHORS to the signing certificate's root") from None
    previous = latest_trusted(checkpoint_files(out), rt.trust_pem) if out.is_dir() else None
    size = document["tree_head"]["tree_size"]
    if previous is not None and (previous[0].size > size or cache.root(previous[0].size) != previous[0].root):
        # Never anchor a log that no longer extends the last checkpoint: that is the alarm.
        raise fail(f"the log is not consistent with checkpoint {previous[1]} (size {previous[0].size}); "
                   "no checkpoint written: run `credence audit verify --anchor`", 1)
    path = write_checkpoint(out, document)
    if json_:
        print(json.dumps(document | {"file": str(path)}))
    else:
        body = document["tree_head"]
        console.print(f"checkpoint {path.name}: {body['tree_size']} rows, root {body['root_hash']}",
                      highlight=False, soft_wrap=True)


@audit_app.command("prove")
@handles_errors
def prove(generation_id: Annotated[str, typer.Argument(help="The generation whose publish row to prove.")],
          anchor: Annotated[Path | None, typer.Option("--anchor", help="Prove against the newest checkpoint in "
                                                      "this folder (or file) that contains the row.")] = None)\
        -> None:
    """Print (JSON) the inclusion proof of a generation's publish row and the signed head it is relative to."""
    from provenance.ledger.checkpoints import latest_covering, prove_publish
    from provenance.ledger.transparency import TreeCache, leaf_index, publish_leaf

    rt = runtime()
    engine = rt.ledger.engine
    head = None
    if anchor is not None:
        leaf = publish_leaf(engine, generation_id)
        if leaf is None:
            raise fail(f"generation {generation_id!r} has no publish record (unknown or not published)", 1)
        head = latest_covering(anchor, rt.trust_pem, leaf_index(engine, leaf.entry_id))
        if head is None:
            raise fail(f"no trusted checkpoint in {anchor} contains the publish row yet; run "
                       "`credence audit checkpoint` or leave out --anchor for a fresh head", 1)
    document = prove_publish(engine, rt.identity, generation_id, head=head, cache=TreeCache(engine))
    if document is None:
        raise fail(f"generation {generation_id!r} has no publish record (unknown or not published)", 1)
    print(json.dumps(document, indent=2))


def _moment(text: str | None, option: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{option} {text!r}: write an ISO date or time (2026-12-01 or 2026-12-01T10:00:00Z)") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


@audit_app.command("search")
@handles_errors
def search(
    client: Annotated[str | None, typer.Option("--client", help="Client id or name.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Created at or after (ISO).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Created before (ISO).")] = None,
    status: Annotated[str | None, typer.Option("--status", help="queued, review, published, ...")] = None,
    action: Annotated[str | None, typer.Option("--action", help="A decision's action: allow, review, block, "
                                                                "approve, reject.")] = None,
    stage: Annotated[str | None, typer.Option("--stage", help="A decision's stage: prompt, output, review.")]
    = None,
    category: Annotated[str | None, typer.Option("--category", help="A policy category in a decision's reasons.")]
    = None,
    policy_version: Annotated[str | None, typer.Option("--policy-version", help="Prefix of the policy label.")]
    = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name.")] = None,
    mark: Annotated[str | None, typer.Option("--mark", help="Mark id (16 hex digits).")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Text the prompt contains (case-insensitive).")]
    = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000, help="At most this many rows.")] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor", help="The `next` cursor of a previous page.")] = None,
    json_: JsonOption = False,
) -> None:
    """Search generations and their decisions, newest first (one JSON object per line with --json)."""
    from ..audit import SearchFilters, search_generations

    filters = SearchFilters(client=client, since=_moment(since, "--since"), until=_moment(until, "--until"),
                            status=status, action=action, stage=stage, category=category,
                            policy_version=policy_version, model=model, mark=mark, prompt=prompt)
    page = search_generations(runtime().ledger, filters, limit=limit, cursor=cursor)
    if json_:
        for item in page.items:
            print(json.dumps(item))
        if page.next_cursor:
            print(f"next page: --cursor {page.next_cursor}", file=sys.stderr)
        return
    from rich.table import Table

    table = Table("id", "created", "status", "stage", "client", "model", "decisions", "prompt")
    for item in page.items:
        table.add_row(item["id"], item["created_at"][:19], item["status"], item["stage"] or "",
                      item["client_id"] or "", item["model"],
                      ", ".join(f"{d['stage']}:{d['action']}" for d in item["decisions"]), item["prompt"][:60])
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}", highlight=False)


@audit_app.command("export")
@handles_errors
def export(
    since: Annotated[str | None, typer.Option("--since", help="Created at or after (ISO).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Created before (ISO).")] = None,
    format_: Annotated[str, typer.Option("--format", help="csv or jsonl.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")] = None,
) -> None:
    """Stream every generation (with its decisions) created in [since, until) as CSV or JSON lines."""
    from ..audit import export_lines

    if format_ not in ("csv", "jsonl"):
        raise fail(f"--format {format_!r}: choose csv or jsonl")
    lines = export_lines(runtime().ledger, _moment(since, "--since"), _moment(until, "--until"), format_)
    if output is None:
        for line in lines:
            sys.stdout.write(line)
        sys.stdout.flush()
        return
    with output.open("w", encoding="utf-8", newline="") as handle:
        count = -1 if format_ == "csv" else 0
        for line in lines:
            handle.write(line)
            count += 1
    console.print(f"{count} rows written to {output}", highlight=False)


@audit_app.command("redact")
@handles_errors
def redact(days: Annotated[int | None, typer.Option("--older-than-days", min=0, help="Default: "
                                                    "CREDENCE_PROMPT_RETENTION_DAYS.")] = None,
           json_: JsonOption = False) -> None:
    """Replace prompts older than the retention with their SHA-256 (recorded as an audit event)."""
    from ..audit import redact_prompts

    rt = runtime()
    retention = days if days is not None else rt.settings.prompt_retention_days
    if retention is None:
        raise fail("no retention: pass --older-than-days N or set CREDENCE_PROMPT_RETENTION_DAYS")
    count = redact_prompts(rt.ledger, dt.timedelta(days=retention), actor=rt.actor)
    if json_:
        print(json.dumps({"redacted": count, "older_than_days": retention}))
    else:
        console.print(f"{count} prompts redacted to their hash (older than {retention} days)", highlight=False)
