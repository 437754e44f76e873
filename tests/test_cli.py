"""The real `credence` console script: exit codes, one-line errors, JSON shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import make_clip, shared_file


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "credence", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def assert_clean_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr


@pytest.mark.slow
def test_init_publish_verify(cli_env: dict[str, str], clip: Path, tmp_path: Path) -> None:
    assert run(cli_env, "init").returncode == 0
    again = run(cli_env, "init", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["created"] == []
    out = tmp_path / "published.mp4"
    published = run(cli_env, "publish", str(clip), "-o", str(out), "--prompt", "a cat", "--model", "m1", "--json")
    assert published.returncode == 0, published.stderr
    generation_id = json.loads(published.stdout)["generation_id"]
    verified = run(cli_env, "verify", str(out), "--json")
    assert verified.returncode == 0, verified.stderr
    verdict = json.loads(verified.stdout)
    assert verdict["verdict"] == "generated" and verdict["generation_id"] == generation_id
    c2pa = next(e for e in verdict["evidence"] if e["source"] == "c2pa")
    assert c2pa == c2pa | {"present": True, "state": "Trusted", "ours": True, "generation_id": generation_id,
                           "codes": []}
    # A clip that was never published is not ours (the source clip itself would match by content).
    other = make_clip(tmp_path / "other.mp4", seed=7)
    plain = json.loads(run(cli_env, "verify", str(other), "--json").stdout)
    assert plain["verdict"] == "not_generated" and plain["generation_id"] is None


@pytest.mark.slow
def test_verify_a_foreign_manifest(cli_env: dict[str, str]) -> None:
    fixture = shared_file("videos", "c2pa-fixtures", "video1.mp4")
    run(cli_env, "init")
    verdict = json.loads(run(cli_env, "verify", str(fixture), "--json").stdout)
    c2pa = next(e for e in verdict["evidence"] if e["source"] == "c2pa")
    assert c2pa["present"] and c2pa["state"] == "Valid" and not c2pa["ours"]
    assert verdict["verdict"] == "not_generated"


@pytest.mark.parametrize("case", ["missing", "not_video", "truncated", "webm_out", "no_folder", "missing_key"])
@pytest.mark.slow
def test_publish_bad_input_is_exit_2_with_one_line(cli_env: dict[str, str], tmp_path: Path, case: str) -> None:
    run(cli_env, "init")
    src, out = make_clip(tmp_path / "in.mp4"), tmp_path / "out.mp4"
    needle = {"missing": "no such file", "not_video": "not a readable video", "truncated": "truncated",
              "webm_out": "cannot embed", "no_folder": "does not exist", "missing_key": "no signing key"}[case]
    if case == "missing":
        src = tmp_path / "absent.mp4"
    elif case == "not_video":
        src = tmp_path / "text.mp4"
        src.write_text("hello\n" * 100)
    elif case == "truncated":
        full = make_clip(tmp_path / "full.mp4", frames=48)
        src = tmp_path / "cut.mp4"
        src.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    elif case == "webm_out":
        out = tmp_path / "out.webm"
    elif case == "no_folder":
        out = tmp_path / "nowhere" / "out.mp4"
    elif case == "missing_key":
        (Path(cli_env["CREDENCE_HOME"]) / "keys" / "signing_key.pem").unlink()
    result = run(cli_env, "publish", str(src), "-o", str(out), "--prompt", "p")
    assert_clean_error(result, needle)
    assert not out.exists()


def test_verify_bad_input(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert_clean_error(run(cli_env, "verify", str(tmp_path / "absent.mp4")), "no such file")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4096)
    assert_clean_error(run(cli_env, "verify", str(junk)), "not a readable video")


@pytest.mark.slow
def test_bad_setting_is_a_clean_error(cli_env: dict[str, str]) -> None:
    env = cli_env | {"CREDENCE_MAX_UPLOAD_BYTES": "lots"}
    assert_clean_error(run(env, "init"), "CREDENCE_MAX_UPLOAD_BYTES")


@pytest.mark.slow
def test_db_upgrade_and_current(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "db", "upgrade")
    assert (result.returncode == 0 and "0001" in result.stdout) or "000" in result.stdout
    assert run(cli_env, "db", "current").returncode == 0
