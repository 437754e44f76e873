"""The web console in headless Chromium (Debian's `chromium`, driven by Playwright) over a real server.

Main paths: the sign-in page, a key without the scopes refused, sign in, overview, queue (with
the held output's frames), approve, reject, search and export, a generation page, verify an
upload, sign out; the session cookie's flags; a form whose CSRF token was tampered with refused.
A screenshot of each page is saved under `$CREDENCE_TEST_ARTIFACTS/console` (default: the pytest
base temp folder's `artifacts/console`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from credence.auth import new_key
from credence.generation.hold import quarantine_for
from credence.runtime import Runtime
from provenance.ledger import ModerationDecision
from provenance.ledger.models import Client
from provenance.publish import PublishRequest

from .conftest import API_KEY, LiveServer, make_clip, settings_for

pytestmark = pytest.mark.slow  # a live server and headless Chromium

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="the dev extra installs playwright")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium chromium-driver)",
                allow_module_level=True)


def _held(rt: Runtime, stage: str, category: str, prompt: str, frames: bool) -> str:
    gen = rt.publisher.begin(PublishRequest(prompt=prompt, model_name="credence-default-t2v",
                                            policy_version="2026-11-24.1+sha256:test"), status="review", stage=stage)
    with rt.ledger.session() as s:
        s.add(ModerationDecision(generation_id=gen.id, stage=stage, prompt_sha256=gen.prompt_sha256, action="review",
                                 scores={category: 0.5}, policy_version="2026-11-24.1",
                                 reasons=[{"category": category, "score": 0.5, "threshold": 0.4, "action": "review",
                                           "source": "nudenet" if stage == "output" else "classifier"}]))
    if frames:
        t = np.arange(16, dtype=np.float32)[:, None, None, None]
        y, x = np.mgrid[0:256, 0:256].astype(np.float32)
        clip = (128 + 110 * np.sin((x[None, :, :, None] - 10 * t) / 19 + y[None, :, :, None] / 29 +
                                   np.array([0, 2.1, 4.2], np.float32))).clip(0, 255).astype(np.uint8)
        quarantine_for(rt).save(gen.id, clip, 8.0)
    return gen.id


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server with a held output, a held prompt, a published clip, and keys for each kind of user."""
    root = tmp_path_factory.mktemp("console")
    settings = settings_for(root / "home", CREDENCE_API_KEYS=API_KEY, CREDENCE_MAX_UPLOAD_BYTES=50_000_000)
    rt = Runtime(settings)
    rt.init()
    keys = {}
    with rt.ledger.session() as s:
        for name, scopes in (("trust-and-safety", ["review", "audit"]), ("generator-app", ["generate", "verify"])):
            client = Client(name=name)
            s.add(client)
            s.flush()
            keys[name] = new_key(s, client, scopes, reviewer="Tess" if "review" in scopes else None)[1]
    ids = {"output": _held(rt, "output", "sexual", "a dancer on a stage", frames=True),
           "prompt": _held(rt, "prompt", "violence", "a bloody knife on a table", frames=False)}
    published = rt.publisher.publish_file(make_clip(root / "source.mp4", frames=24), root / "published.mp4",
                                          PublishRequest(prompt="a blue square moving up", model_name="external"))
    ids["published"] = published.generation_id
    artifacts = Path(os.environ.get("CREDENCE_TEST_ARTIFACTS") or tmp_path_factory.getbasetemp() / "artifacts")
    shots = artifacts / "console"
    shots.mkdir(parents=True, exist_ok=True)
    from credence.app import create_app

    with LiveServer(create_app(settings)) as server, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield {"url": server.url, "keys": keys, "ids": ids, "rt": rt, "browser": browser, "shots": shots,
                   "published_path": root / "published.mp4"}
        finally:
            browser.close()
    rt.ledger.dispose()


def _shot(page: Any, console: dict[str, Any], name: str) -> None:
    page.screenshot(path=str(console["shots"] / f"{name}.png"), full_page=True)


def _sign_in(page: Any, console: dict[str, Any], key: str) -> Any:
    page.goto(f"{console['url']}/console")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    return page


def test_console_main_paths(console: dict[str, Any]) -> None:
    context = console["browser"].new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    url, ids = console["url"], console["ids"]

    # Signed out: /console answers 200 with the sign-in page; other pages send the browser there.
    response = page.goto(f"{url}/console")
    assert response.status == 200 and page.locator("h1").inner_text() == "Sign in"
    _shot(page, console, "01-sign-in")
    page.goto(f"{url}/console/queue")
    assert page.url.endswith("/console") and page.locator("h1").inner_text() == "Sign in"

    # A key without review or audit is refused, and so is a wrong key.
    _sign_in(page, console, console["keys"]["generator-app"])
    assert "neither the review nor the audit scope" in page.locator(".error").inner_text()
    _sign_in(page, console, "cred_nothing_wrong")
    assert "not valid" in page.locator(".error").inner_text()
    _shot(page, console, "02-sign-in-refused")

    # Sign in: a session cookie that scripts cannot read, sent only to same-site requests.
    _sign_in(page, console, console["keys"]["trust-and-safety"])
    assert page.locator("h1").inner_text() == "Overview"
    cookie = next(c for c in context.cookies() if c["name"] == "credence_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert console["keys"]["trust-and-safety"] not in str(context.cookies())
    assert page.locator(".figure b").first.inner_text() == "2"  # two held
    assert page.locator("svg.chart rect").count() >= 1
    _shot(page, console, "03-overview")

    # The queue: both held items, the held output with its frames (served, decoded by the browser).
    page.goto(f"{url}/console/queue")
    assert page.locator("article.item").count() == 2
    output_item = page.locator(f"#item-{ids['output']}")
    assert output_item.locator("img").count() >= 2
    assert page.evaluate(f"document.querySelector('#item-{ids['output']} img').naturalWidth") == 256
    assert "sexual" in output_item.inner_text()
    _shot(page, console, "04-queue")

    # CSRF: the same form with a tampered token is refused, and nothing changes.
    page.evaluate(f"""document.querySelector('#item-{ids["prompt"]} form[action$="/reject"] input[name=csrf]')
                      .value = 'forged'""")
    page.locator(f"#item-{ids['prompt']} form[action$='/reject'] input[name=note]").fill("forged")
    with page.expect_response(lambda r: r.request.method == "POST") as refused:
        page.locator(f"#item-{ids['prompt']} form[action$='/reject'] button").click()
    assert refused.value.status == 403
    assert "CSRF token is missing or wrong" in page.locator(".error").inner_text()  # an HTML page, not JSON
    _shot(page, console, "05-csrf-refused")
    assert console["rt"].ledger.get_generation(ids["prompt"]).status == "review"

    # Approve the held output (published as it was held), reject the held prompt.
    page.goto(f"{url}/console/queue")
    page.locator(f"#item-{ids['output']} form[action$='/approve'] input[name=note]").fill("abstract pattern")
    page.locator(f"#item-{ids['output']} form[action$='/approve'] button").click()
    page.wait_for_selector(".flash", timeout=120_000)
    assert "now published" in page.locator(".flash").inner_text()
    page.locator(f"#item-{ids['prompt']} form[action$='/reject'] input[name=note]").fill("gore")
    page.locator(f"#item-{ids['prompt']} form[action$='/reject'] button").click()
    assert "now rejected" in page.locator(".flash").inner_text()
    assert page.locator("article.item").count() == 0
    _shot(page, console, "06-queue-after-decisions")
    rt = console["rt"]
    assert rt.ledger.get_generation(ids["output"]).status == "published"
    assert rt.ledger.get_generation(ids["prompt"]).status == "rejected"

    # Search with filters, and export what matches (CSV, streamed).
    page.goto(f"{url}/console/search")
    page.fill("input[name=prompt]", "knife")
    page.click("form.filters button")
    rows = page.locator("table tr").all_inner_texts()
    assert len(rows) == 2 and "rejected" in rows[1]
    page.fill("input[name=prompt]", "")
    page.fill("input[name=status]", "published")
    page.click("form.filters button")
    assert page.locator("table tr").count() == 3  # header + the approved output + the published clip
    _shot(page, console, "07-search")
    with page.expect_download() as download:
        page.click("text=CSV")
    text = Path(download.value.path()).read_text()
    assert text.splitlines()[0].startswith("id,created_at") and len(text.splitlines()) == 3

    # A generation's page: prompt, decisions, frames, manifest, mark id, fingerprints, clip, audit trail.
    page.goto(f"{url}/console/generations/{ids['output']}")
    body = page.locator("main").inner_text()
    gen = rt.ledger.get_generation(ids["output"])
    assert gen.mark_hex in body and "abstract pattern" in body and "review.approve" in body
    assert gen.files[0].manifest_label in body and "Fingerprints" in body
    assert page.evaluate("document.querySelector('.frames img').naturalWidth") > 0
    _shot(page, console, "08-generation")

    # Verify an upload: the approved output is ours.
    page.goto(f"{url}/console/verify")
    page.set_input_files("input[type=file]", gen.files[0].path)
    page.click("form button[type=submit] >> nth=-1")
    page.wait_for_selector(".verdict", timeout=120_000)
    assert page.locator(".verdict").inner_text() == "generated"
    assert ids["output"] in page.locator("main").inner_text()
    _shot(page, console, "09-verify")

    # Sign out: the session is gone on the server, not only in the browser.
    sid = next(c["value"] for c in context.cookies() if c["name"] == "credence_console")
    page.click("form.signout button")
    assert page.locator("h1").inner_text() == "Sign in"
    _shot(page, console, "10-signed-out")
    stale = httpx.get(f"{url}/console/queue", cookies={"credence_console": sid}, follow_redirects=False)
    assert stale.status_code == 303 and stale.headers["location"] == "/console"
    context.close()


def test_console_forms_refuse_a_missing_csrf_token(console: dict[str, Any]) -> None:
    url = console["url"]
    with httpx.Client(base_url=url) as http:
        # Sign-in itself needs the token of the page that served the form.
        http.get("/console")
        assert http.post("/console/signin", data={"key": API_KEY}).status_code == 403
        token = http.cookies.get("credence_console_csrf")
        assert http.post("/console/signin", data={"key": API_KEY, "csrf": token}).status_code == 303
        assert http.post("/console/signout", data={}).status_code == 403
        assert http.post("/console/reviews/x/approve", data={"note": "n"}).status_code == 403
        page = http.get("/console")
        assert page.status_code == 200 and "Content-Security-Policy" in page.headers
