"""Randomised crash loop: publishes killed with SIGKILL at random moments, recovered, invariants counted.

    python -m bench.faults [--iterations 200] [--seed 0] [--frames 24]

Each iteration forks a child (modules already imported, so a publish takes well under a second)
that publishes a clip through the real `Publisher` into a real SQLite ledger and output folder.
The parent kills it with SIGKILL at a moment drawn uniformly from [0, 1.2 × the median clean
publish time], reaps it, runs recovery (`Runtime.recover`, what `credence doctor` runs) and counts:
orphan temporaries, records without their file (or with a file of another hash), files at a final
path without a published record, rows stuck in `running`. Every count must stay 0. The table
also shows where the kills landed (rolled back vs finished) and what recovery did.
Prints a table and writes bench/results/faults.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from credence.runtime import Runtime
from credence.settings import Settings
from provenance.ledger import Generation, PublishedFile
from provenance.ledger.models import Fingerprint
from provenance.publish import TEMP_PREFIX, PublishRequest, file_sha256
from tests.support import make_clip

RESULTS = Path(__file__).resolve().parent / "results"


def _publish_in_child(runtime: Runtime, source: Path, output: Path) -> int:
    """Fork a child that publishes `source` as `output`; returns its pid."""
    pid = os.fork()
    if pid == 0:  # the child: a fresh ledger connection, then publish and exit without cleanup
        code = 0
        try:
            runtime.ledger.engine.dispose(close=False)
            runtime.publisher.owner = f"{os.uname().nodename}:{os.getpid()}:child"
            runtime.publisher.publish_file(source, output, PublishRequest(prompt="a cat on a sofa", model_name="m"))
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def invariants(runtime: Runtime, folder: Path) -> dict[str, int]:
    """The counts that must be zero after recovery."""
    counts = {"orphan_temporaries": 0, "records_without_file": 0, "files_without_record": 0, "stuck_rows": 0}
    with runtime.ledger.session() as s:
        files = s.scalars(select(PublishedFile)).all()
        by_gen = {f.generation_id: f for f in files}
        fingerprinted = set(s.scalars(select(Fingerprint.generation_id)).all())
        for gen in s.scalars(select(Generation)).all():
            counts["stuck_rows"] += gen.status in ("running", "queued")
            record = by_gen.get(gen.id)
            if gen.status == "published":
                ok = record is not None and Path(record.path).is_file() and \
                    file_sha256(Path(record.path)) == record.sha256
                counts["records_without_file"] += not ok
            else:
                counts["records_without_file"] += record is not None or gen.id in fingerprinted
    recorded = {f.path for f in files}
    for entry in folder.iterdir():
        if entry.name.startswith(TEMP_PREFIX) or entry.name.startswith("."):
            counts["orphan_temporaries"] += 1
        elif entry.suffix == ".mp4" and str(entry) not in recorded:
            counts["files_without_record"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=24)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    import torch

    torch.set_num_threads(1)  # forked children must not inherit a busy thread pool
    with tempfile.TemporaryDirectory(prefix="credence-faults-") as tmp:
        work = Path(tmp)
        runtime = Runtime(Settings.from_env({"CREDENCE_HOME": str(work / "home")}), actor="bench")
        runtime.init()
        source = make_clip(work / "source.mp4", frames=args.frames)
        out = work / "out"
        out.mkdir()
        _ = runtime.publisher, runtime.watermark  # load keys and the embedder before forking
        clean = []
        for i in range(5):
            start = time.perf_counter()
            pid = _publish_in_child(runtime, source, out / f"clean-{i}.mp4")
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, "a clean publish failed"
            clean.append(time.perf_counter() - start)
        horizon = 1.2 * statistics.median(clean)
        totals = dict.fromkeys(("orphan_temporaries", "records_without_file", "files_without_record",
                                "stuck_rows"), 0)
        outcomes = {"killed": 0, "finished_before_kill": 0, "rolled_back": 0, "finished_by_recovery": 0,
                    "repair_actions": 0, "doctor_needed_person": 0}
        started = time.perf_counter()
        for i in range(args.iterations):
            delay = rng.uniform(0, horizon)
            pid = _publish_in_child(runtime, source, out / f"clip-{i}.mp4")
            time.sleep(delay)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(pid, 0)
            killed = os.waitstatus_to_exitcode(status) == -signal.SIGKILL
            outcomes["killed"] += killed
            outcomes["finished_before_kill"] += not killed
            report = runtime.recover(check_published=True)
            outcomes["repair_actions"] += len(report.actions)
            outcomes["doctor_needed_person"] += bool(report.problems)
            outcomes["rolled_back"] += sum("rolled back" in a for a in report.actions)
            outcomes["finished_by_recovery"] += sum("finished publishing" in a for a in report.actions)
            for key, value in invariants(runtime, out).items():
                totals[key] += value
        wall = time.perf_counter() - started
        runtime.ledger.dispose()
    result = {"iterations": args.iterations, "seed": args.seed, "clean_publish_s_median": statistics.median(clean),
              "kill_horizon_s": horizon, "wall_s": wall, "invariant_violations": totals, "outcomes": outcomes}
    print(f"{'iterations':<28}{args.iterations}")
    print(f"{'clean publish (median)':<28}{statistics.median(clean):.3f} s; kills drawn in [0, {horizon:.3f}] s")
    for key, value in outcomes.items():
        print(f"{key:<28}{value}")
    for key, value in totals.items():
        print(f"{key:<28}{value}   (must be 0)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "faults.json").write_text(json.dumps(result, indent=2) + "\n")
    if any(totals.values()):
        raise SystemExit("invariants violated")


if __name__ == "__main__":
    main()
