"""The policy's `label:` section: which visible AI-disclosure label every published clip carries.

Trust-and-safety owns it with the rest of the policy; rendering lives in `provenance.label`, which
this package may not import, so the section is parsed into a plain `LabelPolicy` here and
`credence` turns it into the renderer's `LabelSpec`. The strength order (off < corner < badge <
moving) is the one a client overlay and `credence generate --label` are held to: they may turn a
label on or make it stronger, never weaker (a smaller or fainter label, or its words removed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .errors import PolicyError

#: Modes, weakest first (the same order as `provenance.label.MODES`; a test keeps them equal).
LABEL_MODES = ("off", "corner", "badge", "moving")
LABEL_POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
#: Longest label text (it must fit a 256 px wide frame); `provenance.label.MAX_TEXT_CHARS`.
MAX_LABEL_CHARS = 40
_FIELDS = ("mode", "text", "position", "size", "opacity")

Fail = Callable[[str, str], PolicyError]


@dataclass(frozen=True)
class LabelPolicy:
    """The validated `label:` section; the defaults are the packaged policy's (see README)."""

    mode: str = "badge"
    text: str = "AI-generated"
    position: str = "top-right"
    size: float = 0.06
    opacity: float = 0.85

    @property
    def strength(self) -> int:
        """The mode's rank: 0 (off) to 3 (moving)."""
        return LABEL_MODES.index(self.mode)


def parse_label_section(spec: Any, fail: Fail, at: str = "label") -> LabelPolicy:
    """The `label:` section (absent: the defaults, a badge). Errors name the field."""
    if spec is None:
        return LabelPolicy()
    if not isinstance(spec, dict):
        raise fail(at, "must be a mapping")
    unknown = set(spec) - set(_FIELDS)
    if unknown:
        raise fail(f"{at}.{sorted(unknown)[0]}", f"unknown field (a label has {', '.join(_FIELDS)})")
    base = LabelPolicy()
    mode = spec.get("mode", base.mode)
    if mode not in LABEL_MODES:
        raise fail(f"{at}.mode", f"must be one of {', '.join(LABEL_MODES)}, got {mode!r}")
    text = spec.get("text", base.text)
    if not isinstance(text, str) or not text.strip():
        raise fail(f"{at}.text", "must be a non-empty string")
    if len(text) > MAX_LABEL_CHARS:
        raise fail(f"{at}.text", f"must be at most {MAX_LABEL_CHARS} characters (it must fit a 256 px frame), "
                                 f"got {len(text)}")
    if "{" in text.replace("{client}", "") or "}" in text.replace("{client}", ""):
        raise fail(f"{at}.text", "the only placeholder is {client} (the client's display name)")
    position = spec.get("position", base.position)
    if position not in LABEL_POSITIONS:
        raise fail(f"{at}.position", f"must be one of {', '.join(LABEL_POSITIONS)}, got {position!r}")
    size = _share(spec, "size", base.size, 0.5, at, fail)
    opacity = _share(spec, "opacity", base.opacity, 1.0, at, fail)
    return LabelPolicy(mode, " ".join(text.split()), position, size, opacity)


def _share(spec: dict[str, Any], key: str, default: float, top: float, at: str, fail: Fail) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < float(value) <= top:
        raise fail(f"{at}.{key}", f"must be a number in (0, {top:g}], got {value!r}")
    return float(value)


def stronger_label(base: LabelPolicy, overlay: Any, fail: Fail, at: str = "label") -> LabelPolicy:
    """`base` with an overlay's `label:` applied; a weaker mode, a smaller size, a lower opacity or
    text that drops the deployment's words is refused with the field named."""
    if not isinstance(overlay, dict):
        raise fail(at, "must be a mapping")
    merged = parse_label_section({**_as_dict(base), **overlay}, fail, at)
    if merged.strength < base.strength:
        raise fail(f"{at}.mode", f"{merged.mode!r} is weaker than the deployment's {base.mode!r} "
                                 f"(order: {' < '.join(LABEL_MODES)}; an overlay may only strengthen the label)")
    if merged.size < base.size:
        raise fail(f"{at}.size", f"{merged.size} is smaller than the deployment's {base.size}")
    if merged.opacity < base.opacity:
        raise fail(f"{at}.opacity", f"{merged.opacity} is fainter than the deployment's {base.opacity}")
    if base.mode != "off" and base.text.lower() not in merged.text.lower():
        raise fail(f"{at}.text", f"{merged.text!r} removes the deployment's text {base.text!r} "
                                 "(an overlay may add words, e.g. '{client}', not remove them)")
    return merged


def strengthen_mode(base: LabelPolicy, mode: str) -> LabelPolicy:
    """`base` with its mode raised to `mode` (`credence generate --label`); a weaker mode is refused."""
    if mode not in LABEL_MODES:
        raise PolicyError(f"--label: must be one of {', '.join(LABEL_MODES)}, got {mode!r}")
    if LABEL_MODES.index(mode) < base.strength:
        raise PolicyError(f"--label {mode}: weaker than the policy's label {base.mode!r} "
                          f"(order: {' < '.join(LABEL_MODES)}); a run may only strengthen it")
    return replace(base, mode=mode)


def _as_dict(label: LabelPolicy) -> dict[str, Any]:
    return {key: getattr(label, key) for key in _FIELDS}
