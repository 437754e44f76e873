"""CLI start-up: wall time of `credence --help` and `credence verify` of a signed clip, and what they import.

    python -m bench.cli_startup [--repeats 10] [--verify-repeats 3] [--compare REF]

What is timed, exactly: each row is a fresh process started from this one (`python -m credence
...`, the same interpreter and code as the `credence` console script), from spawn to exit, with
its CPU time (user + system, from the kernel's child usage). `python -c pass` is the interpreter's
own floor. One untimed run of each comes first (it warms the page cache and writes .pyc files).
`verify` checks a 3 s 320x240 clip published with content credentials (C2PA manifest, watermark,
fingerprints) into a fresh CREDENCE_HOME with a SQLite ledger: its time is start-up plus the whole
verification (three evidence sources, the ledger look-ups).

Import breakdown: one more run of each under `python -X importtime`: the seconds spent importing
`credence.cli` (the start-up every command pays before parsing its arguments), all imports, and
the share of torch, which only the watermark's detector loads. `verify` always runs it, manifest or
not: a watermark that names another generation or an unknown payload turns a signed clip's
verdict into `review`, so skipping it could change a verdict.

`--compare REF` times `--help` of the code at git REF too (its packages, extracted with
`git archive`, first on PYTHONPATH), for a before/after on the same machine and load.

The machine is shared: the load average at start and end is recorded beside the figures.
Prints a table and writes bench/results/cli_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PACKAGES = ("credence", "provenance", "detector", "moderation", "generator", "migrations", "policies")
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def run_timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and exit status of one child process.

    It runs in CREDENCE_HOME, not the work tree: `python -m` puts the working directory first on
    sys.path, which would shadow the PYTHONPATH of `--compare`.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=env["CREDENCE_HOME"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return wall, cpu, proc.returncode


def measure(argv: list[str], env: dict[str, str], repeats: int) -> dict[str, float]:
    """Median, min and max wall and median CPU of `repeats` runs after one untimed warm-up."""
    run_timed(argv, env)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu, _ = run_timed(argv, env)
        walls.append(wall)
        cpus.append(cpu)
    return {"runs": repeats, "wall_s_median": round(statistics.median(walls), 3), "wall_s_min": round(min(walls), 3),
            "wall_s_max": round(max(walls), 3), "cpu_s_median": round(statistics.median(cpus), 3)}


def import_breakdown(args: list[str], env: dict[str, str]) -> dict[str, object]:
    """Seconds of import in one `python -X importtime -m credence ARGS` run: credence.cli, all, per package."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "credence", *args], env=env,
                          cwd=env["CREDENCE_HOME"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    by_root: dict[str, int] = defaultdict(int)
    cli_us = 0
    for line in proc.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if not match:
            continue
        self_us, cumulative_us, name = int(match[1]), int(match[2]), match[4]
        by_root[name.split(".")[0]] += self_us
        if name == "credence.cli":
            cli_us = cumulative_us
    total = sum(by_root.values())
    top = sorted(by_root.items(), key=lambda item: -item[1])[:8]
    return {"import_credence_cli_s": round(cli_us / 1e6, 3), "all_imports_s": round(total / 1e6, 3),
            "torch_s": round(by_root.get("torch", 0) / 1e6, 3), "torch_loaded": "torch" in by_root,
            "top_packages_s": {name: round(us / 1e6, 3) for name, us in top}}


def published_clip(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A clip published with a manifest, watermark and fingerprints into a fresh home; the CLI's environment."""
    from credence.runtime import Runtime
    from credence.settings import Settings
    from provenance.publish import PublishRequest
    from tests.support import make_clip

    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDENCE_")}
    env["CREDENCE_HOME"] = str(tmp / "home")
    runtime = Runtime(Settings.from_env(env))
    runtime.init()
    source = make_clip(tmp / "source.mp4", frames=72, width=320, height=240)
    clip = runtime.publisher.publish_file(source, tmp / "signed.mp4",
                                          PublishRequest(prompt="a red ball", model_name="bench", policy_version="-"))
    runtime.ledger.dispose()
    return clip.path, env


def checkout(ref: str, into: Path) -> Path:
    """The project's packages at git `ref`, extracted under `into` (nothing in the work tree changes)."""
    archive = into / "ref.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", ref, *PACKAGES], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of --help and the floor")
    parser.add_argument("--verify-repeats", type=int, default=3, help="timed runs of verify")
    parser.add_argument("--compare", metavar="REF", help="also time --help of the code at this git ref")
    args = parser.parse_args()
    load_start = os.getloadavg()
    rows: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clip, env = published_clip(tmp)
        python = [sys.executable]
        rows["python -c pass"] = measure([*python, "-c", "pass"], env, args.repeats)
        rows["credence --help"] = {**measure([*python, "-m", "credence", "--help"], env, args.repeats),
                                   **import_breakdown(["--help"], env)}
        rows["credence verify (signed clip)"] = {
            **measure([*python, "-m", "credence", "verify", str(clip), "--json"], env, args.verify_repeats),
            **import_breakdown(["verify", str(clip), "--json"], env)}
        if args.compare:
            old_env = {**env, "PYTHONPATH": str(checkout(args.compare, tmp))}
            rows[f"credence --help at {args.compare}"] = {
                **measure([*python, "-m", "credence", "--help"], old_env, min(args.repeats, 5)),
                **import_breakdown(["--help"], old_env)}
    columns = ("wall_s_median", "wall_s_min", "wall_s_max", "cpu_s_median", "import_credence_cli_s", "all_imports_s",
               "torch_s")
    width = max(len(name) for name in rows) + 2
    print(f"{'':<{width}}" + "".join(f"{c:>22}" for c in columns))
    for name, row in rows.items():
        print(f"{name:<{width}}" + "".join(f"{row.get(c, '-')!s:>22}" for c in columns))
    load_end = os.getloadavg()
    print(f"load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end, on {os.cpu_count()} CPUs; "
          "wall = spawn to exit of a fresh process; import figures from one -X importtime run")
    result = {"rows": rows, "timed": {"wall": "spawn to exit of `python -m credence ...` (one untimed warm-up first)",
                                      "cpu": "user + system of the child (RUSAGE_CHILDREN)",
                                      "imports": "self times of one `python -X importtime` run, summed by package",
                                      "verify": "3 s 320x240 clip with C2PA manifest, watermark and fingerprints "
                                                "in a fresh SQLite ledger: start-up plus the whole verification"},
              "target": {"credence --help wall_s": 0.5},
              "python": sys.version.split()[0],
              "load_average": {"start": list(load_start), "end": list(load_end), "cpus": os.cpu_count()}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli_startup.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
