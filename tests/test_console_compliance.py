"""The console's compliance page in headless Chromium over a real server (issue 25).

An auditor signs in, opens Compliance, sees the figures per client and in total (published,
manifest, watermark read back, labels by mode, held and blocked by category), the
audit chain's head and the disclaimer, filters by client and period, and downloads the CSV. A
screenshot is saved under `$CREDENCE_TEST_ARTIFACTS/console` (default: the pytest base temp
folder's `artifacts/console`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from credence.auth import new_key
from credence.runtime import Runtime
from provenance.label import LabelSpec
from provenance.ledger import ModerationDecision
from provenance.ledger.models import Client
from provenance.publish import PublishRequest

from .conftest import LiveServer, settings_for
from .test_fingerprint import scene_frames

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="the dev extra installs playwright")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium chromium-driver)",
                allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two clients with published, held and blocked generations, an auditor and a reviewer key."""
    root = tmp_path_factory.mktemp("console-compliance")
    settings = settings_for(root / "home")
    rt = Runtime(settings)
    rt.init()
    with rt.ledger.session() as s:
        studio, news = Client(name="studio-app"), Client(name="news-desk")
        staff = Client(name="trust-and-safety")
        s.add_all([studio, news, staff])
        s.flush()
        ids = {"studio": studio.id, "news": news.id}
        keys = {"auditor": new_key(s, staff, ["audit"])[1], "reviewer": new_key(s, staff, ["review"])[1]}
    frames = scene_frames(2)  # 3 s of textured scene: enough for the mark to read back at publish
    for n, (client, mode) in enumerate([("studio", "badge"), ("studio", "moving"), ("news", "badge")]):
        request = PublishRequest(prompt="p", model_name="test", client_id=ids[client],
                                 label=LabelSpec(mode=mode, text="AI-generated"))
        gen = rt.publisher.begin(request, stage="publishing")
        rt.publisher.publish(gen.id, iter(frames), 12.0, root / f"clip{n}.mp4", request)
    for client, action, category in (("studio", "review", "violence"), ("news", "block", "public_figures"),
                                     ("news", "review", "misinformation")):
        gen = rt.publisher.begin(PublishRequest(prompt="held", model_name="test", client_id=ids[client]),
                                 status="blocked" if action == "block" else "review", stage="prompt")
        with rt.ledger.session() as s:
            s.add(ModerationDecision(generation_id=gen.id, stage="prompt", prompt_sha256="0" * 64, action=action,
                                     scores={}, policy_version="test", client_id=ids[client],
                                     reasons=[{"category": category, "score": 0.9}]))
    artifacts = Path(os.environ.get("CREDENCE_TEST_ARTIFACTS") or tmp_path_factory.getbasetemp() / "artifacts")
    shots = artifacts / "console"
    shots.mkdir(parents=True, exist_ok=True)
    from credence.app import create_app

    with LiveServer(create_app(settings)) as live, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield {"url": live.url, "keys": keys, "browser": browser, "shots": shots}
        finally:
            browser.close()
    rt.ledger.dispose()


def _sign_in(page: Any, url: str, key: str) -> None:
    page.goto(f"{url}/console")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")


def test_compliance_page(server: dict[str, Any]) -> None:
    context = server["browser"].new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    url = server["url"]
    _sign_in(page, url, server["keys"]["auditor"])
    page.click("nav >> text=Compliance")
    assert page.locator("h1").inner_text().startswith("Compliance evidence")
    figures = [f.inner_text() for f in page.locator(".figure b").all()]
    assert figures == ["3", "3", "3", "3", "2 / 1"]  # published, manifest, mark read back, labelled, held/blocked
    body = page.locator("table.compliance tr:has(td)").all()
    rows = {r.locator("td").first.inner_text().split(" ")[0]: r for r in body}
    assert set(rows) == {"news-desk", "studio-app", "total"}
    cells = [c.inner_text() for c in rows["studio-app"].locator("td").all()]
    assert cells[1:4] == ["2", "2", "2"] and cells[6:8] == ["1", "1"]  # badge 1, moving 1
    assert "public_figures 1" in rows["news-desk"].inner_text()
    assert "not a certification" in page.locator(".statement").inner_text()
    assert "audit chain head" in page.locator("dl").inner_text()
    page.screenshot(path=str(server["shots"] / "10-compliance.png"), full_page=True)

    # A client filter; the CSV download behind the page.
    page.fill("input[name=client]", "studio-app")
    page.click("form.filters button")
    assert page.locator(".figure b").first.inner_text() == "2"
    with page.expect_download() as download:
        page.click("text=CSV")
    text = Path(download.value.path()).read_text()
    assert text.startswith("scope,client_id,client_name") and "studio-app" in text and "news-desk" not in text

    # A bad period is answered on the page, naming the field.
    page.goto(f"{url}/console/compliance?since=tomorrow")
    assert "since 'tomorrow'" in page.locator(".error").inner_text()
    context.close()


def test_compliance_page_needs_the_audit_scope(server: dict[str, Any]) -> None:
    context = server["browser"].new_context()
    page = context.new_page()
    _sign_in(page, server["url"], server["keys"]["reviewer"])
    assert page.locator("nav >> text=Compliance").count() == 0
    response = page.goto(f"{server['url']}/console/compliance")
    assert response.status == 403
    context.close()
