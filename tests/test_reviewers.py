"""Reviewers are people (issue 21), over a real server: two keys of one reviewer are one reviewer, a
key that names nobody cannot approve, and a client never approves its own held request (API and
console), while it may reject it. The policy needs two reviewers for `violence`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from sqlalchemy import select

from credence.review import quarantine_for
from credence.runtime import Runtime
from moderation.policy import default_policy_path
from provenance.ledger import ModerationDecision
from provenance.ledger.models import AuditEntry
from provenance.publish import PublishRequest

from .conftest import LiveServer, settings_for
from .test_sessions import make_key, page_csrf, sign_in

pytestmark = pytest.mark.slow  # a server per module, and approvals that publish (watermark, C2PA)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("reviewers")
    policy = yaml.safe_load(default_policy_path().read_text())
    policy["review"] = {"two_reviewers": ["violence"]}
    policy_path = root / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy))
    settings = settings_for(root / "home", CREDENCE_POLICY=policy_path)
    runtime = Runtime(settings)
    runtime.init()
    from credence.app import create_app

    with LiveServer(create_app(settings)) as server:
        yield {"rt": runtime, "url": server.url,
               "env": dict(os.environ, CREDENCE_HOME=str(settings.home), CREDENCE_POLICY=str(policy_path))}
    runtime.ledger.dispose()


def held_output(rt: Runtime, category: str, client_id: str | None = None) -> str:
    """A generation whose output is held for `category`, its frames in quarantine."""
    gen = rt.publisher.begin(PublishRequest(prompt="held for the test", model_name="credence-default-t2v",
                                            client_id=client_id), status="review", stage="output")
    with rt.ledger.session() as s:
        s.add(ModerationDecision(generation_id=gen.id, stage="output", prompt_sha256=gen.prompt_sha256,
                                 action="review", scores={category: 0.5}, policy_version="test",
                                 reasons=[{"category": category, "score": 0.5, "threshold": 0.4, "action": "review",
                                           "source": "nudenet"}]))
    t = np.arange(12, dtype=np.float32)[:, None, None, None]
    y, x = np.mgrid[0:192, 0:256].astype(np.float32)
    clip = (128 + 100 * np.sin((x[None, :, :, None] + 8 * t) / 17 + y[None, :, :, None] / 23 +
                               np.array([0, 2, 4], np.float32))).clip(0, 255).astype(np.uint8)
    quarantine_for(rt).save(gen.id, clip, 12.0)
    return gen.id


def decide(deployment: dict[str, Any], key: str, generation_id: str, action: str = "approve",
           note: str = "looked at every frame") -> httpx.Response:
    return httpx.post(f"{deployment['url']}/v1/reviews/{generation_id}/{action}", json={"note": note},
                      headers={"Authorization": f"Bearer {key}"}, timeout=240)


def status(deployment: dict[str, Any], generation_id: str) -> str:
    return deployment["rt"].ledger.get_generation(generation_id).status


def test_two_keys_of_one_reviewer_do_not_make_two_reviewers(deployment: dict[str, Any]) -> None:
    rt = deployment["rt"]
    gen_id = held_output(rt, "violence")
    alice = make_key(rt, "trust", ["review"], reviewer="Alice Smith")
    alice_again = make_key(rt, "trust", ["review"], reviewer="  alice   SMITH ")  # the same person, another key
    first = decide(deployment, alice["key"], gen_id)
    assert first.status_code == 200 and first.json()["status"] == "review" and "1 of 2" in first.json()["detail"]
    # The queue shows who approved so far (the console's page as the next reviewer sees it).
    with httpx.Client(base_url=deployment["url"], timeout=60) as http:
        assert sign_in(http, make_key(rt, "trust", ["review"], reviewer="Zoe")["key"]).status_code == 303
        assert "1 of 2 approvals: Alice Smith" in http.get("/console/queue").text
    second = decide(deployment, alice_again["key"], gen_id)
    assert second.status_code == 409, second.text
    assert second.headers["content-type"].startswith("application/problem+json")
    assert "Alice Smith already approved it" in second.json()["detail"]
    # The finding's case: keys of one client that name nobody. They cannot approve at all.
    unnamed = [make_key(rt, "trust", ["review"]) for _ in range(2)]
    for made in unnamed:
        answer = decide(deployment, made["key"], gen_id)
        assert answer.status_code == 403 and "names no reviewer" in answer.json()["detail"], answer.text
        assert "--reviewer NAME" in answer.json()["detail"]
    assert status(deployment, gen_id) == "review"
    # A second person releases it (the rule counts people; this one's key is of the same client).
    bob = make_key(rt, "trust", ["review"], reviewer="Bob")
    released = decide(deployment, bob["key"], gen_id)
    assert released.status_code == 200 and released.json()["status"] == "published", released.text
    # Approvals record the reviewer and the client, in the decision and in the audit log.
    with rt.ledger.session() as s:
        approvals = s.scalars(select(ModerationDecision).where(ModerationDecision.generation_id == gen_id,
                                                               ModerationDecision.action == "approve")
                              .order_by(ModerationDecision.id)).all()
        assert [(d.reasons[0]["reviewer_name"], d.client_id, d.key_id) for d in approvals] == [
            ("Alice Smith", alice["client_id"], alice["key_id"]), ("Bob", bob["client_id"], bob["key_id"])]
        audit = s.scalars(select(AuditEntry).where(AuditEntry.subject == gen_id,
                                                   AuditEntry.action == "review.approve")).all()
        assert [(a.details["reviewer"], a.client_id) for a in audit] == [
            ("Alice Smith", alice["client_id"]), ("Bob", bob["client_id"])]
    listed = httpx.get(f"{deployment['url']}/v1/reviews/{gen_id}", headers={"Authorization": f"Bearer {bob['key']}"})
    assert listed.status_code == 200


def test_a_client_never_approves_its_own_held_request(deployment: dict[str, Any]) -> None:
    rt = deployment["rt"]
    studio = make_key(rt, "studio", ["generate", "review"], reviewer="Carol")
    colleague = make_key(rt, "studio", ["review", "audit"], reviewer="Dan")  # another person, same client
    gen_id = held_output(rt, "sexual", client_id=studio["client_id"])  # one reviewer would do
    for made in (studio, colleague):
        answer = decide(deployment, made["key"], gen_id)
        assert answer.status_code == 403, answer.text
        problem = answer.json()
        assert problem["status"] == 403 and "never approves its own held request" in problem["detail"]
        assert answer.headers["content-type"].startswith("application/problem+json")
    # Nor through the console, with a valid session and CSRF token.
    with httpx.Client(base_url=deployment["url"], timeout=240) as http:
        assert sign_in(http, colleague["key"]).status_code == 303
        queue = http.get("/console/queue")
        assert queue.status_code == 200 and gen_id in queue.text
        page = http.post(f"/console/reviews/{gen_id}/approve",
                         data={"note": "ours, fine", "csrf": page_csrf(queue.text)})
        assert page.status_code == 403 and "never approves its own held request" in page.text
        assert page.headers["content-type"].startswith("text/html")
    assert status(deployment, gen_id) == "review"
    # Another client's reviewer may approve it.
    outsider = make_key(rt, "trust-outside", ["review"], reviewer="Erin")
    released = decide(deployment, outsider["key"], gen_id)
    assert released.status_code == 200 and released.json()["status"] == "published", released.text
    # Rejecting its own held request only withdraws it: allowed, and recorded as the client's.
    other = held_output(rt, "sexual", client_id=studio["client_id"])
    withdrawn = decide(deployment, studio["key"], other, "reject", "we withdraw it")
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "rejected"
    with rt.ledger.session() as s:
        rejection = s.scalars(select(ModerationDecision).where(ModerationDecision.generation_id == other,
                                                               ModerationDecision.action == "reject")).one()
        assert rejection.client_id == studio["client_id"] and rejection.reasons[0]["reviewer_name"] == "Carol"


def test_reviewer_names_from_the_cli(deployment: dict[str, Any]) -> None:
    rt, env = deployment["rt"], deployment["env"]
    created = subprocess.run([sys.executable, "-m", "credence", "clients", "create", "night-shift", "--scopes",
                              "review", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    first = json.loads(created.stdout)
    named = subprocess.run([sys.executable, "-m", "credence", "keys", "create", "night-shift", "--scopes", "review",
                            "--reviewer", "Frank", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert named.returncode == 0, named.stderr
    frank = json.loads(named.stdout)
    gen_id = held_output(rt, "violence")
    assert decide(deployment, first["key"], gen_id).status_code == 403  # no reviewer named on the first key
    assert decide(deployment, frank["key"], gen_id).json()["status"] == "review"  # 1 of 2
    renamed = subprocess.run([sys.executable, "-m", "credence", "keys", "set-reviewer", first["key_id"], "Grace"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert renamed.returncode == 0, renamed.stderr
    assert decide(deployment, first["key"], gen_id).json()["status"] == "published"
    shown = subprocess.run([sys.executable, "-m", "credence", "clients", "show", "night-shift", "--json"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert sorted(k["reviewer"] for k in json.loads(shown.stdout)["keys"]) == ["Frank", "Grace"]
    bad = subprocess.run([sys.executable, "-m", "credence", "keys", "create", "night-shift", "--scopes", "review",
                          "--reviewer", " "], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--reviewer must be a person's name" in bad.stderr
