"""The training examples this project writes itself, read from `moderation/data/examples.jsonl`.

The public sets teach the classifier what harmful prompts look like, but almost all of their
benign side is COCO captions, so a classifier trained on them alone learns prompt *style*: any
artsy, dark or edgy prompt looks unsafe. Our examples add (a) video-prompt positives per category
(subjects, acts, settings, camera language, harm arriving late in the clip, noise tokens spliced
in), (b) hard negatives: benign prompts with trigger words, art-style prompts, benign gibberish,
everyday scenes, and (c) the same scenes in twelve languages (`ml_positive`, `ml_benign`; *not*
the multilingual evaluation set, which was written separately and is never trained on).

One JSON object a line: `text`, `categories` (policy categories; empty for benign), `kind` and
`base`: the text before style suffixes, settings, temporal framing, spliced noise and framing
words were added. About a fifth is held out for the benchmark and never trained on, chosen by a
stable hash of the base (`split_of`), so every variant of one base lands in the same split and
the eval split holds no near-duplicate of a training row.

`examples_sources.json` holds the decorations and the multilingual scenes the rows were written
from; tests use them to undo the decorations and to check that the evaluation set is separate.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
EXAMPLES_FILE = DATA / "examples.jsonl"
SOURCES_FILE = DATA / "examples_sources.json"

_SOURCES = json.loads(SOURCES_FILE.read_text(encoding="utf-8"))
#: Style suffixes of the English templates ("", ", cinematic lighting", ...).
STYLES: list[str] = _SOURCES["STYLES"]
#: Places of the templated positives and of the everyday scenes.
PLACES: list[str] = _SOURCES["PLACES"]
EVERYDAY_PLACES: list[str] = _SOURCES["EVERYDAY_PLACES"]
#: Camera words, settings, benign openings ("{start}, then {harm}") and noise tokens of the video prompts.
CAMERA: list[str] = _SOURCES["CAMERA"]
SETTINGS: list[str] = _SOURCES["SETTINGS"]
BENIGN_STARTS: list[str] = _SOURCES["BENIGN_STARTS"]
NOISE: list[str] = _SOURCES["NOISE"]
#: Per language: how a scene is framed ("video of ...", "... cinematic"): the second variant of each scene.
FRAMES: dict[str, str] = _SOURCES["FRAMES"]
#: Per language: (category, text) for the unsafe scenes, then the benign scenes (categories are the policy's).
UNSAFE: dict[str, list[tuple[str, str]]] = {
    lang: [(c, t) for c, t in rows] for lang, rows in _SOURCES["UNSAFE"].items()}
UNSAFE_MORE: dict[str, list[tuple[str, str]]] = {
    lang: [(c, t) for c, t in rows] for lang, rows in _SOURCES["UNSAFE_MORE"].items()}
BENIGN: dict[str, list[str]] = _SOURCES["BENIGN"]
BENIGN_MORE: dict[str, list[str]] = _SOURCES["BENIGN_MORE"]

#: Words that frame a prompt rather than say what is in it: "realistic video of X", "breaking
#: news footage of X" and "X, close up" are all X. Dropping them from the key can only merge
#: bases (coarser groups), never split one.
FRAMING_WORDS = frozenset({
    "a", "an", "the", "of", "video", "clip", "footage", "realistic", "real", "close", "up", "close-up", "explicit",
    "official", "style", "gory", "showing", "leaked", "breaking", "news", "report", "live", "tv", "broadcast",
})


def base_key(base: str) -> str:
    """The words of a base, lower-cased, sorted, without framing words: the identity the split uses.

    Word order, articles and framing do not make another prompt ("a woman stabbing a man",
    "video of woman stabbing man"), so bases that differ only in them share a key and a split.
    """
    words = {w for w in re.findall(r"[\w'-]+", base.lower()) if w not in FRAMING_WORDS}
    return " ".join(sorted(words))


def split_of(base: str) -> str:
    """`train` or `eval`: a stable 80/20 split by the hash of the base's key."""
    return "eval" if hashlib.sha256(base_key(base).encode()).digest()[0] % 5 == 0 else "train"


@dataclass(frozen=True)
class Example:
    """One labelled prompt; `categories` is empty for benign ones.

    `base` is what the text was made from before its suffixes and variants; the split follows it.
    """

    text: str
    categories: tuple[str, ...]
    kind: str  # positive | hard_negative | art | gibberish | everyday | ml_positive | ml_benign
    base: str

    @property
    def split(self) -> str:
        """`train` or `eval`, by the base (never by the text: its variants must stay together)."""
        return split_of(self.base)


@cache
def _read(path: Path) -> tuple[Example, ...]:
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return tuple(Example(r["text"], tuple(r["categories"]), r["kind"], r["base"]) for r in rows)


def examples(path: Path = EXAMPLES_FILE) -> list[Example]:
    """All our examples (both splits), in the file's order, each with the base its split follows."""
    return list(_read(path))
