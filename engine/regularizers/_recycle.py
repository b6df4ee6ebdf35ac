"""Shared machinery of the unit-recycling techniques (ReDo, continual backprop) on the plain MLP.

Recycling hidden unit i of layer l means: redraw its incoming weights (row i of layer l), set or
redraw its bias, zero its outgoing weights (column i of the next layer, so the network function
does not jump for a silent unit), and zero the optimizer's per-coordinate state (Adam / Lion
moments, SGD momentum) of exactly those coordinates, so stale moments of the old unit do not
steer the fresh one. Every other coordinate, and scalar state such as Adam's ``step``, is kept.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from engine.regularizers.base import Need

# Unit recycling walks a stack of hidden Linear layers and the layer reading each one.
RECYCLABLE = Need(why="it recycles the hidden units of an MLP-style hidden layer stack",
                  fix="use a model with one (e.g. model.name=mlp)", model_traits=frozenset({"hidden_stack"}))


def check_recyclable(cfg: Any, who: str) -> None:
    """Config check: one output per hidden unit (not crelu's two); the model itself is ``RECYCLABLE``."""
    if cfg.model.activation == "crelu":
        raise ValueError(f"regularizers.{who}: model.activation=crelu gives each unit two outputs, which unit "
                         "recycling does not handle; pick another activation")


def mlp_layers(model: nn.Module, who: str) -> tuple[list[nn.Linear], list[nn.Linear], list[nn.Module]]:
    """(hidden layers, the layer reading each one, activation modules) of the lab's MLP."""
    if not all(hasattr(model, a) for a in ("layers", "acts", "out")):
        raise ValueError(f"regularizers.{who}: needs model.name=mlp (got {type(model).__name__})")
    layers = list(model.layers)
    return layers, [*layers[1:], model.out], list(model.acts)


@torch.no_grad()
def reset_optimizer_state(optimizer: torch.optim.Optimizer | None, param: Tensor, units: Tensor, dim: int) -> None:
    """Zero the per-coordinate optimizer state of ``param`` at ``units`` along ``dim``.

    Any state tensor of the parameter's shape is per-coordinate (``exp_avg``, ``exp_avg_sq``,
    ``momentum_buffer``, …); anything else (``step``) is left alone.
    """
    if optimizer is None:
        return
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, Tensor) and value.shape == param.shape:
            value.index_fill_(dim, units.to(value.device), 0.0)


@torch.no_grad()
def recycle_units(layer: nn.Linear, nxt: nn.Linear, units: Tensor, generator: torch.Generator,
                  optimizer: torch.optim.Optimizer | None, bias: str = "redraw") -> None:
    """Recycle ``units`` of ``layer``: incoming weights from PyTorch's default ``nn.Linear`` init
    U(−1/√fan_in, 1/√fan_in) drawn from ``generator``; bias redrawn the same way (``redraw``) or 0
    (``zero``); outgoing weights 0; their optimizer state zeroed."""
    if not len(units):
        return
    bound = 1.0 / math.sqrt(layer.in_features)
    w = torch.rand(len(units), layer.in_features, generator=generator) * 2 * bound - bound
    layer.weight[units] = w.to(layer.weight)
    reset_optimizer_state(optimizer, layer.weight, units, 0)
    if layer.bias is not None:
        if bias == "redraw":
            layer.bias[units] = (torch.rand(len(units), generator=generator) * 2 * bound - bound).to(layer.bias)
        else:
            layer.bias[units] = 0.0
        reset_optimizer_state(optimizer, layer.bias, units, 0)
    nxt.weight[:, units] = 0.0
    reset_optimizer_state(optimizer, nxt.weight, units, 1)


def capture_hook(store: list[Tensor | None], i: int) -> Any:
    """A forward hook that keeps the latest *training* activation of hidden layer i (detached)."""
    def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
        if module.training:
            store[i] = output.detach().flatten(1)
    return hook
