"""A client's policy overlay: the deployment's policy made stricter, never looser.

An overlay is a partial policy YAML:

```yaml
categories:
  violence: {review: 0.3, block: 0.6}     # lower thresholds only
  political: {action: block}              # stronger actions only (review -> block)
disabled: []                              # a subset of the deployment's disabled categories
rules:                                    # extra rules, added to the deployment's
  - {category: violence, score: 0.9, pattern: "\\bknife fight\\b"}
output: {nudenet: {review: 0.3}}          # lower output thresholds only
label: {mode: moving, text: "AI-generated · {client}"}   # a stronger visible label only
```

Anything that would loosen the deployment's policy (a higher threshold, a weaker action, a
category switched off that the deployment screens, an allow-list phrase added) is refused with
the field named; so is a weaker visible label (a lower mode in off < corner < badge < moving, a
smaller size, a lower opacity, or text that drops the deployment's words). The merged policy is
validated like any policy; its decisions record the deployment's hash and the overlay's.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import yaml

from .errors import PolicyError
from .label_policy import stronger_label
from .policy import Policy, default_policy_path, parse_policy

#: How strong each action is; an overlay may only move up.
_STRENGTH = {"review": 1, "block": 2}


def overlay_hash(text: str) -> str:
    """SHA-256 of the overlay's bytes, recorded with each decision made under it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _base_document(base: Policy) -> dict[str, Any]:
    path = Path(base.path) if base.path else default_policy_path()
    try:
        data = yaml.safe_load(path.read_bytes())
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"policy file {path}: cannot be re-read to apply an overlay ({exc})") from None
    return data


def apply_overlay(base: Policy, text: str) -> Policy:
    """The deployment's `base` policy made stricter by the overlay `text`; `PolicyError` names a looser field."""
    def fail(field_name: str, problem: str) -> PolicyError:
        return PolicyError(f"policy overlay: {field_name}: {problem}")

    try:
        overlay = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise fail("(file)", f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(overlay, dict):
        raise fail("(top level)", "must be a mapping")
    unknown = set(overlay) - {"categories", "disabled", "allow_list", "rules", "output", "version", "label"}
    if unknown:
        raise fail(sorted(unknown)[0], "unknown field (an overlay may set categories, disabled, rules, output, "
                                       "label)")
    merged = copy.deepcopy(_base_document(base))

    for name, spec in (overlay.get("categories") or {}).items():
        at = f"categories.{name}"
        if name not in base.categories:
            raise fail(at, "unknown category (an overlay tightens the deployment's categories; it adds none)")
        if not isinstance(spec, dict):
            raise fail(at, "must be a mapping")
        current = base.categories[name]
        for key in spec:
            if key not in ("review", "block", "action"):
                raise fail(f"{at}.{key}", "an overlay may set review, block and action only")
        for key in ("review", "block"):
            if key in spec:
                value = spec[key]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise fail(f"{at}.{key}", f"must be a number in [0, 1], got {value!r}")
                if float(value) > getattr(current, key):
                    raise fail(f"{at}.{key}", f"{value} is looser than the deployment's {getattr(current, key)} "
                                              "(an overlay may only lower thresholds)")
        if "action" in spec:
            action = spec["action"]
            if _STRENGTH.get(action, 0) < _STRENGTH.get(current.action, 0):
                raise fail(f"{at}.action", f"{action!r} is weaker than the deployment's {current.action!r}")
        merged["categories"][name].update(spec)

    if "disabled" in overlay:
        disabled = overlay.get("disabled") or []
        if not isinstance(disabled, list):
            raise fail("disabled", "must be a list of category names")
        extra = sorted(set(disabled) - base.disabled)
        if extra:
            raise fail("disabled", f"{extra[0]} is screened by the deployment; an overlay may not switch it off")
        merged["disabled"] = disabled

    if "allow_list" in overlay:
        allow = overlay.get("allow_list") or []
        if not isinstance(allow, list):
            raise fail("allow_list", "must be a list")
        added = sorted(set(allow) - set(base.allow_list))
        if added:
            raise fail("allow_list", f"{added[0]!r} is not in the deployment's allow-list; an overlay may only "
                                     "remove phrases from it")
        merged["allow_list"] = allow

    rules = overlay.get("rules") or []
    if not isinstance(rules, list):
        raise fail("rules", "must be a list")
    merged["rules"] = list(merged.get("rules") or []) + rules

    for section, spec in (overlay.get("output") or {}).items():
        base_spec = (base.output or {}).get(section)
        if not isinstance(spec, dict) or base_spec is None:
            raise fail(f"output.{section}", "unknown output screen, or not a mapping")
        for key, value in spec.items():
            if key not in ("review", "block"):
                raise fail(f"output.{section}.{key}", "an overlay may set review and block only")
            if isinstance(value, bool) or not isinstance(value, int | float) or float(value) > float(base_spec[key]):
                raise fail(f"output.{section}.{key}", f"{value!r} is looser than the deployment's {base_spec[key]}")
        merged.setdefault("output", {}).setdefault(section, {}).update(spec)

    if "label" in overlay:
        label = stronger_label(base.visible_label, overlay["label"], fail)
        merged["label"] = {key: getattr(label, key) for key in ("mode", "text", "position", "size", "opacity")}

    digest = overlay_hash(text)
    merged["version"] = f"{base.version}+overlay.{digest[:8]}"
    try:
        policy = parse_policy(merged, sha256=base.sha256, source="with overlay",
                              base_dir=Path(base.path).parent if base.path and Path(base.path).is_file() else None)
    except PolicyError as exc:
        raise PolicyError(str(exc).replace("policy with overlay: ", "policy overlay: ")) from None
    return policy
