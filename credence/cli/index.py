"""`credence index`: the fingerprint index's snapshot (rebuild, update, status) and its shard servers.

The ledger is the one truth; the index is derived from it. `rebuild` reads every fingerprint
row and writes a new snapshot; `update` opens the current snapshot, reads only the rows added
since and writes the result (what a cron job runs, so that API processes start from a recent
snapshot and tail little); both leave the old snapshot current until the new one is complete.
API processes never need either to see a new clip: they tail the ledger on every look-up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from .common import console, fail, handles_errors, runtime

index_app = typer.Typer(help="The fingerprint index: snapshot rebuild/update/status, shard servers.",
                        no_args_is_help=True)


def _shard(value: str | None) -> tuple[int, int] | None:
    """`k/n` as (k, n), with 0 <= k < n."""
    if value is None:
        return None
    try:
        k, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise fail(f"--shard must look like 0/2, not {value!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise fail(f"--shard {value}: need 0 <= k < n")
    return k, n


def snapshot_folder(base: Path, shard: tuple[int, int] | None, folder: Path | None) -> Path:
    """Where a (shard's) snapshot lives: `--dir`, else the configured folder (`CREDENCE_INDEX_DIR`,
    default `CREDENCE_HOME/index`), with `shard-k-of-n/` below it for a shard."""
    if folder is not None:
        return folder
    return base / (f"shard-{shard[0]}-of-{shard[1]}" if shard else "")


DirOption = Annotated[Path | None, typer.Option(
    "--dir", help="Snapshot folder (default CREDENCE_INDEX_DIR or CREDENCE_HOME/index).")]
ShardOption = Annotated[str | None, typer.Option("--shard", help="Only shard k of n, written k/n (e.g. 0/2).")]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object.")]


def _report(figures: dict[str, object], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(figures))
    else:
        for key, value in figures.items():
            console.print(f"{key:>16}: {value}")


@index_app.command("rebuild")
@handles_errors
def rebuild(folder: DirOption = None, shard: ShardOption = None, as_json: JsonOption = False) -> None:
    """Rebuild the index from the ledger alone and make it the current snapshot."""
    from provenance.index import build_snapshot

    rt = runtime()
    part = _shard(shard)
    target = snapshot_folder(rt.settings.index_folder, part, folder)
    t = time.perf_counter()
    index = build_snapshot(rt.ledger, target, shard=part)
    _report({"snapshot": str(target / (index.loaded_from or "")), "clips": index.clips, "entries": index.entries,
             "last_row": index.last_row, "seconds": round(time.perf_counter() - t, 2)}, as_json)


@index_app.command("update")
@handles_errors
def update(folder: DirOption = None, shard: ShardOption = None, as_json: JsonOption = False) -> None:
    """Open the current snapshot, add the ledger rows recorded since, write that as the new snapshot."""
    from provenance.index import FingerprintIndex

    rt = runtime()
    part = _shard(shard)
    target = snapshot_folder(rt.settings.index_folder, part, folder)
    t = time.perf_counter()
    index = FingerprintIndex(rt.ledger, snapshot_dir=target, shard=part)
    added = index.refresh()
    base = index.loaded_from
    path = index.write_snapshot(target)
    _report({"snapshot": str(path), "from": base, "added_clips": added, "clips": index.clips,
             "entries": index.entries, "last_row": index.last_row,
             "seconds": round(time.perf_counter() - t, 2)}, as_json)


@index_app.command("status")
@handles_errors
def status(folder: DirOption = None, shard: ShardOption = None, as_json: JsonOption = False) -> None:
    """The current snapshot and how far the ledger has moved past it."""
    from sqlalchemy import func, select

    from provenance.index.store import current_snapshot
    from provenance.ledger.models import Fingerprint

    rt = runtime()
    target = snapshot_folder(rt.settings.index_folder, _shard(shard), folder)
    current = current_snapshot(target)
    meta = json.loads((current / "meta.json").read_text()) if current else {}
    with rt.ledger.session() as s:
        newest = s.scalar(select(func.max(Fingerprint.id))) or 0
        behind = s.scalar(select(func.count(Fingerprint.id)).where(Fingerprint.id > int(meta.get("last_row", 0))))
    _report({"snapshot": str(current) if current else None, "clips": meta.get("clips", 0),
             "entries": meta.get("entries", 0), "last_row": meta.get("last_row", 0), "ledger_last_row": newest,
             "rows_since_snapshot": behind}, as_json)


@index_app.command("serve-shard")
@handles_errors
def serve_shard(shard: Annotated[str, typer.Option("--shard", help="This shard, k/n (e.g. 0/2).")],
                port: Annotated[int, typer.Option(help="Port (0: any free one, printed).")] = 0,
                host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
                folder: DirOption = None) -> None:
    """Serve one shard of the index over HTTP (POST /search, GET /status) until stopped."""
    from provenance.index import FingerprintIndex
    from provenance.index.shards import shard_server

    rt = runtime()
    part = _shard(shard)
    assert part is not None
    target = snapshot_folder(rt.settings.index_folder, part, folder)
    index = FingerprintIndex(rt.ledger, snapshot_dir=target, shard=part)
    index.refresh()
    server = shard_server(index, host, port)
    # One line the caller can read: where this shard listens and what it holds.
    print(json.dumps({"shard": list(part), "url": f"http://{host}:{server.server_address[1]}",
                      "clips": index.clips}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
