"""One-off (issue 20): write the example corpora, until now code, as data, and check the rows are equal.

    python moderation/training/convert_examples.py

Writes `moderation/data/examples.jsonl` (every row of the old `moderation.examples.examples()`, in
order: text, categories, kind, base) and `moderation/data/examples_sources.json` (the decorations
and multilingual scenes tests read), then reads them back through `moderation.training.examples`
and checks rows, splits, vocabularies and scenes equal what the code produced. Deleted with the
old modules in the next commit; kept in history to show where the data came from.
"""
import importlib, json, sys, types
from pathlib import Path
ROOT = Path(__file__).resolve().parents[2]
pkg = types.ModuleType("oldmod"); pkg.__path__ = [str(ROOT / "moderation")]; sys.modules["oldmod"] = pkg
ex = importlib.import_module("oldmod.examples")
vid = importlib.import_module("oldmod.video_examples")
ml = importlib.import_module("oldmod.multilingual")
rows = ex.examples()
data = ROOT / "moderation" / "data"
with (data / "examples.jsonl").open("w", encoding="utf-8", newline="\n") as f:
    for e in rows:
        f.write(json.dumps({"text": e.text, "categories": list(e.categories), "kind": e.kind, "base": e.base},
                           ensure_ascii=False) + "\n")
sources = {
    "STYLES": ex.STYLES, "PLACES": ex.PLACES, "EVERYDAY_PLACES": ex.EVERYDAY_PLACES,
    "CAMERA": vid.CAMERA, "SETTINGS": vid.SETTINGS, "BENIGN_STARTS": vid.BENIGN_STARTS, "NOISE": vid.NOISE,
    "FRAMES": ml.FRAMES, "UNSAFE": ml.UNSAFE, "UNSAFE_MORE": ml.UNSAFE_MORE, "BENIGN": ml.BENIGN,
    "BENIGN_MORE": ml.BENIGN_MORE,
}
(data / "examples_sources.json").write_text(json.dumps(sources, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
print(len(rows), "rows;", sum(1 for e in rows if e.split == "eval"), "eval")
old = importlib.import_module("oldmod.examples")
vid = importlib.import_module("oldmod.video_examples")
ml = importlib.import_module("oldmod.multilingual")
new_pkg = types.ModuleType("newmod"); new_pkg.__path__ = [str(ROOT / "moderation" / "training")]; sys.modules["newmod"] = new_pkg
new = importlib.import_module("newmod.examples")
a, b = old.examples(), new.examples()
assert len(a) == len(b), (len(a), len(b))
for x, y in zip(a, b, strict=True):
    assert (x.text, x.categories, x.kind, x.base, x.split) == (y.text, y.categories, y.kind, y.base, y.split), (x, y)
    assert type(x.categories) is type(y.categories) is tuple
for name in ("STYLES", "PLACES", "EVERYDAY_PLACES", "FRAMING_WORDS"):
    assert getattr(old, name) == getattr(new, name), name
for name in ("CAMERA", "SETTINGS", "BENIGN_STARTS", "NOISE"):
    assert getattr(vid, name) == getattr(new, name), name
for name in ("FRAMES", "UNSAFE", "UNSAFE_MORE", "BENIGN", "BENIGN_MORE"):
    assert getattr(ml, name) == getattr(new, name), name
assert all(old.base_key(e.base) == new.base_key(e.base) and old.split_of(e.base) == new.split_of(e.base) for e in a)
print(f"equal: {len(b)} rows, {sum(e.split == 'eval' for e in b)} eval; vocabularies and scenes equal")
