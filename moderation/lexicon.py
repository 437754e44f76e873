"""The named-entity lexicon: real people, protected characters, brands and sensitive events.

A sentence encoder does not know that "Tiger Woods" is a real person or that a "Samsung" logo is
a trademark: in the public T2V safety sets those prompts are the ones a classifier misses most.
A curated list does know, so `policies/lexicon.yaml` names them, with aliases and transliterations
in other scripts, and the policy decides per deployment which kinds or entries count
(`lexicon.disabled_kinds`, `lexicon.disabled_entries`). Names are matched on the normalised
prompt, so `T4yl0r Sw1ft` and a Cyrillic-spoofed `Рutin` are still found.

How a name is matched depends on its script: a Latin name as whole words (`trump` must not match
`trumpet`); a Cyrillic name at a word start (Russian inflects: `Путина`, `Путину`); Chinese,
Japanese, Korean, Arabic and Devanagari names as substrings (no spaces between words, or
clitics and particles glued on).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import PolicyError
from .normalize import normalize

KINDS = ("person", "character", "brand", "event")


@dataclass(frozen=True)
class Entry:
    """One named entity and the category a match of it scores."""

    id: str
    kind: str
    category: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class Match:
    """An entry found in a prompt, with the text that matched."""

    entry: Entry
    span: str


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else ""


def name_pattern(name: str) -> str:
    """The regular expression for one normalised name (see the module docstring for the three forms)."""
    scripts = {_script(ch) for ch in name if ch.isalpha()}
    body = r"\s+".join(re.escape(part) for part in name.split())
    if scripts <= {"LATIN"}:
        return rf"(?<![\w]){body}(?![\w])"
    if scripts <= {"CYRILLIC", "LATIN"}:
        return rf"(?<![\w]){body}"
    return body


@dataclass(frozen=True)
class Lexicon:
    """A loaded lexicon: its version, the hash of its bytes, its entries and one compiled matcher."""

    version: str
    sha256: str
    entries: tuple[Entry, ...]
    path: str | None = None

    def __post_init__(self) -> None:
        # One small pattern per name, tried only when the name occurs as a substring at all (a C-speed
        # test): a single alternation of a thousand names cost 200 ms a prompt in Python's engine.
        names = [(name, entry) for entry in self.entries for name in entry.names]
        names.sort(key=lambda item: len(item[0]), reverse=True)  # "donald trump" before "trump"
        object.__setattr__(self, "_names", [(name, entry, re.compile(name_pattern(name))) for name, entry in names])

    def find(self, normalised: str, *, disabled_entries: frozenset[str] = frozenset(),
             disabled_kinds: frozenset[str] = frozenset()) -> list[Match]:
        """Every enabled entry named in an already-normalised prompt (once per entry, its longest name)."""
        found: dict[str, Match] = {}
        for name, entry, pattern in self._names:  # type: ignore[attr-defined]
            if name not in normalised or entry.id in found:
                continue
            if entry.id in disabled_entries or entry.kind in disabled_kinds:
                continue
            m = pattern.search(normalised)
            if m:
                found[entry.id] = Match(entry, m.group(0))
        return list(found.values())

    def ids(self) -> set[str]:
        """The ids of all entries."""
        return {e.id for e in self.entries}


def load_lexicon(path: Path, categories: set[str] | None = None) -> Lexicon:
    """Read and validate a lexicon file; errors name the field (`entries[3].kind`) and the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"lexicon file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PolicyError(f"lexicon file {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_lexicon(data, sha256=hashlib.sha256(raw).hexdigest(), source=str(path), categories=categories)


def parse_lexicon(data: Any, *, sha256: str = "", source: str | None = None,
                  categories: set[str] | None = None) -> Lexicon:
    """Validate a parsed lexicon document."""
    where = f"lexicon {source}: " if source else "lexicon: "

    def fail(field_name: str, problem: str) -> PolicyError:
        return PolicyError(f"{where}{field_name}: {problem}")

    if not isinstance(data, dict):
        raise fail("(top level)", "must be a mapping")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise fail("version", "must be a non-empty string")
    kinds = data.get("kinds") or {}
    if not isinstance(kinds, dict) or set(kinds) - set(KINDS):
        raise fail("kinds", f"must map some of {', '.join(KINDS)} to categories")
    for kind, category in kinds.items():
        if categories is not None and category not in categories:
            raise fail(f"kinds.{kind}", f"unknown category {category!r}")
    raw_entries = data.get("entries")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise fail("entries", "must be a non-empty list")
    entries: list[Entry] = []
    seen: set[str] = set()
    for i, spec in enumerate(raw_entries):
        at = f"entries[{i}]"
        if not isinstance(spec, dict):
            raise fail(at, "must be a mapping")
        extra = set(spec) - {"id", "kind", "category", "names"}
        if extra:
            raise fail(f"{at}.{sorted(extra)[0]}", "unknown field")
        entry_id = spec.get("id")
        if not isinstance(entry_id, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", entry_id):
            raise fail(f"{at}.id", f"must be lower-case letters, digits and dashes, got {entry_id!r}")
        if entry_id in seen:
            raise fail(f"{at}.id", f"duplicate id {entry_id!r}")
        seen.add(entry_id)
        kind = spec.get("kind")
        if kind not in KINDS:
            raise fail(f"{at}.kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
        category = spec.get("category", kinds.get(kind))
        if not isinstance(category, str) or (categories is not None and category not in categories):
            raise fail(f"{at}.category", f"unknown category {category!r}")
        names = spec.get("names")
        if not isinstance(names, list) or not names:
            raise fail(f"{at}.names", "must be a non-empty list")
        normalised: list[str] = []
        for j, name in enumerate(names):
            text = normalize(str(name)) if isinstance(name, str | int) else ""
            if not text or (len(text) < 2 and text.isascii()):  # one CJK character or symbol (卐) is a name
                raise fail(f"{at}.names[{j}]", f"must be a name of at least 2 characters, got {name!r}")
            normalised.append(text)
        entries.append(Entry(entry_id, kind, category, tuple(dict.fromkeys(normalised))))
    return Lexicon(version.strip(), sha256, tuple(entries), source)
