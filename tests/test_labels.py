"""Visible AI-disclosure labels (issue 25): rendering, the policy's strength order, the manifest,
the ledger row, `verify`'s disclosure, and legibility judged by Tesseract OCR.

The OCR tests need Debian's `tesseract-ocr` (.ci/run installs it); they skip, saying so, where it
is absent. Everything else runs on the real components: Pillow, PyAV, c2pa-python, the ledger.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from credence.labels import check_requested_mode, label_spec, policy_label
from credence.runtime import Runtime
from detector import verify
from moderation import load_policy
from moderation.errors import PolicyError
from moderation.label_policy import LABEL_MODES, LABEL_POSITIONS, MAX_LABEL_CHARS, LabelPolicy, strengthen_mode
from moderation.overlay import apply_overlay
from moderation.policy import parse_policy
from provenance import label as label_mod
from provenance.credentials import read_credentials
from provenance.label import MIN_HEIGHT_PX, LabelSpec, burn_in, render_label
from provenance.ledger import PublishedFile
from provenance.publish import PublishRequest
from provenance.video import iter_frames

from .support import make_clip
from .support.attacks import apply_attack
from .test_fingerprint import scene_frames

CLI = [sys.executable, "-m", "credence"]
TESSERACT = shutil.which("tesseract")
needs_tesseract = pytest.mark.skipif(TESSERACT is None, reason="Debian's tesseract-ocr is not installed "
                                     "(.ci/run installs it: apt-get install -y tesseract-ocr)")


def _frames(width: int, height: int, count: int = 17, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for t in range(count):
        base = 128 + 100 * np.sin((x + 9 * t) / 23 + y / 41)[..., None] + np.array([20, -10, 30], np.float32)
        out.append((base + rng.normal(0, 6, (height, width, 3))).clip(0, 255).astype(np.uint8))
    return out


# -- rendering ---------------------------------------------------------------------------------
def test_modes_and_positions_agree_between_policy_and_renderer() -> None:
    assert label_mod.MODES == LABEL_MODES and label_mod.POSITIONS == LABEL_POSITIONS
    assert label_mod.MAX_TEXT_CHARS == MAX_LABEL_CHARS


@pytest.mark.parametrize("size", [(256, 256), (256, 192), (1280, 720), (1920, 1080), (3840, 2160)])
@pytest.mark.parametrize("mode", ["corner", "badge", "moving"])
def test_label_fits_the_frame_at_every_size_and_frame(size: tuple[int, int], mode: str) -> None:
    width, height = size
    spec = LabelSpec(mode=mode, text="AI-generated · a-very-long-client-name" if mode == "moving" else "AI-generated")
    rendered = render_label(spec, width, height)
    w, h = rendered.size
    assert h >= MIN_HEIGHT_PX and h >= round(0.06 * min(width, height)) - 1
    assert w <= width and h <= height
    for index in range(0, 24 * 30, 7):  # 30 s at 24 fps: the moving badge never leaves the frame
        x, y = rendered.origin(index, 24.0)
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height


def test_moving_badge_drifts_and_static_ones_stay() -> None:
    moving = render_label(LabelSpec(mode="moving"), 256, 256)
    spots = {moving.origin(i, 8.0) for i in range(17)}
    assert len(spots) >= 8  # it moves within a 2 s clip
    assert moving.origin(0, 8.0) == render_label(LabelSpec(mode="badge"), 256, 256).origin(0, 8.0)  # starts in place
    badge = render_label(LabelSpec(mode="badge", position="bottom-left"), 640, 360)
    assert {badge.origin(i, 24.0) for i in range(50)} == {badge.origin(0, 24.0)}
    x, y = badge.origin(0, 24.0)
    assert x < 40 and y > 360 - 40 - badge.size[1]


def test_off_changes_nothing_and_a_label_changes_only_its_patch() -> None:
    frames = _frames(256, 192, 3)
    assert all(a is b for a, b in zip(burn_in(frames, LabelSpec(mode="off"), 8.0), frames, strict=True))
    assert next(iter(burn_in(frames, None, 8.0))) is frames[0]
    spec = LabelSpec(mode="badge")
    out = list(burn_in(frames, spec, 8.0))
    rendered = render_label(spec, 256, 192)
    x, y = rendered.origin(0, 8.0)
    w, h = rendered.size
    diff = np.abs(out[0].astype(int) - frames[0].astype(int)).sum(axis=2)
    assert diff[y:y + h, x:x + w].mean() > 20  # the badge is there
    outside = diff.copy()
    outside[y:y + h, x:x + w] = 0
    assert outside.max() == 0  # and nothing else changed
    assert not np.shares_memory(out[0], frames[0])  # the caller's frames are not written to


def test_client_placeholder() -> None:
    spec = LabelSpec(mode="moving", text="AI-generated · {client}")
    assert spec.with_client("Acme Studio").text == "AI-generated · Acme Studio"
    assert spec.with_client(None).text == "AI-generated"
    assert LabelSpec(mode="corner", text="AI-generated").record() == {"mode": "corner", "text": "AI",
                                                                      "position": "top-right"}


# -- the policy's label section and its strength order -------------------------------------------
def test_packaged_policy_labels_with_a_badge() -> None:
    policy = load_policy()
    assert policy.visible_label == LabelPolicy("badge", "AI-generated", "top-right", 0.06, 0.85)


@pytest.mark.parametrize(("label", "field"), [
    ({"mode": "flashing"}, "label.mode"), ({"text": ""}, "label.text"), ({"text": "x" * 41}, "label.text"),
    ({"text": "AI by {user}"}, "label.text"), ({"position": "centre"}, "label.position"),
    ({"size": 0}, "label.size"), ({"size": 0.9}, "label.size"), ({"opacity": 1.5}, "label.opacity"),
    ({"opacity": True}, "label.opacity"), ({"colour": "red"}, "label.colour"), ("badge", "label"),
])
def test_broken_label_section_names_the_field(label: Any, field: str) -> None:
    import yaml

    from moderation.policy import default_policy_path

    data = yaml.safe_load(default_policy_path().read_bytes())
    data["label"] = label
    with pytest.raises(PolicyError, match=rf"{field.replace('.', '[.]')}: "):
        parse_policy(data, source=str(default_policy_path()))


@pytest.mark.parametrize(("overlay", "field"), [
    ("label: {mode: 'off'}", "label.mode"), ("label: {mode: corner}", "label.mode"),
    ("label: {size: 0.04}", "label.size"), ("label: {opacity: 0.5}", "label.opacity"),
    ("label: {text: 'Made by Acme'}", "label.text"),
])
def test_overlay_may_not_weaken_the_label(overlay: str, field: str) -> None:
    with pytest.raises(PolicyError, match=rf"policy overlay: {field.replace('.', '[.]')}: "):
        apply_overlay(load_policy(), overlay)


def test_overlay_may_strengthen_the_label() -> None:
    merged = apply_overlay(load_policy(), "label: {mode: moving, text: 'AI-generated · {client}', size: 0.08, "
                                          "opacity: 0.95}")
    assert merged.visible_label == LabelPolicy("moving", "AI-generated · {client}", "top-right", 0.08, 0.95)
    spec = label_spec(merged.visible_label, "Acme")
    assert spec.mode == "moving" and spec.text == "AI-generated · Acme"


def test_a_run_may_strengthen_the_label_never_weaken_it() -> None:
    base = load_policy().visible_label
    assert strengthen_mode(base, "moving").mode == "moving"
    assert check_requested_mode(base, None) is base
    for weaker in ("corner", "off"):
        with pytest.raises(PolicyError, match=rf"--label {weaker}: weaker than the policy's label 'badge'"):
            strengthen_mode(base, weaker)
    with pytest.raises(PolicyError, match="--label: must be one of"):
        strengthen_mode(base, "huge")
    assert policy_label(object()) == LabelPolicy()  # a stand-in moderator still labels: fail closed


@pytest.mark.slow
def test_clients_create_refuses_a_weakening_overlay_naming_the_field(runtime: Runtime, cli_env: dict[str, str],
                                                                      tmp_path: Path) -> None:
    weak = tmp_path / "weak.yaml"
    weak.write_text("label: {mode: corner}\n")
    done = subprocess.run([*CLI, "clients", "create", "weak", "--policy", str(weak)], env=cli_env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr
    assert "label.mode" in done.stderr and "weaker than the deployment's 'badge'" in done.stderr
    faint = tmp_path / "faint.yaml"
    faint.write_text("label: {mode: moving, opacity: 0.3}\n")
    done = subprocess.run([*CLI, "clients", "create", "faint", "--policy", str(faint)], env=cli_env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 2 and "label.opacity" in done.stderr
    strong = tmp_path / "strong.yaml"
    strong.write_text("label: {mode: moving, text: 'AI-generated · {client}'}\n")
    done = subprocess.run([*CLI, "clients", "create", "strong", "--policy", str(strong), "--json"], env=cli_env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    # `credence generate --label` may not weaken it either: refused before any model runs.
    done = subprocess.run([*CLI, "generate", "a red circle moving left on a blue background", "--label", "corner",
                           "-o", str(tmp_path / "x.mp4")], env=cli_env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2 and "--label corner: weaker than the policy's label 'badge'" in done.stderr
    assert not (tmp_path / "x.mp4").exists()


# -- publish: the manifest, the ledger row, verify ----------------------------------------------
def _publish(rt: Runtime, frames: list[np.ndarray], fps: float, output: Path, spec: LabelSpec | None) -> Any:
    gen = rt.publisher.begin(PublishRequest(prompt="a labelled clip", model_name="test"), stage="publishing")
    return rt.publisher.publish(gen.id, iter(frames), fps, output,
                                PublishRequest(prompt="a labelled clip", model_name="test", label=spec))


def test_labelled_clip_manifest_ledger_and_verify(runtime: Runtime, tmp_path: Path) -> None:
    frames = scene_frames(1)  # 3 s of a textured scene at 12 fps: room for the mark's windows
    spec = LabelSpec(mode="moving", text="AI-generated · Acme")
    published = _publish(runtime, frames, 12.0, tmp_path / "out.mp4", spec)

    # The manifest: trainedAlgorithmicMedia, the soft binding, the label as an edit and a disclosure.
    creds = read_credentials(published.path, trust_pem=runtime.publisher.trust_pem,
                             our_signers={runtime.publisher.identity.leaf_serial})
    assert creds.state == "Trusted" and creds.ours
    assert creds.disclosure["visible_label"] == {"mode": "moving", "text": "AI-generated · Acme",
                                                 "position": "top-right"}
    assert creds.disclosure["machine_readable"] == ["c2pa", "watermark"]
    import c2pa

    from provenance.credentials import _context

    with _context(runtime.publisher.trust_pem) as ctx, open(published.path, "rb") as stream:
        import json

        store = json.loads(c2pa.Reader("video/mp4", stream, None, ctx).json())
    manifest = store["manifests"][store["active_manifest"]]
    actions = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))["data"]["actions"]
    assert [a["action"] for a in actions] == ["c2pa.created", "c2pa.edited", "c2pa.watermarked"]
    assert actions[0]["digitalSourceType"].endswith("/trainedAlgorithmicMedia")
    assert "moving" in actions[1]["description"] and "AI-generated · Acme" in actions[1]["description"]
    assert any(a["label"] == "c2pa.soft-binding" for a in manifest["assertions"])

    # The ledger row: the label and the manifest's read-back at publish.
    with runtime.ledger.session() as s:
        row = s.query(PublishedFile).filter_by(generation_id=published.generation_id).one()
        assert (row.label_mode, row.label_text, row.manifest_verified) == ("moving", "AI-generated · Acme", True)

    # verify: the labelled clip still traces to the same generation, and says what it discloses.
    verdict = verify(published.path, runtime.verification)
    assert verdict.verdict == "generated" and verdict.generation_id == published.generation_id
    assert verdict.to_dict()["disclosure"] == {
        "label": {"mode": "moving", "text": "AI-generated · Acme", "position": "top-right"},
        "label_source": "manifest", "manifest_found": True, "mark_found": True}

    # A re-encode drops the manifest; the mark and the fingerprint still trace it, and the label
    # comes from the ledger record of the generation they name.
    copy = apply_attack("reencode_crf35", published.path, tmp_path / "copy.mp4")
    verdict = verify(copy, runtime.verification)
    assert verdict.verdict == "generated" and verdict.generation_id == published.generation_id
    disclosure = verdict.to_dict()["disclosure"]
    assert disclosure["label"]["mode"] == "moving" and disclosure["label_source"] == "ledger"
    assert disclosure["manifest_found"] is False and disclosure["mark_found"] is True


def test_unlabelled_publish_records_off_and_a_clip_from_elsewhere_discloses_nothing(runtime: Runtime,
                                                                                     tmp_path: Path) -> None:
    # 2 s: a half-second clip's mark reads back by a margin that depends on the (random) mark id.
    frames = list(iter_frames(make_clip(tmp_path / "src.mp4", frames=48)))
    published = _publish(runtime, frames, 24.0, tmp_path / "off.mp4", LabelSpec(mode="off"))
    with runtime.ledger.session() as s:
        row = s.query(PublishedFile).filter_by(generation_id=published.generation_id).one()
        assert (row.label_mode, row.label_text, row.manifest_verified) == ("off", None, True)
    stranger = verify(make_clip(tmp_path / "other.mp4", seed=5), runtime.verification).to_dict()
    assert stranger["verdict"] == "not_generated"
    assert stranger["disclosure"] == {"label": None, "label_source": None, "manifest_found": False,
                                      "mark_found": False}


# -- legibility: Tesseract reads the label back ---------------------------------------------------
def _ocr(frame: np.ndarray, spec: LabelSpec, index: int, fps: float, tmp: Path) -> str:
    """Tesseract's reading of the label where it is on frame `index`: the box and a quarter of its
    height around it, greyscale, enlarged so that the text is about 48 px high (as a viewer zooms)."""
    height, width = frame.shape[:2]
    rendered = render_label(spec, width, height)
    x, y = rendered.origin(index, fps)
    w, h = rendered.size
    m = max(2, h // 4)
    image = Image.fromarray(frame).crop((max(0, x - m), max(0, y - m), min(width, x + w + m),
                                         min(height, y + h + m))).convert("L")
    factor = max(1, round(48 / (h * 0.62)))
    image = image.resize((image.width * factor, image.height * factor), Image.Resampling.LANCZOS)
    path = tmp / "ocr.png"
    image.save(path)
    done = subprocess.run([TESSERACT, str(path), "-", "--psm", "7"], capture_output=True, text=True, timeout=120,
                          check=True)
    return done.stdout


def _reads(text: str, expected: str) -> bool:
    """Whether OCR output contains `expected`, forgiving the sans-serif I/l confusion and spacing."""
    def norm(s: str) -> str:
        return "".join(s.lower().replace("|", "i").replace("l", "i").replace("1", "i").split())
    return norm(expected) in norm(text)


@pytest.fixture(scope="module")
def generated_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[np.ndarray], float]:
    """Frames of a clip made by the shipped default model (256x256), unlabelled (the label is added below)."""
    from credence.generation.pipeline import load_model
    from generator import GenerationRequest

    model = load_model(None)
    clip = model.generate(GenerationRequest(prompt="a red circle moving left on a blue background", seed=3,
                                            steps=4))
    return [np.asarray(f) for f in clip.frames], float(clip.fps)


@needs_tesseract
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["badge", "moving"])
@pytest.mark.parametrize("size", [(256, 256), (1280, 720)])
def test_ocr_reads_the_label_at_first_middle_and_last_frame(runtime: Runtime, tmp_path: Path, mode: str,
                                                             size: tuple[int, int],
                                                             generated_clip: tuple[list[np.ndarray], float]) -> None:
    frames, fps = generated_clip
    width, height = size
    if (frames[0].shape[1], frames[0].shape[0]) != size:  # 1280x720: the generated frames, upscaled
        frames = [np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BICUBIC)) for f in frames]
    spec = LabelSpec(mode=mode, text="AI-generated" if mode == "badge" else "AI-generated · Acme")
    published = _publish(runtime, frames, fps, tmp_path / f"{mode}.mp4", spec)
    decoded = list(iter_frames(published.path))
    for index in (0, len(decoded) // 2, len(decoded) - 1):
        reading = _ocr(decoded[index], spec, index, fps, tmp_path)
        assert _reads(reading, "AI-generated"), f"{mode} {width}x{height} frame {index}: OCR read {reading!r}"
        if mode == "moving":
            assert _reads(reading, "Acme"), f"moving {width}x{height} frame {index}: OCR read {reading!r}"

