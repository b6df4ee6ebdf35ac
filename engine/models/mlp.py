"""Fully connected models: the plain ``mlp`` and Gromov's two-layer ``quadratic_mlp``.

Also home of the small helpers the other model files share (activation modules, the
``init_std`` / ``init_scale`` initialisation rules), so every model reads the config the same way.

Feature/dropout convention (all models): ``features(x)`` returns the penultimate representation
*before* its dropout slot, and ``head(h)`` applies that slot and then the readout. So
``forward = head ∘ features`` still trains with dropout, while features taken in eval mode (and
the embeddings/collapse metrics computed from them) are clean and deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from engine.models import LabModel, ModelFamily, register_model

if TYPE_CHECKING:
    from engine.config import ModelConfig
    from engine.data import Dataset


class Square(nn.Module):
    """Elementwise x² (the quadratic activation of Gromov 2023)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * x


class CReLU(nn.Module):
    """Concatenated ReLU [relu(x), relu(−x)] along the last dim: twice as many outputs as inputs.

    *Understanding and Improving Convolutional Neural Networks via Concatenated Rectified Linear
    Units* (Shang et al., ICML 2016); a plasticity tool
    (Abbas et al. 2023, *Loss of Plasticity in Continual Deep Reinforcement Learning*):
    one of each pair is always active, so no unit can die. Only the MLP widens its next layer
    for it (``model.activation=crelu`` is refused for the other models).
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([torch.relu(x), torch.relu(-x)], dim=-1)


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "quadratic": Square, "identity": nn.Identity,
    "crelu": CReLU,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation *module* (modules, not functions, so diagnostics can hook each layer)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"model.activation: unknown activation {name!r}; choose one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def flat_dim(dataset: Dataset) -> int:
    """Number of input features once an example is flattened."""
    return math.prod(dataset.input_shape)


def normal_init_(modules: Iterable[nn.Module], std: float) -> None:
    """N(0, std²) weights and zero biases for every Linear/Conv layer in ``modules``."""
    with torch.no_grad():
        for m in modules:
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def scale_parameters_(model: nn.Module, scale: float) -> None:
    """Multiply every trainable parameter (biases included) by ``scale``.

    This is ``model.init_scale``. Following Omnigrok (Liu, Michaud, Tegmark 2023), whose code
    multiplies *all* parameters of the freshly initialised network by α; a large α (≈ 8) puts the
    network in the regime where digits/MNIST MLPs grok. Fixed buffers (random features) are not
    touched.
    """
    if scale == 1.0:
        return
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)


def apply_init(model: nn.Module, cfg: ModelConfig) -> None:
    """The shared rule: PyTorch default unless ``init_std`` is set, then × ``init_scale``."""
    if cfg.init_std is not None:
        normal_init_(model.modules(), cfg.init_std)
    scale_parameters_(model, cfg.init_scale)


class MLP(LabModel):
    """``depth`` hidden layers of ``width`` units: Linear → activation → Dropout, then a linear head.

    ``features`` is the last hidden activation before its dropout slot (see module docstring).
    With ``crelu`` each activation outputs 2·width values, so every later layer reads 2·width.
    """

    def __init__(self, in_dim: int, out_dim: int, width: int, depth: int, activation: str = "relu",
                 bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        fan = 2 if activation == "crelu" else 1
        fan_ins = [in_dim] + [fan * width] * (depth - 1)
        self.layers = nn.ModuleList(nn.Linear(a, width, bias=bias) for a in fan_ins)
        self.acts = nn.ModuleList(make_activation(activation) for _ in range(depth))
        self.drops = nn.ModuleList(nn.Dropout(dropout) for _ in range(depth))
        self.dropout_slots.extend(self.drops)
        self.out = nn.Linear(fan * width, out_dim, bias=bias)

    def features(self, x: Tensor) -> Tensor:
        h = x.flatten(1)
        last = len(self.layers) - 1
        for i, (layer, act, drop) in enumerate(zip(self.layers, self.acts, self.drops, strict=True)):
            h = act(layer(h))
            if i < last:  # the last slot is applied in head(), so features stay clean
                h = drop(h)
        return h

    def head(self, h: Tensor) -> Tensor:
        return self.out(self.drops[-1](h))


@register_model
class MLPModel(ModelFamily):
    """Fully connected network: depth × (Linear → activation → Dropout), then a linear head."""

    name = "mlp"
    traits = frozenset({"dropout_slots", "relu_units", "hidden_stack", "first_layer_linear", "crelu", "linear_readout",
                        "readout_dropout"})

    @classmethod
    def build(cls, cfg: ModelConfig, dataset: Dataset) -> LabModel:
        return build_mlp(cfg, dataset)


def build_mlp(cfg: ModelConfig, dataset: Dataset) -> LabModel:
    model = MLP(flat_dim(dataset), dataset.output_dim, cfg.width, cfg.depth, cfg.activation, cfg.bias, cfg.dropout)
    apply_init(model, cfg)
    return model.float()


def gromov_std(width: int) -> float:
    """σ = 0.5 / (2·width)^(1/3): 0.05 at width 500.

    The initial weight std of the quadratic grokking model as calibrated in
    ``phenomena.md`` §3 after Gromov 2023, *Grokking modular arithmetic* (whose network is
    Linear → x² → Linear on concatenated one-hots). With it (p = 97, train fraction 0.3, MSE,
    AdamW lr 1e-2) the model memorises by step 50 and groks at ≈ 250 steps without weight decay.
    """
    return 0.5 / (2 * width) ** (1 / 3)


class QuadraticMLP(LabModel):
    """Linear(in, width) → x² → Dropout → Linear(width, out): Gromov's solvable grokking model."""

    def __init__(self, in_dim: int, out_dim: int, width: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_dim, width, bias=bias)
        self.act = Square()
        self.drop = nn.Dropout(dropout)
        self.dropout_slots.append(self.drop)
        self.out = nn.Linear(width, out_dim, bias=bias)

    def features(self, x: Tensor) -> Tensor:
        return self.act(self.hidden(x.flatten(1)))

    def head(self, h: Tensor) -> Tensor:
        return self.out(self.drop(h))


@register_model
class QuadraticMLPModel(ModelFamily):
    """Linear → x² → Linear: Gromov's solvable grokking model."""

    name = "quadratic_mlp"
    traits = frozenset({"dropout_slots", "first_layer_linear", "own_activation", "linear_readout", "readout_dropout"})

    @classmethod
    def build(cls, cfg: ModelConfig, dataset: Dataset) -> LabModel:
        return build_quadratic_mlp(cfg, dataset)


def build_quadratic_mlp(cfg: ModelConfig, dataset: Dataset) -> LabModel:
    """``model.activation`` and ``model.depth`` are ignored: the architecture is fixed by the paper."""
    model = QuadraticMLP(flat_dim(dataset), dataset.output_dim, cfg.width, cfg.bias, cfg.dropout)
    std = cfg.init_std if cfg.init_std is not None else gromov_std(cfg.width)
    normal_init_(model.modules(), std)
    scale_parameters_(model, cfg.init_scale)
    return model.float()
