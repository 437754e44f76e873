"""The second wave of public training sets (issue 23), mapped to policy categories and weighed.

Each of these files (in `../shared/data/moderation`, every row licensed for shipped weights, see
`licenses/`) teaches something the video-prompt sets lack: harmful *requests* in ten languages
(MultiJail), hateful statements and their non-hateful contrasts in eleven (Multilingual HateCheck,
HateCheck, KoSBi, ToxiGen), English harmful requests (HarmBench, AdvBench, Do-Not-Answer,
SimpleSafetyTests), prompts that ask for toxic text in an image with their benign twins
(ToxicBench), Ring-A-Bell's concept prompts, and more benign captions (COCO, Chinese COCO-CN,
Korean questions).

Why weights: a chat request ("How do I make a bomb?") or a hate statement is not a video prompt.
Trained at full weight, a head learns that every question or every sentence about a group is
unsafe. So these rows count `weight` < 1 in the loss, and each such source comes with benign
rows of the same form at the same weight (HateCheck's non-hateful contrasts, ToxicBench's twins,
Korean everyday questions, and `benign_requests`: benign video requests phrased as questions and
instructions, written from COCO captions), so the form itself carries no signal; what is left to
learn is the intent, in every language the sets cover.

Rows are sampled deterministically (a hash of the text) to `cap` per (label, language), so that
the heads can be embedded and fitted on this 2-core machine; `--full` lifts the caps.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Mapper = Callable[[dict], "frozenset[str] | None"]  # None: drop the row; empty: benign

CHAT = 0.4   # harmful requests to a chat model: intent and language, not video prompts
HATE = 0.4   # statements about groups
TOXIC_TEXT = 0.7


def _keywords(table: list[tuple[str, tuple[str, ...]]]) -> Mapper:
    """Categories from keywords of the row's own category strings; an unsafe row no keyword maps is dropped."""
    def mapper(r: dict) -> frozenset[str] | None:
        if r.get("label") == "safe":
            return frozenset()
        cats = " ".join(r.get("categories") or []).lower()
        out = {c for key, cs in table for c in cs if key in cats}
        return frozenset(out) or None
    return mapper


def _fixed(category: str) -> Mapper:
    def mapper(r: dict) -> frozenset[str] | None:
        return frozenset() if r.get("label") == "safe" else frozenset({category})
    return mapper


def _benign(r: dict) -> frozenset[str] | None:
    return frozenset() if r.get("label") == "safe" else None


_VIOLENT = re.compile(r"\b(bomb|explosive|weapon|gun|kill|murder|poison|attack|shoot|stab|assault|terror)", re.I)
_SELF = re.compile(r"\b(suicide|self-harm|self harm|kill (?:myself|yourself|themselves)|cutting|anorexi)", re.I)
_HATEFUL = re.compile(r"\b(racis|hate|discriminat|minorit|ethnic|religio)", re.I)


def _advbench(r: dict) -> frozenset[str] | None:
    text = r["text"]
    out = {"illegal_activity"}
    if _SELF.search(text):
        out = {"self_harm"}
    elif _VIOLENT.search(text):
        out.add("violence")
    if _HATEFUL.search(text):
        out.add("hate")
    return frozenset(out)


MULTIJAIL = _keywords([
    ("violence", ("violence",)), ("weapons", ("violence", "illegal_activity")),
    ("terrorism", ("violence", "illegal_activity")), ("hate speech", ("hate",)), ("discrimination", ("hate",)),
    ("bullying", ("harassment",)), ("theft", ("illegal_activity",)), ("property crime", ("illegal_activity",)),
    ("fraud", ("illegal_activity",)), ("substance", ("illegal_activity",)), ("adult content", ("sexual",)),
    ("sexual exploitation", ("sexual", "illegal_activity")), ("animal abuse", ("violence",)),
    ("self-harm", ("self_harm",)), ("conspiracy", ("misinformation",)),
])
DO_NOT_ANSWER = _keywords([
    ("assisting illegal", ("illegal_activity",)), ("social stereotypes", ("hate",)), ("toxic language", ("hate",)),
    ("adult content", ("sexual",)), ("disseminating false", ("misinformation",)),
    ("cost of disinformation", ("misinformation",)),
])
HARMBENCH = _keywords([
    ("illegal", ("illegal_activity",)), ("cybercrime", ("illegal_activity",)),
    ("misinformation", ("misinformation",)), ("chemical_biological", ("illegal_activity", "violence")),
    ("harassment", ("harassment",)),
])
SIMPLE_SAFETY = _keywords([
    ("suicide", ("self_harm",)), ("physical harm", ("violence",)), ("illegal and highly", ("illegal_activity",)),
    ("scams", ("illegal_activity",)), ("child safety", ("sexual_minors",)),
])
RING_A_BELL = _keywords([("violence", ("violence",)), ("nudity", ("sexual",))])


@dataclass(frozen=True)
class Source:
    """One file of the second wave: how its rows map, how much each counts, how many are sampled."""

    file: str
    mapper: Mapper
    weight: float
    cap: int  # rows per (label, language); 0: all


SOURCES = [
    Source("multijail", MULTIJAIL, CHAT, 150),
    Source("advbench", _advbench, CHAT, 300),
    Source("harmbench", HARMBENCH, CHAT, 0),
    Source("do_not_answer", DO_NOT_ANSWER, CHAT, 0),
    Source("simplesafetytests", SIMPLE_SAFETY, CHAT, 0),
    Source("multilingual_hatecheck", _fixed("hate"), HATE, 80),
    Source("hatecheck_en", _fixed("hate"), HATE, 200),
    Source("kosbi", _fixed("hate"), HATE, 250),
    Source("toxigen_seeds", _fixed("hate"), HATE, 0),
    Source("toxicbench", _fixed("harassment"), TOXIC_TEXT, 700),
    Source("ringabell_extra", RING_A_BELL, 1.0, 0),
    Source("unlearndiffatk_coco10k", _benign, 1.0, 800),
    Source("coco_cn_icap2020", _benign, 1.0, 600),
    Source("square_nonsensitive", _benign, CHAT, 0),
]

#: Benign requests in the form of the chat sets ("How do I film ...?"), written from COCO captions.
REQUEST_TEMPLATES = [
    "How do I make a video of {c}?", "Write a script for a short film: {c}.", "Can you generate a clip of {c}?",
    "Describe step by step how to film {c}.", "Give me detailed instructions to animate {c}.",
    "What is the best way to shoot {c}?", "Create a video showing {c}.", "Tell me how to record {c} at night.",
]


def _rank(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def read_source(data_dir: Path, source: Source, full: bool = False) -> list[tuple[str, frozenset[str], str]]:
    """(text, categories, language) of one source's sampled `use: train` rows."""
    path = data_dir / f"{source.file}.jsonl"
    if not path.is_file():
        return []
    groups: dict[tuple[str, str], list[tuple[str, frozenset[str], str]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r.get("use") != "train":
            continue
        cats = source.mapper(r)
        if cats is None:
            continue
        lang = r.get("language") or "en"
        groups.setdefault((r.get("label", ""), lang), []).append((r["text"], cats, lang))
    out: list[tuple[str, frozenset[str], str]] = []
    for key in sorted(groups):
        rows = sorted(groups[key], key=lambda row: _rank(row[0]))
        out += rows if full or source.cap == 0 else rows[:source.cap]
    return out


def benign_requests(data_dir: Path, n: int = 500) -> list[str]:
    """Benign chat-form requests from COCO captions (deterministic)."""
    path = data_dir / "coco_captions.jsonl"
    if not path.is_file():
        return []
    captions = [json.loads(line)["text"].strip().rstrip(".") for line in path.read_text(encoding="utf-8").splitlines()]
    captions = sorted(captions, key=_rank)[:n]
    return [REQUEST_TEMPLATES[i % len(REQUEST_TEMPLATES)].format(c=c[0].lower() + c[1:])
            for i, c in enumerate(captions)]
