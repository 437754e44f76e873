"""Every entry point answers `--help`: the console script, `python -m credence`, and each command.

The command tree is discovered from the Typer app the `credence` console script names (so a new
command is covered without editing this file), and checked against a minimum set, so that a
command lost in a refactor fails here instead of passing vacuously. One fresh interpreter walks
every help page with Typer's runner; the commands that start a long-lived process (`serve`,
`worker`) and the bare script are also run as real subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: Commands that must exist; groups map to the sub-commands each must have.
MINIMUM_COMMANDS = ("init", "generate", "publish", "verify", "moderate", "serve", "worker", "doctor")
MINIMUM_GROUPS = {
    "audit": ("verify", "head", "search", "export", "redact"),
    "index": ("rebuild", "update", "status", "serve-shard"),
    "clients": ("create", "list", "show", "disable"),
    "keys": ("create", "revoke", "rotate"),
    "review": ("list", "show", "approve", "reject", "expire"),
    "watermark": ("embed", "detect"),
    "db": ("upgrade", "downgrade", "current"),
}

#: Runs in a fresh interpreter: loads the console script's target the way the installed script
#: does (its entry-point metadata), then prints every help page of its Typer app as JSON.
_WALK_HELP = """
import json
from importlib.metadata import entry_points

import typer
from typer.testing import CliRunner

(script,) = entry_points(group="console_scripts", name="credence")
main = script.load()
module = __import__(main.__module__, fromlist=["app"])
root = typer.main.get_command(module.app)
runner = CliRunner()
pages = {}

def walk(command, path):
    result = runner.invoke(module.app, [*path, "--help"], prog_name="credence")
    pages[" ".join(path)] = {"exit": result.exit_code, "output": result.output,
                             "group": hasattr(command, "commands")}
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        walk(sub, [*path, name])

walk(root, [])
print(json.dumps({"entry_point": script.value, "pages": pages}))
"""


def _parent(path: str) -> str:
    """`"watermark embed"` -> `"watermark"`; a top-level command's parent is the root, `""`."""
    return path.rsplit(" ", 1)[0] if " " in path else ""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "CREDENCE_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.pop("CREDENCE_DATABASE_URL", None)
    return env


def _credence_script() -> str:
    """The installed `credence` console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("credence")
    found = str(beside) if beside.exists() else shutil.which("credence")
    if found is None:
        pytest.fail("the `credence` console script is not installed (pip install -e .)")
    return found


@pytest.fixture(scope="module")
def help_pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """Every help page of the CLI, from one fresh interpreter: {"watermark embed": {exit, output, group}}."""
    env = _env(tmp_path_factory.mktemp("entrypoints"))
    result = subprocess.run(
        [sys.executable, "-c", _WALK_HELP], capture_output=True, text=True, timeout=180, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["entry_point"] == "credence.cli:main", report["entry_point"]
    return report["pages"]


def test_every_command_and_sub_command_answers_help(help_pages: dict[str, dict[str, object]]) -> None:
    """Each page: exit 0, a usage line naming its own command path; groups list their sub-commands."""
    for path, page in help_pages.items():
        output = str(page["output"])
        assert page["exit"] == 0, (path, output)
        assert f"Usage: credence {path}".rstrip() in output, (path, output)
        if page["group"]:
            children = [name.split(" ")[-1] for name in help_pages if name and _parent(name) == path]
            assert children, (path, output)
            for child in children:
                assert child in output, (path, child, output)


def test_the_minimum_command_set_is_there(help_pages: dict[str, dict[str, object]]) -> None:
    """The commands the README documents exist (discovery alone would pass if one vanished)."""
    missing = [name for name in MINIMUM_COMMANDS if name not in help_pages]
    for group, commands in MINIMUM_GROUPS.items():
        if group not in help_pages:
            missing.append(group)
        missing += [f"{group} {command}" for command in commands if f"{group} {command}" not in help_pages]
    assert not missing, f"commands missing from `credence`: {missing}; found {sorted(help_pages)}"
    assert len(help_pages) >= 1 + len(MINIMUM_COMMANDS) + sum(len(c) + 1 for c in MINIMUM_GROUPS.values())


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["serve", "--help"], ["worker", "--help"], ["generate", "--help"]],
    ids=lambda argv: " ".join(argv),
)
def test_the_console_script_runs(argv: list[str], tmp_path: Path) -> None:
    """The installed `credence` script itself (the README's main job, the server and the worker): exit 0, usage."""
    result = subprocess.run(
        [_credence_script(), *argv], capture_output=True, text=True, timeout=120, env=_env(tmp_path), check=False
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    command = " ".join(argv[:-1])
    assert f"Usage: credence {command}".rstrip() in result.stdout, result.stdout
    if not command:
        for name in (*MINIMUM_COMMANDS, *MINIMUM_GROUPS):
            assert name in result.stdout, (name, result.stdout)


def test_python_dash_m_credence(tmp_path: Path) -> None:
    """`python -m credence --help` is the same CLI (for environments without the script on PATH)."""
    result = subprocess.run(
        [sys.executable, "-m", "credence", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(tmp_path),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    for name in ("generate", "serve", "worker", "verify"):
        assert name in result.stdout, (name, result.stdout)
