"""`credence compliance report`: the disclosure evidence for a period (see `credence.compliance`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .common import console, fail, handles_errors, runtime

compliance_app = typer.Typer(help="Evidence for the AI-disclosure obligations (EU AI Act Art. 50): manifests, "
                                  "watermarks, visible labels, held and blocked generations.", no_args_is_help=True)


@compliance_app.command("report")
@handles_errors
def report(
    since: Annotated[str | None, typer.Option("--since", help="From this date or time (ISO, UTC), inclusive.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Up to this date or time (ISO, UTC), exclusive.")]
    = None,
    client: Annotated[str | None, typer.Option("--client", help="Only this client (id or name).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    csv_: Annotated[bool, typer.Option("--csv", help="Print one CSV row per client and a total row.")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write it here instead of stdout.")] = None,
    sign: Annotated[bool, typer.Option("--sign/--no-sign", help="Sign the audit chain's head with the "
                                                               "deployment's key (default: on).")] = True,
) -> None:
    """Per client and in total: published, manifest verified, watermark read back, visible label by mode,
    held and blocked by category. Evidence from the ledger, linked to the audit chain's head; not a
    certification."""
    from ..compliance import ComplianceError, Period, compliance_report, parse_moment, report_csv

    if json_ and csv_:
        raise fail("--json and --csv: choose one")
    rt = runtime()
    try:
        period = Period(parse_moment(since, "--since"), parse_moment(until, "--until"))
        document = compliance_report(rt.ledger, period, client, identity=rt.identity if sign else None)
    except ComplianceError as exc:
        raise fail(str(exc)) from None
    if json_ or csv_:
        text = json.dumps(document, indent=2) + "\n" if json_ else report_csv(document)
        if output is None:
            print(text, end="")
        else:
            output.write_text(text, encoding="utf-8")
            console.print(f"report written to {output}", highlight=False)
        return
    _print_table(document)


def _print_table(document: dict[str, Any]) -> None:
    period = document["period"]
    console.print(f"[bold]Compliance evidence[/] {period['since'] or 'start'} → {period['until'] or 'now'}",
                  highlight=False)
    table = Table("client", "published", "manifest", "watermark read back", "label (mode: files)", "held", "blocked")
    rows = [(escape(item["client_name"]), item) for item in document["clients"]]
    for name, item in [*rows, ("[bold]total[/]", document["totals"])]:
        labels = ", ".join(f"{mode}: {n}" for mode, n in item["visible_label"].items() if n)
        read_back = "not recorded" if item["watermark_read_back"] is None else str(item["watermark_read_back"])
        table.add_row(name, str(item["published"]), str(item["manifest"]), read_back, labels or "–",
                      _by_category(item["held"]), _by_category(item["blocked"]))
    console.print(table)
    head = document["audit_chain"]["head"]
    signed = " (signed)" if "signature" in document["audit_chain"] else ""
    console.print(f"audit chain head{signed}: row {head['last_id']}, {head['last_hash']}", highlight=False)
    console.print(f"digest {document['digest']}", highlight=False)
    for note in document["notes"]:
        if "read-back" in note:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(f"[dim]{document['statement']}[/]", highlight=False)


def _by_category(figure: dict[str, Any]) -> str:
    parts = ", ".join(f"{name} {n}" for name, n in figure["by_category"].items())
    return f"{figure['total']}" + (f" ({parts})" if parts else "")
