"""Tiny transformer for modular arithmetic, after Nanda, Chan, Lieberum, Smith, Steinhardt 2023,
*Progress measures for grokking via mechanistic interpretability* (``phenomena.md`` §4).

tokens (a, b, "=") → W_E[token] + W_pos → ``depth`` × [x += Attn(x); x += MLP(x)] → read the
residual stream at the last position [= features] → W_U [= head]. No LayerNorm unless
``model.layernorm`` (then pre-LN blocks plus a final LN applied in ``head``), no biases in
attention or embeddings, ReLU MLP with biases (``model.bias``), causal attention as in Nanda's code.
With one layer the causal mask changes nothing at the read-out position (it already sees every
token); it matters only for the first layer of a 2-layer model.

Attention is written by hand with explicit per-head matrices W_Q, W_K, W_V (heads × d_head ×
d_model) and W_O (d_model × heads·d_head), not with ``nn.MultiheadAttention``: the interpretability
diagnostics (embedding Fourier spectrum, QK/OV circuits, restricted/excluded loss) read these
matrices directly, Nanda's initialisation is per matrix, and at this size the explicit version is
a dozen readable lines.

Init (Nanda's code): W_E, W_pos, W_Q, W_K, W_V, W_O, W_in, W_out ~ N(0, 1)/√d_model;
W_U ~ N(0, 1)/√d_vocab (d_vocab = p + 1 tokens); MLP biases 0. ``model.init_std`` replaces every
matrix's std; ``model.init_scale`` then multiplies all parameters.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from engine.models import LabModel, ModelFamily, register_model
from engine.models.mlp import scale_parameters_
from engine.plugin import Param

if TYPE_CHECKING:
    from engine.config import ModelConfig
    from engine.data import Dataset

MAX_LAYERS = 2


def _randn(*shape: int, std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * std)


class Attention(nn.Module):
    """Multi-head self-attention with explicit per-head matrices (no biases, as in Nanda et al.)."""

    def __init__(self, d_model: int, heads: int, n_ctx: int, causal: bool = True) -> None:
        super().__init__()
        self.heads, self.d_head, self.causal = heads, d_model // heads, causal
        std = 1 / math.sqrt(d_model)
        self.W_Q = _randn(heads, self.d_head, d_model, std=std)
        self.W_K = _randn(heads, self.d_head, d_model, std=std)
        self.W_V = _randn(heads, self.d_head, d_model, std=std)
        self.W_O = _randn(d_model, heads * self.d_head, std=std)
        self.register_buffer("mask", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)), persistent=False)

    def pattern(self, x: Tensor, last_only: bool = False) -> Tensor:
        """Attention probabilities, (batch, heads, query, key); one query (the last) if ``last_only``."""
        q = torch.einsum("hed,btd->bhte", self.W_Q, x[:, -1:] if last_only else x)
        k = torch.einsum("hed,btd->bhte", self.W_K, x)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        if self.causal:
            n_q, n_k = scores.shape[-2:]
            scores = scores.masked_fill(~self.mask[n_k - n_q : n_k, :n_k], float("-inf"))
        return scores.softmax(dim=-1)

    def forward(self, x: Tensor, last_only: bool = False) -> Tensor:
        v = torch.einsum("hed,btd->bhte", self.W_V, x)
        z = self.pattern(x, last_only) @ v  # (batch, heads, query, d_head)
        z = z.transpose(1, 2).flatten(2)  # (batch, query, heads·d_head), head-major as in Nanda's code
        return z @ self.W_O.T


class Block(nn.Module):
    """Residual block: x + Dropout(Attn(LN(x))), then x + Dropout(MLP(LN(x))); LN = identity by default."""

    def __init__(self, d_model: int, heads: int, d_mlp: int, n_ctx: int, bias: bool, layernorm: bool,
                 dropout: float) -> None:
        super().__init__()
        self.ln1: nn.Module = nn.LayerNorm(d_model) if layernorm else nn.Identity()
        self.attn = Attention(d_model, heads, n_ctx)
        self.drop_attn = nn.Dropout(dropout)
        self.ln2: nn.Module = nn.LayerNorm(d_model) if layernorm else nn.Identity()
        self.mlp_in = nn.Linear(d_model, d_mlp, bias=bias)
        self.mlp_act = nn.ReLU()
        self.mlp_out = nn.Linear(d_mlp, d_model, bias=bias)
        self.drop_mlp = nn.Dropout(dropout)
        with torch.no_grad():
            for lin in (self.mlp_in, self.mlp_out):
                nn.init.normal_(lin.weight, 0.0, 1 / math.sqrt(d_model))
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor, last_only: bool = False) -> Tensor:
        """Update the residual stream; with ``last_only`` only its last position (all keys still attended)."""
        attn = self.drop_attn(self.attn(self.ln1(x), last_only))
        x = (x[:, -1:] if last_only else x) + attn
        return x + self.drop_mlp(self.mlp_out(self.mlp_act(self.mlp_in(self.ln2(x)))))


class Transformer(LabModel):
    """Nanda-style modular-arithmetic transformer; logits read at the last position."""

    def __init__(self, vocab: int, n_ctx: int, out_dim: int, d_model: int, depth: int, heads: int, d_mlp: int,
                 bias: bool = True, layernorm: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if not 1 <= depth <= MAX_LAYERS:
            raise ValueError(f"model.depth: the transformer supports 1–{MAX_LAYERS} layers (got {depth})")
        if d_model % heads:
            raise ValueError(f"model.heads: d_model (model.width={d_model}) must be divisible by model.heads "
                             f"(got {heads})")
        self.W_E = _randn(vocab, d_model, std=1 / math.sqrt(d_model))
        self.W_pos = _randn(n_ctx, d_model, std=1 / math.sqrt(d_model))
        self.blocks = nn.ModuleList(Block(d_model, heads, d_mlp, n_ctx, bias, layernorm, dropout)
                                    for _ in range(depth))
        for block in self.blocks:
            self.dropout_slots += [block.drop_attn, block.drop_mlp]
        self.ln_final: nn.Module = nn.LayerNorm(d_model) if layernorm else nn.Identity()
        self.W_U = _randn(d_model, out_dim, std=1 / math.sqrt(vocab))

    def residual(self, x: Tensor, last_only: bool = False) -> Tensor:
        """The residual stream after the last block, (batch, pos, d_model), from token ids (float or long).

        With ``last_only`` the last block is evaluated at the read-out position only (1 instead of
        3 positions through its attention queries and MLP): nothing else reaches the logits, so
        ``features`` uses it — ≈ 2× less compute per training step for the 1-layer model.
        """
        tokens = x.long()
        h = self.W_E[tokens] + self.W_pos[: tokens.shape[1]]
        for i, block in enumerate(self.blocks):
            h = block(h, last_only=last_only and i == len(self.blocks) - 1)
        return h

    def features(self, x: Tensor) -> Tensor:
        return self.residual(x, last_only=True)[:, -1]

    def head(self, h: Tensor) -> Tensor:
        return self.ln_final(h) @ self.W_U


def _vocab(dataset: Dataset) -> int:
    """``meta["vocab"]`` (p + 1: the residues and "="), else the largest token id seen + 1."""
    if "vocab" in dataset.meta:
        return int(dataset.meta["vocab"])
    return int(max(dataset.x_train.max().item(), dataset.x_test.max().item() if dataset.x_test.numel() else 0)) + 1


@register_model
class TransformerModel(ModelFamily):
    """Tiny transformer over token sequences, read out at the last position."""

    name = "transformer"
    tasks = frozenset({"classification", "sequence"})
    inputs = frozenset({"tokens"})
    traits = frozenset({"dropout_slots", "relu_units", "attention", "own_activation"})
    params = (
        Param("heads", int, 4, 1, 64, help="transformer attention heads"),
        Param("d_mlp", int, 512, 1, 65536, help="transformer MLP width"),
        Param("layernorm", bool, False, help="pre-LayerNorm in each block (off: identity, as in Nanda et al.)"),
    )

    @classmethod
    def build(cls, cfg: ModelConfig, dataset: Dataset) -> LabModel:
        return build_transformer(cfg, dataset)


def build_transformer(cfg: ModelConfig, dataset: Dataset) -> LabModel:
    """``model.width`` is d_model (d_head = width / heads); ``model.activation`` is ignored (ReLU, as in the paper)."""
    if len(dataset.input_shape) != 1:
        raise ValueError(f"model.name: the transformer reads token sequences (N, context), got inputs "
                         f"{dataset.input_shape}")
    model = Transformer(_vocab(dataset), dataset.input_shape[0], dataset.output_dim, cfg.width, cfg.depth,
                        cfg.heads, cfg.d_mlp, cfg.bias, cfg.layernorm, cfg.dropout)
    if cfg.init_std is not None:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    nn.init.normal_(p, 0.0, cfg.init_std)
    scale_parameters_(model, cfg.init_scale)
    return model.float()
