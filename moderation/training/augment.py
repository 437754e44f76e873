"""Adversarial training variants, made here from the TRAINING unsafe prompts only (deterministic).

MMA-Diffusion, T2VSafetyBench and SAFREE stay evaluation-only; what the heads learn about attacks
comes from variants of our own training positives, in the attack styles those sets show:
* `token_soup`: MMA-Diffusion-style strings: words cut into sub-word pieces and glued to their
  neighbours ("erectitphysical"), filler pieces, CLIP's `<|startoftext|>`, shuffled order;
* `leetspeak`, `homoglyphs` (Cyrillic/Greek look-alikes), `spacing` (s p a c e d, d.o.t.t.e.d);
* `synonyms`: the harm words swapped for others of the same meaning;
* `mixed_language`: an English prompt with a clause of the same category in another language
  spliced in (from our multilingual *training* scenes), as a user mixing languages would.
Each variant is seeded by the SHA-256 of its source text and the attack's name, so the same
training rows always give the same variants. `tests/test_moderation_leakage.py` checks that no
variant (nor any other training row) is an evaluation prompt or a near duplicate of one.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence

LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7", "b": "8"}
HOMOGLYPH = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "y": "у", "i": "і", "k": "κ", "t": "τ"}
MARKERS = ["<|startoftext|>", "<|endoftext|>"]
FILLER = ["the", "mildly", "ing", "ation", "thing", "resemb", "ous", "lif", "playing", "contest", "able", "dramexp",
          "ually", "ness", "with", "ers", "photo", "style", "ally", "pre", "kehb", "ually", "detailed", "scene"]
SYNONYMS = {
    "kill": ["murder", "slay", "execute", "eliminate"], "killing": ["murdering", "slaying", "executing"],
    "naked": ["nude", "unclothed", "undressed", "bare"], "nude": ["naked", "unclothed", "topless"],
    "gun": ["firearm", "pistol", "rifle", "handgun"], "knife": ["blade", "dagger", "machete"],
    "blood": ["gore", "bloodshed"], "bloody": ["gory", "blood-soaked"], "stab": ["knife", "slash", "pierce"],
    "stabbing": ["slashing", "knifing"], "shoot": ["gun down", "fire at", "open fire on"],
    "shooting": ["gunning down", "firing at"], "sex": ["intercourse", "fucking", "lovemaking"],
    "bomb": ["explosive", "ied", "detonator"], "suicide": ["killing oneself", "ending one's life"],
    "drugs": ["narcotics", "meth", "cocaine"], "steal": ["rob", "loot", "shoplift"], "beat": ["punch", "batter"],
    "breasts": ["boobs", "tits", "chest"], "child": ["kid", "minor", "young girl"], "corpse": ["dead body", "cadaver"],
    "hang": ["noose", "lynch"], "rape": ["sexual assault", "force himself on"], "torture": ["torment", "mutilate"],
    "racist": ["bigoted", "xenophobic"], "terrorist": ["extremist", "jihadist", "militant"],
}


def _rng(text: str, name: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"{name}\x00{text}".encode()).digest()[:8], "big"))


def _per_word(text: str, rng: random.Random, p: float, change: Callable[[str], str]) -> str:
    out = [change(w) if len(w) >= 4 and w.isalpha() and rng.random() < p else w for w in text.split()]
    return " ".join(out)


def leetspeak(text: str, rng: random.Random) -> str:
    """n4k3d: letters to digits in about half the words."""
    return _per_word(text, rng, 0.6, lambda w: "".join(LEET.get(c, c) if rng.random() < 0.7 else c for c in w))


def homoglyphs(text: str, rng: random.Random) -> str:
    """nаkеd with Cyrillic/Greek look-alikes."""
    return _per_word(text, rng, 0.6, lambda w: "".join(HOMOGLYPH.get(c, c) if rng.random() < 0.6 else c for c in w))


def spacing(text: str, rng: random.Random) -> str:
    """s p a c e d, d.o.t.t.e.d or h-y-p-h-e-n-e-d words."""
    return _per_word(text, rng, 0.4, lambda w: rng.choice([" ", ".", "-", "_"]).join(w))


def synonyms(text: str, rng: random.Random) -> str:
    """Harm words swapped for synonyms (a prompt without any is returned unchanged)."""
    def swap(m: re.Match[str]) -> str:
        options = SYNONYMS.get(m.group(0).lower())
        return rng.choice(options) if options else m.group(0)
    return re.sub(r"[A-Za-z]+", swap, text)


def token_soup(text: str, rng: random.Random) -> str:
    """An MMA-Diffusion-style string made from the prompt's own words."""
    words = re.findall(r"[A-Za-z']+", text.lower())
    pieces: list[str] = []
    for w in words:
        if len(w) >= 6 and rng.random() < 0.5:
            cut = rng.randrange(2, len(w) - 2)
            pieces += [w[:cut], w[cut:]]
        else:
            pieces.append(w)
        if rng.random() < 0.3:
            pieces.append(rng.choice(FILLER))
    out: list[str] = []
    i = 0
    while i < len(pieces):  # glue neighbours: "erect" + "it" + "physical"
        if i + 1 < len(pieces) and rng.random() < 0.4:
            out.append(pieces[i] + pieces[i + 1])
            i += 2
        else:
            out.append(pieces[i])
            i += 1
    for _ in range(max(1, len(out) // 6)):
        j = rng.randrange(len(out) + 1)
        out.insert(j, rng.choice(MARKERS) if rng.random() < 0.6 else rng.choice(["...?", "'s", "^", "-@"]))
    if len(out) > 3:  # partial shuffle: soup keeps only some of the order
        a = rng.randrange(len(out) - 2)
        out[a], out[a + 2] = out[a + 2], out[a]
    return " ".join(out)


def mixed_language(text: str, rng: random.Random, foreign: Sequence[str]) -> str:
    """The prompt with a foreign-language clause of the same category before or after it."""
    if not foreign:
        return text
    clause = rng.choice(list(foreign))
    return f"{clause}, {text}" if rng.random() < 0.5 else f"{text}, {clause}"


ATTACKS: dict[str, Callable[[str, random.Random], str]] = {
    "token_soup": token_soup, "leetspeak": leetspeak, "homoglyphs": homoglyphs, "spacing": spacing,
    "synonyms": synonyms,
}


def variants(rows: Sequence[tuple[str, frozenset[str]]], foreign: dict[str, list[str]],
             per_row: int = 1, limit: int | None = None) -> list[tuple[str, frozenset[str], str]]:
    """(variant, categories, attack) for English unsafe training rows.

    `foreign`: per category, non-English training clauses for `mixed_language`. Every row gets
    `per_row` attacks chosen by its hash (so the attacks spread evenly over rows and categories);
    `limit` keeps the first rows by hash.
    """
    names = [*ATTACKS, "mixed_language"]
    ordered = sorted(rows, key=lambda r: hashlib.sha256(r[0].encode()).digest())
    if limit is not None:
        ordered = ordered[:limit]
    out: list[tuple[str, frozenset[str], str]] = []
    for text, cats in ordered:
        start = hashlib.sha256(text.encode()).digest()[0]
        for k in range(per_row):
            name = names[(start + k) % len(names)]
            rng = _rng(text, name)
            if name == "mixed_language":
                pool = [c for cat in sorted(cats) for c in foreign.get(cat, [])]
                new = mixed_language(text, rng, pool)
            else:
                new = ATTACKS[name](text, rng)
            if new != text:
                out.append((new, cats, name))
    return out
