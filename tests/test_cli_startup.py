"""The CLI starts fast: `credence --help` and argument parsing load no heavy module.

torch alone took 3-9 s to import on the CI machine, and every command paid for it because the
watermark was imported at the top of a CLI module. These tests run in a fresh interpreter (the
test process itself has long imported everything) and list what importing the CLI and printing
every help page left in `sys.modules`: a deterministic check, unlike a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: Top-level packages a command may load only when it runs (each costs 0.1-3 s to import).
HEAVY = ("torch", "diffusers", "transformers", "sentence_transformers", "av", "numpy", "scipy", "PIL",
         "sqlalchemy", "alembic", "c2pa", "cryptography", "uvicorn", "fastapi", "open_clip")

#: Runs in a fresh interpreter: every help page of the CLI through Typer's runner, then reports.
_HELP_EVERYWHERE = """
import json, sys
import typer
from typer.testing import CliRunner
import credence.cli

after_import = sorted({name.split(".")[0] for name in sys.modules})
root = typer.main.get_command(credence.cli.app)
runner = CliRunner()
pages = {}

def walk(command, path):
    result = runner.invoke(credence.cli.app, [*path, "--help"])
    pages[" ".join(path) or "(root)"] = {"exit": result.exit_code, "output": result.output}
    if hasattr(command, "commands"):  # a group (Typer vendors its own click)
        for name, sub in command.commands.items():
            walk(sub, [*path, name])

walk(root, [])
print(json.dumps({"after_import": after_import, "after_help": sorted({name.split(".")[0] for name in sys.modules}),
                  "pages": pages}))
"""


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def test_import_loads_no_heavy_module() -> None:
    """`import credence.cli` (what the console script does first) leaves every heavy package unloaded."""
    result = _run_python("import sys, credence.cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "typer" in loaded and "credence" in loaded  # the probe saw the import happen
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_every_help_page_works_without_heavy_modules() -> None:
    """Each command and sub-app answers `--help` (exit 0, its usage and commands), none loading a heavy module."""
    result = _run_python(_HELP_EVERYWHERE)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    pages = report["pages"]
    # Every area registered by credence.cli is reachable, with its commands.
    for group, commands in {"watermark": ("embed", "detect"), "clients": ("create", "list", "show", "disable"),
                            "keys": ("create", "revoke", "rotate"), "db": ("upgrade", "downgrade", "current"),
                            "audit": ("verify", "head"), "review": ("approve", "reject")}.items():
        assert group in pages, sorted(pages)
        for command in commands:
            assert f"{group} {command}" in pages, (group, command, sorted(pages))
    for top in ("init", "publish", "verify", "generate", "serve", "doctor", "worker", "moderate"):
        assert top in pages, (top, sorted(pages))
    for name, page in pages.items():
        assert page["exit"] == 0, (name, page["output"])
        assert "Usage:" in page["output"], (name, page["output"])
    assert set(report["after_import"]).isdisjoint(HEAVY), sorted(set(report["after_import"]) & set(HEAVY))
    assert set(report["after_help"]).isdisjoint(HEAVY), sorted(set(report["after_help"]) & set(HEAVY))


def test_console_entry_point_help_and_bad_usage() -> None:
    """`python -m credence --help` exits 0 listing the sub-apps; an unknown command is still exit 2."""
    ok = subprocess.run([sys.executable, "-m", "credence", "--help"], capture_output=True, text=True, timeout=120,
                        check=False)
    assert ok.returncode == 0, ok.stderr
    for name in ("watermark", "clients", "keys", "audit", "review", "db", "verify", "moderate"):
        assert name in ok.stdout, (name, ok.stdout)
    bad = subprocess.run([sys.executable, "-m", "credence", "no-such-command"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode == 2, (bad.stdout, bad.stderr)
    assert "No such command" in bad.stderr


def test_verify_refuses_a_bad_file_before_loading_torch(tmp_path: Path) -> None:
    """`credence verify` of a missing file or a non-video answers exit 2 without waiting for torch."""
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    code = ("import sys\nfrom credence.cli import main\nsys.argv = ['credence', 'verify', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n"
            "    print(exc.code, 'torch' in sys.modules, file=sys.stderr)\n")
    for target in (tmp_path / "missing.mp4", text):
        result = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True,
                                timeout=120, check=False, env={**os.environ, "CREDENCE_HOME": str(tmp_path / "home")})
        assert result.stderr.strip().splitlines()[-1] == "2 False", result.stderr
        assert "error:" in result.stderr, result.stderr
