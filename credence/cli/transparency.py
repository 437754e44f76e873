"""`credence audit checkpoint` and `credence audit prove`: the audit log as a transparency log.

`checkpoint --out DIR` (for cron) signs the log's current tree head and adds it to DIR as a new
file (never overwriting one): DIR stands for a write-once bucket the database's owner cannot
rewrite. `prove ID` prints the inclusion proof of generation ID's publish row against the newest
checkpoint that contains it (`--anchor DIR`) or a freshly signed head, as JSON a platform checks
offline. `audit verify --anchor` (in `audit`) checks the log against the checkpoints.

The root app registers these on the `audit` sub-app (`register`), so no CLI module imports another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .common import console, fail, handles_errors, runtime


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
        head = document["tree_head"]
        console.print(f"checkpoint {path.name}: {head['tree_size']} rows, root {head['root_hash']}",
                      highlight=False, soft_wrap=True)


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


def register(audit_app: typer.Typer) -> None:
    """Add the commands to the `audit` sub-app."""
    audit_app.command("checkpoint")(handles_errors(checkpoint))
    audit_app.command("prove")(handles_errors(prove))
