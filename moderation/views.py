"""What of a prompt the classifier scores: its clauses, and the words hidden in token soup.

Clauses. A sentence embedding is an average: a long benign preamble ("a sunny village, children
playing, birds singing, a baker opening his shop...") dilutes one harmful clause ("then a man
stabs his neighbour") below any threshold. So a prompt of several sentences or "then"-steps is cut
into clauses, each scored on its own, and a category's score is the highest over the clauses and
the whole. Short pieces are merged into their neighbour (a clause of two words says little). The older
encoders (one call per view) score at most `MAX_CLAUSES`, the rest merged into the last, so the cost
stays about that of the prompt itself; the ONNX path, whose cost is its tokens in batched runs, scores
up to `moderator.ONNX_MAX_CLAUSES` (a harmful last sentence of a long prompt keeps its own score).

Token soup. Adversarial prompts (MMA-Diffusion and the like) are optimised strings of word pieces:
"stmartwomen felpuerintentionally ... tit cleavage <|startoftext|>". An encoder reads them as noise.
`soup_view` spots them (a high share of non-words, or CLIP's `<|startoftext|>` markers), then
splits every non-word into the longest English words it contains ("erectitphysical" → "erect it
physical") and keeps the real words: the classifier then scores what the soup was built to say.
It needs no vocabulary of harmful words, only one of English (`words.txt`).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

#: Most clauses scored per prompt (the rest stay merged into the last one).
MAX_CLAUSES = 6
#: A piece shorter than this (characters; a CJK character counts three, it says as much as a short word)
#: is merged into its neighbour.
MIN_CLAUSE_CHARS = 16
#: Share of non-words (of the Latin tokens of 3+ letters) from which a prompt is token soup.
SOUP_SHARE = 0.2
#: ... while at least this share of its tokens are English words (soup is made of English pieces;
#: French or Turkish prose is not soup, though few of its words are English).
SOUP_ENGLISH = 0.5
#: ... and at least this many non-words.
SOUP_MIN_NONWORDS = 2
MARKERS = re.compile(r"<[|l]?(?:startoftext|endoftext)[|l]?>")  # normalisation reads | as l

# Steps in time that start a new action, per language (in normalised form: accents off Latin letters).
_THEN_LATIN = ["and then", "then", "after that", "afterwards", "suddenly", "but then",
               "luego", "despues", "ensuite", "puis", "soudain", "dann", "danach", "plotzlich", "depois", "entao",
               "poi", "dopo", "sonra", "ardindan", "затем", "потом", "после этого", "внезапно"]
_THEN_OTHER = ["然后", "接着", "之后", "随后", "突然", "その後", "それから", "그 다음", "그리고 나서", "फिर", "उसके बाद",
               "ثم", "بعد ذلك"]
# Sentence ends (Latin and CJK), and the steps above (Latin and Cyrillic ones as whole words).
_SPLIT = re.compile(
    r"(?<=[.!?;。！？；\n])\s*"
    r"|[,，、]?\s*(?<!\w)(?:" + "|".join(map(re.escape, _THEN_LATIN)) + r")(?!\w)[,]?\s*"
    r"|[,，、]?\s*(?:" + "|".join(map(re.escape, _THEN_OTHER)) + r")\s*"
)


@functools.lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """The English word list shipped beside this module."""
    path = Path(__file__).resolve().parent / "words.txt"
    return frozenset(line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                     if line and not line.startswith("#"))


def _weight(piece: str) -> int:
    return sum(3 if ord(ch) >= 0x2E80 else 1 for ch in piece)


def clause_groups(text: str, max_clauses: int = MAX_CLAUSES) -> list[list[str]]:
    """The clauses of a normalised prompt as groups of its pieces (each piece is tokenised once and
    shared by every view that holds it); a one-clause prompt gives `[[text]]`. Past `max_clauses`, the
    rest is one group (the ONNX path asks for more: its cost is its tokens, not its clauses)."""
    pieces = [p.strip(" ,;") for p in _SPLIT.split(text) if p and p.strip(" ,;.")]
    merged: list[list[str]] = []
    for piece in pieces:
        if merged and (_weight(piece) < MIN_CLAUSE_CHARS or _weight(" ".join(merged[-1])) < MIN_CLAUSE_CHARS):
            merged[-1].append(piece)
        else:
            merged.append([piece])
    if len(merged) > max_clauses:
        merged = [*merged[:max_clauses - 1], [p for group in merged[max_clauses - 1:] for p in group]]
    return merged or [[text]]


def clauses(text: str) -> list[str]:
    """The clauses of a normalised prompt; a one-clause prompt gives `[text]`."""
    return [" ".join(group) for group in clause_groups(text)]


#: Digit runs and common first names: what a prompt may change without changing what it asks for.
_DIGITS = re.compile(r"\d+")


@functools.lru_cache(maxsize=1)
def _names() -> re.Pattern[str]:
    path = Path(__file__).resolve().parent / "data" / "first_names.txt"
    names = [n.strip() for n in path.read_text(encoding="utf-8").splitlines() if n.strip() and not n.startswith("#")]
    return re.compile(r"(?<!\w)(?:" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")(?!\w)")


def canonical(text: str) -> str:
    """What the classifier reads of a normalised view: digit runs as `0`, common first names as `alex`.

    "kill test 0" and "kill test 2", "Maria hits Tom" and "Anna hits Ben" ask for the same thing
    and must get the same decision; read raw, the encoder and the character n-grams see different
    tokens and a score near a threshold lands on either side. Rules and the named-entity
    lexicon still read the prompt itself (a public figure's name is not a first name here).
    """
    return _names().sub("alex", _DIGITS.sub("0", text))


def _known(token: str, words: frozenset[str]) -> bool:
    if token in words:
        return True
    for suffix in ("s", "es", "ed", "ing", "ly", "er", "d"):
        if token.endswith(suffix) and token[: -len(suffix)] in words and len(token) - len(suffix) >= 3:
            return True
    return False


def _segment(token: str, words: frozenset[str], min_len: int = 4) -> list[str]:
    """The English words inside a non-word, longest first, in their order ("felpuerintentionally"
    → "intentionally"; "erectitphysical" → "erect", "physical")."""
    best = ""
    for i in range(len(token) - min_len + 1):
        for j in range(len(token), i + max(min_len, len(best) + 1) - 1, -1):
            if token[i:j] in words:
                best, at = token[i:j], i
                break
    if not best:
        return []
    return [*_segment(token[:at], words, min_len), best, *_segment(token[at + len(best):], words, min_len)]


def soup_view(text: str) -> str | None:
    """The real words of a token-soup prompt (with those found inside non-words), or None for prose."""
    words = english_words()
    has_markers = bool(MARKERS.search(text))
    plain = MARKERS.sub(" ", text)
    tokens = re.findall(r"[a-z]+", plain)
    long_tokens = [t for t in tokens if len(t) >= 3]
    if not long_tokens:
        return None
    nonwords = [t for t in long_tokens if not _known(t, words)]
    share = len(nonwords) / len(long_tokens)
    english = sum(1 for t in tokens if _known(t, words)) / len(tokens)
    if not has_markers and (share < SOUP_SHARE or len(nonwords) < SOUP_MIN_NONWORDS or english < SOUP_ENGLISH):
        return None
    kept: list[str] = []
    for token in tokens:
        if _known(token, words) or len(token) < 5:  # short non-words are often the slang the soup carries
            kept.append(token)
        else:
            kept.extend(_segment(token, words))
    view = " ".join(kept)
    return view if view and view != text else None


def prompt_views(text: str) -> list[str]:
    """Every text the classifier scores for one normalised prompt: the clauses, then the soup view.

    The first element is always a clause (the whole prompt when it has one clause).
    """
    views = clauses(text)
    soup = soup_view(text)
    if soup is not None:
        views.append(soup)
    return views
