"""Prompt normalisation: undo the cheap obfuscations before rules and the classifier look.

NFKC folds full-width and stylised letters; a confusables table maps Cyrillic and Greek
look-alikes to Latin inside words that also hold Latin letters (`nаkеd` with a Cyrillic а is an
attack; `насилие` is Russian and stays Russian); zero-width and control characters go; accents
come off Latin letters only (the vowel signs of Hindi and the voicing marks of Japanese are
letters, not decoration); leetspeak inside words is undone (`n4k3d` → `naked`, but `4k video` and
`1080p` stay); letters spaced out or dotted one by one (`n u d e`, `n.u.d.e`) are joined.
"""

from __future__ import annotations

import re
import unicodedata

#: Look-alike characters from other scripts (the subset of Unicode confusables that matters here).
CONFUSABLES = str.maketrans({
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
    "к": "k", "м": "m", "т": "t", "н": "h", "в": "b", "г": "r", "ԁ": "d", "ɡ": "g", "ո": "n", "ս": "u",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "Х": "X", "У": "Y", "І": "I", "Ѕ": "S",
    "α": "a", "ε": "e", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "ν": "v", "κ": "k", "ι": "i", "χ": "x",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    "ı": "i", "ł": "l", "ø": "o", "đ": "d", "ß": "ss", "æ": "ae", "œ": "oe",
})
#: Latin letters NFKD does not decompose; folded everywhere (they are Latin whatever the word).
_LATIN_EXTRA = str.maketrans({"ı": "i", "ł": "l", "ø": "o", "đ": "d", "ß": "ss", "æ": "ae", "œ": "oe"})
LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a",
                      "$": "s", "!": "i", "|": "l", "+": "t"})
ZERO_WIDTH = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\u00ad]")
# A token that mixes letters with leet digits/symbols: letters on both sides, or a letter on one.
LEET_TOKEN = re.compile(r"(?<![\w@$!|+])(?=[\w@$!|+]*[a-z])(?=[\w@$!|+]*[0134578@$!|+])[\w@$!|+]{3,}(?![\w@$!|+])")
# Runs of 3+ single letters separated by spaces, dots, dashes, underscores or asterisks.
SPACED = re.compile(r"\b(?:[a-z][ .\-_*]{1,3}){2,}[a-z]\b")
SPACE = re.compile(r"\s+")
#: A run of letters from the scripts the confusables table maps from (Latin, Cyrillic, Greek).
WORD = re.compile(r"[A-Za-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff\u0500-\u052f\u0250-\u02af]+")


def _is_latin(ch: str) -> bool:
    return ch.isascii() or "LATIN" in unicodedata.name(ch, "")


def _fold_confusables(match: re.Match[str]) -> str:
    """Map look-alikes to Latin only in a word that mixes scripts (an attack, not a language)."""
    word = match.group(0)
    latin = sum(1 for ch in word if _is_latin(ch))
    if latin == 0 or latin == len(word):
        return word
    return word.translate(CONFUSABLES)


def _strip_latin_accents(text: str) -> str:
    """`é` → `e`, but combining marks on other scripts' letters (Devanagari, kana) stay."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch) and out and _is_latin(out[-1]):
            continue
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


def strip_controls(text: str) -> str:
    """Remove zero-width and control characters (keep ordinary whitespace as spaces)."""
    text = ZERO_WIDTH.sub("", text)
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text
                   if unicodedata.category(ch) not in ("Cf", "Co", "Cs", "Cn"))


def _unleet(match: re.Match[str]) -> str:
    token = match.group(0)
    # Numbers with units (4k, 1080p, 3d, 35mm, 24fps) and plain numbers are not leetspeak.
    if re.fullmatch(r"\d+(k|p|d|mm|fps|s|th|st|nd|rd|x|yo|am|pm)?", token):
        return token
    letters = sum(ch.isalpha() for ch in token)
    return token.translate(LEET) if letters >= 2 else token


def _join_spaced(match: re.Match[str]) -> str:
    """`n u d e` → `nude`; a leading article stays a word (`a n u d e` → `a nude`)."""
    run = match.group(0)
    letters = re.split(r"[ .\-_*]+", run)
    if letters[0] in ("a", "i") and run[1] == " " and len(letters) >= 4:
        return letters[0] + " " + "".join(letters[1:])
    return "".join(letters)


def normalize(text: str) -> str:
    """The canonical form rules and the classifier see: lower-case, de-obfuscated, single-spaced."""
    text = strip_controls(text)
    text = WORD.sub(_fold_confusables, unicodedata.normalize("NFKC", text))
    # Accents off (é → e) after NFKC, so that stylised letters do not hide words.
    text = _strip_latin_accents(text)
    text = text.translate(_LATIN_EXTRA).lower()
    text = LEET_TOKEN.sub(_unleet, text)
    text = SPACED.sub(_join_spaced, text)
    return SPACE.sub(" ", text).strip()
