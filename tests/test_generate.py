"""`credence generate` and `POST /v1/generations` end to end on the shipped default model.

Moderation → generation → watermark, C2PA, fingerprints, ledger; then `credence verify` must name
the same generation. Blocked prompts write no video and leave a `blocked` record.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import httpx
import pytest

from credence.runtime import Runtime
from credence.settings import Settings
from moderation import load_policy
from provenance.ledger import Generation, ModerationDecision

from .conftest import API_KEY, LiveServer
from .test_cli import assert_clean_error, run

pytestmark = pytest.mark.skipif(not hasattr(importlib.import_module("moderation"), "Moderator"),
                                reason="the moderation package is not built yet")

PROMPT = "a red circle moving left on a blue background"
FAST = ("--steps", "4", "--seed", "3")


@pytest.mark.slow
def test_generate_publishes_a_clip_that_verifies_as_ours(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert run(cli_env, "init").returncode == 0
    out = tmp_path / "clip.mp4"
    result = run(cli_env, "generate", PROMPT, "-o", str(out), *FAST, "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["status"] == "published" and answer["path"] == str(out) and out.is_file()
    assert answer["moderation"]["action"] == "allow"
    verdict = json.loads(run(cli_env, "verify", str(out), "--json").stdout)
    assert verdict["verdict"] == "generated" and verdict["generation_id"] == answer["generation_id"]

    # The ledger knows what ran: the model, its weights' hash, the seed, both moderation stages.
    rt = Runtime(Settings.from_env(cli_env))
    with rt.ledger.session() as s:
        gen = s.get(Generation, answer["generation_id"])
        assert gen is not None and gen.status == "published"
        assert gen.model == "credence-default-t2v" and gen.model_hash and gen.seed == 3
        decisions = s.query(ModerationDecision).filter_by(generation_id=gen.id).all()
        assert sorted(d.stage for d in decisions) == ["output", "prompt"]
        # The policy that decided is named by version and hash in the ledger and in the signed manifest.
        policy = load_policy()
        assert {d.policy_hash for d in decisions} == {policy.sha256}
        assert gen.policy_version == f"{policy.version}+sha256:{policy.sha256[:16]}"
        assert gen.policy_version.encode() in gen.files[0].manifest
    rt.ledger.dispose()


@pytest.mark.slow
def test_blocked_prompt_writes_nothing_and_exits_3(cli_env: dict[str, str], tmp_path: Path) -> None:
    run(cli_env, "init")
    out = tmp_path / "never.mp4"
    result = run(cli_env, "generate", "a naked child in a bedroom", "-o", str(out), *FAST, "--json")
    assert result.returncode == 3, result.stderr
    answer = json.loads(result.stdout)
    assert answer["status"] == "blocked" and answer["path"] is None and not out.exists()
    assert not list(tmp_path.glob(".never.mp4*")), "no temporary file may be left behind"


@pytest.mark.slow
def test_generate_bad_usage_is_exit_2(cli_env: dict[str, str], tmp_path: Path) -> None:
    run(cli_env, "init")
    assert_clean_error(run(cli_env, "generate", PROMPT, "--frames", "0"), "--frames")
    assert_clean_error(run(cli_env, "generate", PROMPT, "--model", str(tmp_path / "nope")), "nope")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert_clean_error(run(cli_env, "generate", PROMPT, "--model", str(plain), "-o", str(tmp_path / "x.mp4")),
                       "plain")
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.slow
def test_generation_api(live_server: LiveServer) -> None:
    """POST answers at once with a queued job; the in-process executor runs it; the clip verifies."""
    import time

    with httpx.Client(base_url=live_server.url, timeout=300, headers={"X-API-Key": API_KEY}) as client:
        made = client.post("/v1/generations", json={"prompt": PROMPT, "steps": 4, "seed": 1})
        assert made.status_code == 202, made.text
        body = made.json()
        assert body["status"] == "queued" and made.headers["location"] == f"/v1/generations/{body['id']}"
        deadline = time.monotonic() + 240
        while (record := client.get(made.headers["location"]).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, record
            time.sleep(0.3)
        assert record["status"] == "published", record
        assert record["mark_id"] and record["manifest_label"] and record["progress"] == 1.0
        assert record["queue_wait_s"] is not None and "path" not in str(record["files"])
        video = client.get(record["video_url"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        verdict = client.post("/v1/verify", files={"file": ("clip.mp4", video.content, "video/mp4")}).json()
        assert verdict["verdict"] == "generated" and verdict["generation_id"] == body["id"]

        blocked = client.post("/v1/generations", json={"prompt": "a naked child in a bedroom", "steps": 4})
        assert blocked.status_code == 422 and blocked.json()["status"] == 422  # RFC 9457: the HTTP status
        assert blocked.json()["generation_status"] == "blocked"
        assert blocked.headers["content-type"].startswith("application/problem+json")
        assert "minor" in blocked.json()["detail"]
        assert client.get(f"/v1/generations/{blocked.json()['id']}/video").status_code == 404
