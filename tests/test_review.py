"""The review queue over a real server: held prompts and held outputs approved and rejected,
a `sexual_minors` hold nobody can approve, the two-reviewer rule, quarantine expiry, and the
`credence review` commands.

The deployment's policy here is the packaged one with two changes a trust-and-safety team could
make: the NudeNet output screen holds every clip for review (`output.nudenet.review: 0`), and
`violence` needs two reviewers. Generations run the shipped default model with few steps.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from credence.auth import new_key
from credence.generation import pipeline
from credence.generation.hold import quarantine_for
from credence.runtime import Runtime
from moderation.policy import default_policy_path
from provenance.ledger import Generation, ModerationDecision
from provenance.ledger.models import AuditEntry, Client
from provenance.publish import PublishRequest

from .conftest import API_KEY, LiveServer, settings_for

pytest.importorskip("nudenet", reason="the output screen of these tests is NudeNet (the dev extra installs it)")

# 17 frames (2.1 s, the model's default): a 9-frame (1.1 s) clip is one look, whose p-value is
# floored by the CRC bound (1.22 decades of margin) when the sync statistic is weak, and the
# publish read-back asks for 2 (issue 22's open short-clip gap: 14 of 16 such reads failed).
FAST = {"steps": 2, "seed": 1, "frames": 17}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One home, one policy, one server and four keys for the whole module (the model loads once)."""
    root = tmp_path_factory.mktemp("review")
    policy = yaml.safe_load(default_policy_path().read_text())
    policy["output"]["nudenet"]["review"] = 0.0
    policy["review"] = {"two_reviewers": ["violence"]}
    policy_path = root / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy))
    settings = settings_for(root / "home", CREDENCE_POLICY=policy_path, CREDENCE_API_KEYS=API_KEY,
                            CREDENCE_MAX_UPLOAD_BYTES=50_000_000)
    runtime = Runtime(settings)
    runtime.init()
    keys = {}
    with runtime.ledger.session() as s:
        for name, scopes in (("reviewer-a", ["review"]), ("reviewer-b", ["review"]), ("auditor", ["audit"]),
                             ("plain", ["generate", "verify"])):
            client = Client(name=name)
            s.add(client)
            s.flush()
            # Approvals name a person (issue 21): each review key names its holder.
            keys[name] = new_key(s, client, scopes, reviewer=name.replace("reviewer-", "Reviewer ").title())[1]
    from credence.app import create_app
    from moderation import Moderator, load_policy

    moderator = Moderator.load(load_policy(policy_path))
    with LiveServer(create_app(settings)) as server:
        yield {"runtime": runtime, "server": server, "keys": keys, "moderator": moderator, "root": root,
               "env": dict(os.environ, CREDENCE_HOME=str(settings.home), CREDENCE_POLICY=str(policy_path))}
    runtime.ledger.dispose()


def _h(deployment: dict[str, Any], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {deployment['keys'][who]}"}


def _generate(deployment: dict[str, Any], prompt: str, name: str) -> pipeline.GenerateOutcome:
    out = deployment["root"] / f"{name}.mp4"
    return pipeline.generate(deployment["runtime"], deployment["moderator"], prompt, out,
                             pipeline.GenerateOptions(**FAST))


def _status(deployment: dict[str, Any], generation_id: str) -> Generation:
    gen = deployment["runtime"].ledger.get_generation(generation_id)
    assert gen is not None
    return gen


def _wait_for(deployment: dict[str, Any], generation_id: str, statuses: set[str], stage: str | None = None,
              timeout: float = 240) -> Generation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gen = _status(deployment, generation_id)
        if gen.status in statuses and (stage is None or gen.stage == stage):
            return gen
        time.sleep(0.5)
    raise AssertionError(f"{generation_id} is still {gen.status}/{gen.stage}")


def _verify(deployment: dict[str, Any], path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        response = httpx.post(f"{deployment['server'].url}/v1/verify", headers=_h(deployment, "plain"),
                              files={"file": (path.name, handle, "video/mp4")}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _held_row(deployment: dict[str, Any], stage: str, categories: list[str], frames: bool = False) -> str:
    """A generation held at `stage` for `categories`, as the screens leave one (for the policy checks)."""
    rt: Runtime = deployment["runtime"]
    gen = rt.publisher.begin(PublishRequest(prompt="held for the test", model_name="credence-default-t2v"),
                             status="review", stage=stage)
    with rt.ledger.session() as s:
        s.add(ModerationDecision(generation_id=gen.id, stage=stage, prompt_sha256=gen.prompt_sha256, action="review",
                                 scores={c: 0.4 for c in categories}, policy_version="test",
                                 reasons=[{"category": c, "score": 0.4, "threshold": 0.3, "action": "review",
                                           "source": "classifier"} for c in categories]))
    if frames:
        # 3 s with some grain: publishing reads the mark back (issue 22), and a 1 s pure sinusoid's
        # margin depended on the random mark id (CI failed it once at 1.5 of the 2 decades needed).
        t = np.arange(36, dtype=np.float32)[:, None, None, None]
        y, x = np.mgrid[0:256, 0:256].astype(np.float32)
        grain = np.random.default_rng(7).normal(0, 12, (1, 256, 256, 1)).astype(np.float32)
        clip = (128 + 100 * np.sin((x[None, :, :, None] + 8 * t) / 17 + y[None, :, :, None] / 23 +
                                   np.array([0, 2, 4], np.float32)) + grain).clip(0, 255).astype(np.uint8)
        quarantine_for(rt).save(gen.id, clip, 12.0)
    return gen.id


# -- held outputs ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_held_output_is_quarantined_then_approved_and_published_as_that_output(deployment: dict[str, Any]) -> None:
    outcome = _generate(deployment, "a red circle moving left on a blue background", "held-output")
    answer = outcome.to_dict()
    assert outcome.status == "review" and answer["output_moderation"]["action"] == "review"
    # The client hears that the video, not the request, was held; nothing is released.
    assert "generated video was held" in answer["user_message"] and "request" not in answer["user_message"]
    assert not (deployment["root"] / "held-output.mp4").exists()
    gen = _status(deployment, outcome.generation_id)
    assert (gen.status, gen.stage) == ("review", "output")
    quarantine = quarantine_for(deployment["runtime"])
    frames, _fps = quarantine.load(gen.id)
    assert frames.ndim == 4 and frames.shape[0] >= 1

    url = deployment["server"].url
    assert httpx.get(f"{url}/v1/reviews").status_code == 401
    assert httpx.get(f"{url}/v1/reviews", headers=_h(deployment, "plain")).status_code == 403
    listed = httpx.get(f"{url}/v1/reviews", params={"stage": "output"}, headers=_h(deployment, "reviewer-a")).json()
    item = next(i for i in listed["items"] if i["id"] == gen.id)
    assert item["stage"] == "output" and item["status"] == "review" and item["reasons"]
    assert item["quarantine"]["frames"] == frames.shape[0]

    response = httpx.post(f"{url}/v1/reviews/{gen.id}/approve", json={"note": "abstract shapes, fine"},
                          headers=_h(deployment, "reviewer-a"), timeout=240)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "published"
    published = _status(deployment, gen.id)
    assert published.status == "published" and published.files
    path = Path(published.files[0].path)
    verdict = _verify(deployment, path)
    assert verdict["verdict"] == "generated" and verdict["generation_id"] == gen.id
    with pytest.raises(Exception, match="no held output"):
        quarantine.load(gen.id)
    # The decision names the reviewer's key, the note and the time, and is chained into the audit log.
    with deployment["runtime"].ledger.session() as s:
        decision = s.query(ModerationDecision).filter_by(generation_id=gen.id, stage="review").one()
        assert decision.action == "approve" and decision.key_id
        assert decision.reasons[0]["note"] == "abstract shapes, fine"
        entry = s.query(AuditEntry).filter_by(subject=gen.id, action="review.approve").one()
        assert entry.key_id == decision.key_id and entry.row_hash and entry.details["note"] == "abstract shapes, fine"


@pytest.mark.slow
def test_held_output_rejected_is_never_served(deployment: dict[str, Any]) -> None:
    outcome = _generate(deployment, "a green square moving up on a black background", "rejected-output")
    assert outcome.status == "review"
    url = deployment["server"].url
    response = httpx.post(f"{url}/v1/reviews/{outcome.generation_id}/reject", json={"note": "not for release"},
                          headers=_h(deployment, "reviewer-b"))
    assert response.status_code == 200 and response.json()["status"] == "rejected", response.text
    gen = _status(deployment, outcome.generation_id)
    assert gen.status == "rejected" and not gen.files and "not released" in (gen.failure_reason or "")
    assert "not for release" not in (gen.failure_reason or "")  # the note is the reviewer's, not the client's
    video = httpx.get(f"{url}/v1/generations/{gen.id}/video", headers={"Authorization": f"Bearer {API_KEY}"})
    assert video.status_code in (404, 409, 410), video.status_code
    assert not (deployment["runtime"].settings.home / "quarantine" / gen.id).exists()
    assert not list(deployment["runtime"].settings.outputs_dir.glob(f"{gen.id}*"))
    again = httpx.post(f"{url}/v1/reviews/{gen.id}/approve", json={"note": "changed my mind"},
                       headers=_h(deployment, "reviewer-a"))
    assert again.status_code == 409


# -- held prompts ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_held_prompt_two_reviewers_then_the_job_runs_and_its_output_is_still_screened(
        deployment: dict[str, Any]) -> None:
    outcome = _generate(deployment, "a bloody knife on a table", "held-prompt")
    assert outcome.status == "review"
    gen_id = outcome.generation_id
    assert (_status(deployment, gen_id).stage) == "prompt"
    url = deployment["server"].url
    first = httpx.post(f"{url}/v1/reviews/{gen_id}/approve", json={"note": "a kitchen scene"},
                       headers=_h(deployment, "reviewer-a"))
    assert first.status_code == 200 and first.json()["status"] == "review", first.text
    assert "1 of 2" in first.json()["detail"]
    twice = httpx.post(f"{url}/v1/reviews/{gen_id}/approve", json={"note": "still fine"},
                       headers=_h(deployment, "reviewer-a"))
    assert twice.status_code == 409 and "already approved" in twice.json()["detail"]
    second = httpx.post(f"{url}/v1/reviews/{gen_id}/approve", json={"note": "agreed"},
                        headers=_h(deployment, "reviewer-b"))
    assert second.status_code == 200 and second.json()["status"] in ("queued", "review", "published"), second.text
    # The approval let the job run; this deployment's output screen holds every clip, so it is back
    # in review, now for its output: the approval stood in for the prompt decision, not the output's.
    gen = _wait_for(deployment, gen_id, {"review", "published", "failed"}, stage="output")
    assert (gen.status, gen.stage) == ("review", "output"), gen.failure_reason
    shown = httpx.get(f"{url}/v1/reviews/{gen_id}", headers=_h(deployment, "reviewer-a")).json()
    assert [d["action"] for d in shown["decisions"] if d["stage"] == "review"] == ["approve", "approve"]
    assert {a["action"] for a in shown["audit"]} >= {"review.approve", "generation.created"}


def test_held_prompt_rejected_tells_the_client_why(deployment: dict[str, Any]) -> None:
    outcome = _generate(deployment, "a drunk man smoking weed", "rejected-prompt")
    assert outcome.status == "review"
    url = deployment["server"].url
    response = httpx.post(f"{url}/v1/reviews/{outcome.generation_id}/reject", json={"note": "drug use"},
                          headers=_h(deployment, "reviewer-a"))
    assert response.status_code == 200, response.text
    gen = _status(deployment, outcome.generation_id)
    policy = deployment["moderator"].policy
    assert gen.status == "rejected" and gen.failure_reason == policy.categories["illegal_activity"].user_message
    record = httpx.get(f"{deployment['server'].url}/v1/generations/{gen.id}",
                       headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert record["status"] == "rejected" and record["message"] == gen.failure_reason and "drug use" not in str(record)


# -- policy rules ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sexual_minors_hold_cannot_be_approved_by_anyone(deployment: dict[str, Any]) -> None:
    gen_id = _held_row(deployment, "prompt", ["sexual_minors", "sexual"])
    url = deployment["server"].url
    for who in ("reviewer-a", "reviewer-b"):
        response = httpx.post(f"{url}/v1/reviews/{gen_id}/approve", json={"note": "looks fine"},
                              headers=_h(deployment, who))
        assert response.status_code == 409 and "sexual_minors" in response.json()["detail"]
    # The operator's bootstrap key names no reviewer: it may not approve anything (403), held for
    # sexual_minors or not.
    operator = httpx.post(f"{url}/v1/reviews/{gen_id}/approve", json={"note": "override"},
                          headers={"Authorization": f"Bearer {API_KEY}"})
    assert operator.status_code == 403 and "names no reviewer" in operator.json()["detail"]
    cli = subprocess.run([sys.executable, "-m", "credence", "review", "approve", gen_id, "--note", "x"],
                         env=deployment["env"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 5 and "sexual_minors" in cli.stderr, cli.stderr
    assert _status(deployment, gen_id).status == "review"
    listed = subprocess.run([sys.executable, "-m", "credence", "review", "list", "--category", "sexual_minors",
                             "--json"], env=deployment["env"], capture_output=True, text=True, timeout=120)
    items = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [i["id"] for i in items] == [gen_id] and items[0]["never_approvable"] == ["sexual_minors"]
    assert {"id", "stage", "status", "reasons"} <= set(items[0])
    rejected = subprocess.run([sys.executable, "-m", "credence", "review", "reject", gen_id, "--note", "CSAM risk",
                               "--json"], env=deployment["env"], capture_output=True, text=True, timeout=120)
    assert rejected.returncode == 0 and json.loads(rejected.stdout)["status"] == "rejected", rejected.stderr
    shown = subprocess.run([sys.executable, "-m", "credence", "review", "show", gen_id, "--json"],
                           env=deployment["env"], capture_output=True, text=True, timeout=120)
    assert json.loads(shown.stdout)["status"] == "rejected"


def test_two_reviewers_release_a_held_output_exactly_as_quarantined(deployment: dict[str, Any]) -> None:
    gen_id = _held_row(deployment, "output", ["violence"], frames=True)
    held, _fps = quarantine_for(deployment["runtime"]).load(gen_id)
    url = deployment["server"].url
    one = httpx.post(f"{url}/v1/reviews/{gen_id}/approve", json={"note": "ok"}, headers=_h(deployment, "reviewer-b"))
    assert one.json()["status"] == "review"
    two = httpx.post(f"{url}/v1/reviews/{gen_id}/approve", json={"note": "ok too"},
                     headers=_h(deployment, "reviewer-a"), timeout=240)
    assert two.status_code == 200 and two.json()["status"] == "published", two.text
    gen = _status(deployment, gen_id)
    from provenance.video import iter_frames

    released = np.stack(list(iter_frames(Path(gen.files[0].path))))
    assert released.shape == held.shape  # the very frames: same count and size (watermarked, re-encoded)
    # A small busy clip carries a mark near 35 dB (the floor drops for frames under 640x360, so that
    # it survives a CRF 35 re-encode) plus the re-encode: a few grey levels. Another generation's
    # frames differ by tens.
    assert np.abs(released.astype(int) - held.astype(int)).mean() < 6
    assert _verify(deployment, Path(gen.files[0].path))["generation_id"] == gen_id


@pytest.mark.slow
def test_quarantined_outputs_expire(deployment: dict[str, Any]) -> None:
    from credence.review import expire_held_outputs, list_held
    from provenance.quarantine import Quarantine

    rt: Runtime = deployment["runtime"]
    gen_id = _held_row(deployment, "output", ["sexual"], frames=True)
    short = Quarantine(rt.settings.home / "quarantine", dt.timedelta(seconds=0))
    frames, fps = short.load(gen_id)
    short.save(gen_id, frames, fps)  # held again with no time to review
    assert gen_id in expire_held_outputs(rt)
    again = _held_row(deployment, "output", ["sexual"], frames=True)
    short.save(again, *short.load(again))
    result = subprocess.run([sys.executable, "-m", "credence", "review", "expire", "--json"], env=deployment["env"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and json.loads(result.stdout)["expired"] == [again], result.stderr
    assert _status(deployment, again).status == "rejected"
    gen = _status(deployment, gen_id)
    assert gen.status == "rejected" and "review period ended" in (gen.failure_reason or "")
    assert gen_id not in [i["id"] for i in list_held(rt)]


@pytest.mark.slow
def test_cli_approve_of_a_held_prompt_runs_the_job_to_its_end(deployment: dict[str, Any]) -> None:
    """The embedded default (no broker): `credence review approve` runs the job itself, as `generate` would."""
    rt: Runtime = deployment["runtime"]
    decision = deployment["moderator"].screen_prompt("a person crying alone on a bridge at night")
    assert decision.action == "review"
    gen, _decision, status = pipeline.screen_and_create(rt, deployment["moderator"],
                                                        "a person crying alone on a bridge at night",
                                                        pipeline.GenerateOptions(**FAST), start="queued")
    assert status == "review"
    command = ["review", "approve", gen.id, "--note", "sad, not harmful", "--as", "alice", "--json"]
    result = subprocess.run([sys.executable, "-m", "credence", *command], env=deployment["env"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    # It ran here and its output went through the screen, which in this deployment holds every clip.
    assert answer["status"] == "review" and "the job ran" in answer["detail"], answer
    after = _status(deployment, gen.id)
    assert (after.status, after.stage) == ("review", "output") and after.seed == FAST["seed"]
    assert quarantine_for(rt).load(gen.id)[0].shape[0] == FAST["frames"]
    with rt.ledger.session() as s:
        approval = s.query(ModerationDecision).filter_by(generation_id=gen.id, stage="review").one()
        assert approval.reasons[0]["reviewer"] == "cli:alice" and approval.action == "approve"
