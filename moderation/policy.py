"""The moderation policy: categories, thresholds, actions, allow-list, rules and output screening.

Trust-and-safety owns `policies/moderation.yaml`; code only reads it. The file is validated at
load time, and every error names the field (`categories.sexual.block: must be a number in
[0, 1]`), so that a broken edit stops the service at startup rather than letting prompts through.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import PolicyError
from .label_policy import LabelPolicy, parse_label_section
from .lexicon import KINDS, Lexicon, load_lexicon

ACTIONS = ("allow", "review", "block")
#: Categories a deployment may never switch off or soften.
MANDATORY = frozenset({"sexual_minors"})


def default_policy_path() -> Path:
    """The packaged policy (`policies/moderation.yaml`)."""
    return Path(__file__).resolve().parent.parent / "policies" / "moderation.yaml"


@dataclass(frozen=True)
class Category:
    """One policy category with its thresholds and messages."""

    name: str
    description: str
    switchable: bool
    review: float
    block: float
    action: str
    user_message: str
    reviewer_detail: str
    requires: str | None = None  # the classifier's score is capped by this category's score


@dataclass(frozen=True)
class Rule:
    """A regular expression on the normalised prompt that sets a floor on a category's score."""

    category: str
    score: float
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class LexiconPolicy:
    """How this deployment uses the named-entity lexicon (`lexicon:` in the policy).

    A match of an enabled entry raises its category to `score`. When an entry of a `compose_kinds`
    kind (people, by default) is named and one of `compose_categories` already scores at least
    `compose_min` ("Putin" + a violent act), that category is raised to `compose_score`: a
    deepfake of a named person doing harm is more than the sum of its parts.
    """

    lexicon: Lexicon
    score: float
    disabled_entries: frozenset[str]
    disabled_kinds: frozenset[str]
    compose_kinds: frozenset[str]
    compose_categories: tuple[str, ...]
    compose_min: float
    compose_score: float


@dataclass(frozen=True)
class Policy:
    """A validated policy; `sha256` is the hash of the file's bytes, recorded with each decision."""

    version: str
    sha256: str
    categories: dict[str, Category]
    disabled: frozenset[str]
    allow_list: tuple[str, ...]
    rules: tuple[Rule, ...]
    output: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    lexicon: LexiconPolicy | None = None
    #: The visible AI-disclosure label every published clip carries (`label:`; see label_policy).
    visible_label: LabelPolicy = field(default_factory=LabelPolicy)

    @property
    def enabled(self) -> list[Category]:
        """The categories this deployment screens for."""
        return [c for c in self.categories.values() if c.name not in self.disabled]

    @property
    def label(self) -> str:
        """What a generation row and a C2PA manifest carry about this policy."""
        return policy_label(self.version, self.sha256)


def policy_label(version: str, sha256: str) -> str:
    """`version+sha256:<first 16 hex>`: the version names the edit, the hash proves which file decided
    (decision rows keep all 64 digits; the label must fit the ledger's 64-character column)."""
    return f"{version}+sha256:{sha256[:16]}" if sha256 else version


def load_policy(path: Path | str | None = None) -> Policy:
    """Read and validate a policy file (None: the packaged one)."""
    path = Path(path) if path is not None else default_policy_path()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"policy file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_policy(data, sha256=hashlib.sha256(raw).hexdigest(), source=str(path))


def parse_policy(data: Any, *, sha256: str = "", source: str | None = None,
                 base_dir: Path | None = None) -> Policy:
    """Validate a parsed policy document; errors name the field and the file.

    `base_dir` is where a relative `lexicon.path` is found (default: beside `source` when that
    is a file, else beside the packaged policy).
    """
    where = f"policy {source}: " if source else "policy: "

    def fail(field_name: str, problem: str) -> PolicyError:
        return PolicyError(f"{where}{field_name}: {problem}")

    if not isinstance(data, dict):
        raise fail("(top level)", "must be a mapping")
    # `review` (never_approvable, two_reviewers) is read and validated by credence.review.
    unknown = set(data) - {"version", "categories", "disabled", "allow_list", "rules", "output", "review",
                           "lexicon", "label"}
    if unknown:
        raise fail(sorted(unknown)[0], "unknown field")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise fail("version", "must be a non-empty string")
    cats_raw = data.get("categories")
    if not isinstance(cats_raw, dict) or not cats_raw:
        raise fail("categories", "must be a non-empty mapping")
    categories: dict[str, Category] = {}
    for name, spec in cats_raw.items():
        at = f"categories.{name}"
        if not isinstance(spec, dict):
            raise fail(at, "must be a mapping")
        extra = set(spec) - {"description", "switchable", "review", "block", "action", "user_message",
                             "reviewer_detail", "requires"}
        if extra:
            raise fail(f"{at}.{sorted(extra)[0]}", "unknown field")
        for key in ("review", "block"):
            value = spec.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
                raise fail(f"{at}.{key}", f"must be a number in [0, 1], got {value!r}")
        if float(spec["review"]) > float(spec["block"]):
            raise fail(f"{at}.review", "must not exceed block")
        action = spec.get("action", "block")
        if action not in ("review", "block"):
            raise fail(f"{at}.action", f"must be review or block, got {action!r}")
        switchable = spec.get("switchable", True)
        if not isinstance(switchable, bool):
            raise fail(f"{at}.switchable", "must be true or false")
        if name in MANDATORY and (switchable or action != "block"):
            raise fail(at, "sexual content involving minors must have switchable: false and action: block")
        for key in ("user_message", "reviewer_detail"):
            if not isinstance(spec.get(key), str) or not spec[key].strip():
                raise fail(f"{at}.{key}", "must be a non-empty string")
        requires = spec.get("requires")
        if requires is not None and (not isinstance(requires, str) or requires not in cats_raw or requires == name):
            raise fail(f"{at}.requires", f"must name another category, got {requires!r}")
        categories[name] = Category(name, str(spec.get("description", name)), switchable, float(spec["review"]),
                                    float(spec["block"]), action, spec["user_message"].strip(),
                                    spec["reviewer_detail"].strip(), requires)
    missing = MANDATORY - set(categories)
    if missing:
        raise fail("categories", f"must define {sorted(missing)[0]}")

    disabled = data.get("disabled") or []
    if not isinstance(disabled, list):
        raise fail("disabled", "must be a list of category names")
    for i, name in enumerate(disabled):
        if name not in categories:
            raise fail(f"disabled[{i}]", f"unknown category {name!r}")
        if not categories[name].switchable:
            raise fail(f"disabled[{i}]", f"{name} cannot be switched off")

    allow = data.get("allow_list") or []
    if not isinstance(allow, list) or not all(isinstance(a, str) and a.strip() for a in allow):
        raise fail("allow_list", "must be a list of non-empty strings")

    rules: list[Rule] = []
    for i, spec in enumerate(data.get("rules") or []):
        at = f"rules[{i}]"
        if not isinstance(spec, dict):
            raise fail(at, "must be a mapping")
        if spec.get("category") not in categories:
            raise fail(f"{at}.category", f"unknown category {spec.get('category')!r}")
        score = spec.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= float(score) <= 1.0:
            raise fail(f"{at}.score", f"must be a number in [0, 1], got {score!r}")
        try:
            pattern = re.compile(str(spec.get("pattern", "")), re.IGNORECASE)
        except re.error as exc:
            raise fail(f"{at}.pattern", f"invalid regular expression ({exc})") from None
        if not pattern.pattern:
            raise fail(f"{at}.pattern", "must not be empty")
        rules.append(Rule(spec["category"], float(score), pattern))

    output = data.get("output") or {}
    if not isinstance(output, dict):
        raise fail("output", "must be a mapping")
    for section in ("nudenet", "clip"):
        spec = output.get(section)
        if spec is None:
            continue
        if not isinstance(spec, dict):
            raise fail(f"output.{section}", "must be a mapping")
        for key in ("review", "block"):
            value = spec.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
                raise fail(f"output.{section}.{key}", f"must be a number in [0, 1], got {value!r}")
        if float(spec["block"]) < float(spec["review"]):
            raise fail(f"output.{section}.block", f"must be at least review ({spec['review']}), got {spec['block']}")
        need = spec.get("min_frames", 1)  # sampled frames that must reach a score for the clip to get it
        if isinstance(need, bool) or not isinstance(need, int) or need < 1:
            raise fail(f"output.{section}.min_frames", f"must be a positive integer, got {need!r}")
    clip = output.get("clip") or {}
    concepts = clip.get("concepts", {})
    if not isinstance(concepts, dict) or not all(isinstance(v, list) and v for v in concepts.values()):
        raise fail("output.clip.concepts", "must map category names to non-empty lists of phrases")
    for name in concepts:
        if name not in categories:
            raise fail(f"output.clip.concepts.{name}", "unknown category")
    frames = output.get("sample_frames", 8)
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise fail("output.sample_frames", "must be a positive integer")

    if base_dir is None:
        base_dir = Path(source).parent if source and Path(source).is_file() else default_policy_path().parent
    lexicon = _parse_lexicon_section(data.get("lexicon"), categories, base_dir, fail)
    visible_label = parse_label_section(data.get("label"), fail)

    return Policy(version.strip(), sha256, categories, frozenset(disabled),
                  tuple(a.strip().lower() for a in allow), tuple(rules), output, source, lexicon, visible_label)


def _number(spec: dict[str, Any], key: str, default: float, at: str, fail: Any) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise fail(f"{at}.{key}", f"must be a number in [0, 1], got {value!r}")
    return float(value)


def _names(spec: dict[str, Any], key: str, allowed: set[str], at: str, fail: Any) -> frozenset[str]:
    values = spec.get(key) or []
    if not isinstance(values, list):
        raise fail(f"{at}.{key}", "must be a list")
    for i, value in enumerate(values):
        if value not in allowed:
            raise fail(f"{at}.{key}[{i}]", f"unknown name {value!r}")
    return frozenset(values)


def _parse_lexicon_section(spec: Any, categories: dict[str, Category], base_dir: Path,
                           fail: Any) -> LexiconPolicy | None:
    """The `lexicon:` section: which file (pinned by version), which kinds/entries, how it composes."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise fail("lexicon", "must be a mapping")
    extra = set(spec) - {"path", "version", "score", "disabled_entries", "disabled_kinds", "compose"}
    if extra:
        raise fail(f"lexicon.{sorted(extra)[0]}", "unknown field")
    if not isinstance(spec.get("path"), str) or not spec["path"].strip():
        raise fail("lexicon.path", "must name the lexicon file")
    path = Path(spec["path"])
    if not path.is_absolute():
        # Beside the policy first; a deployment that copied the packaged policy to edit it and kept
        # `path: lexicon.yaml` gets the packaged lexicon (the version pin below still holds it to the
        # exact list it names).
        beside, packaged = base_dir / path, default_policy_path().parent / path
        path = beside if beside.exists() or not packaged.exists() else packaged
    lexicon = load_lexicon(path, set(categories))
    if spec.get("version") != lexicon.version:
        raise fail("lexicon.version", f"pins {spec.get('version')!r} but {path} is version {lexicon.version!r} "
                                      "(edit both together)")
    compose = spec.get("compose") or {}
    if not isinstance(compose, dict):
        raise fail("lexicon.compose", "must be a mapping")
    unknown = set(compose) - {"kinds", "categories", "min_score", "score"}
    if unknown:
        raise fail(f"lexicon.compose.{sorted(unknown)[0]}", "unknown field")
    compose_categories = _names(compose, "categories", set(categories), "lexicon.compose", fail)
    return LexiconPolicy(
        lexicon, _number(spec, "score", 0.6, "lexicon", fail),
        _names(spec, "disabled_entries", lexicon.ids(), "lexicon", fail),
        _names(spec, "disabled_kinds", set(KINDS), "lexicon", fail),
        _names(compose, "kinds", set(KINDS), "lexicon.compose", fail) if "kinds" in compose else frozenset({"person"}),
        tuple(sorted(compose_categories)), _number(compose, "min_score", 0.3, "lexicon.compose", fail),
        _number(compose, "score", 0.9, "lexicon.compose", fail))
