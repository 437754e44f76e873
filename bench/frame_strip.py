"""The README's picture of the default model: a few prompts x frames 0, 4, 8, 12, 16.

    python -m bench.frame_strip                    # writes docs/img/default_model_strip.png
    python -m bench.frame_strip --model FOLDER --out strip.png

Each row is one prompt generated exactly as `credence generate` makes it (the model's default steps,
size and guidance, delivered 256x256 frames, shown at 128x128), labelled with the prompt, the seed
and what the analytic checker of `generator.training.scorer` reads in the clip, so the picture cannot
quietly disagree with the numbers of `python -m bench.generator`. Rows include the README's main
job and combinations held out of training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from generator import GenerationRequest, TextToVideoModel
from generator.training.data import HELD_OUT, Combo
from generator.training.scorer import read_clip

OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "default_model_strip.png"
FRAMES = (0, 4, 8, 12, 16)
TILE = 128
LABEL_H = 18
PAD = 4
ROWS: tuple[tuple[Combo, int, str], ...] = (
    (Combo("red", "circle", "left", "blue"), 1, "README"),
    (Combo("yellow", "square", "up", "black"), 0, "seen"),
    (Combo("green", "triangle", "right", "white"), 0, "seen"),
    (HELD_OUT[0], 0, "held-out"),
    (HELD_OUT[len(HELD_OUT) // 2], 0, "held-out"),
)


def render(model: TextToVideoModel, rows: tuple[tuple[Combo, int, str], ...] = ROWS) -> Image.Image:
    """One labelled row of frames per prompt."""
    width = PAD + len(FRAMES) * (TILE + PAD)
    height = len(rows) * (LABEL_H + TILE + PAD) + PAD
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = PAD
    for combo, seed, kind in rows:
        clip = model.generate(GenerationRequest(combo.caption, seed=seed))
        reading = read_clip(clip.frames)
        ok = reading.matches(combo)
        seen = f"{reading.colour} {reading.shape} {reading.direction} on {reading.background}"
        mark = "all 4 right" if ok["all"] else "wrong: " + ", ".join(k for k, v in ok.items() if k != "all" and not v)
        draw.text((PAD, y + 3), f"[{kind}] \"{combo.caption}\" seed {seed} -> reads: {seen} ({mark})",
                  fill=(0, 0, 0))
        y += LABEL_H
        for i, f in enumerate(FRAMES):
            frame = Image.fromarray(np.ascontiguousarray(clip.frames[min(f, len(clip.frames) - 1)]))
            sheet.paste(frame.resize((TILE, TILE), Image.Resampling.BILINEAR), (PAD + i * (TILE + PAD), y))
        y += TILE + PAD
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = TextToVideoModel.load(args.model, device="cpu")
    sheet = render(model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height}, frames {FRAMES}, model {model.weights_hash[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
