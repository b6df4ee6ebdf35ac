"""Where feature penalties get the batch's penultimate features (VICReg, center loss, alignment)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.regularizers.base import LossContext


def feature_slot(model: nn.Module, x: Tensor | None) -> nn.Dropout | None:
    """The dropout slot whose input *is* the model's penultimate features (``features(x)``), i.e.
    the slot ``head`` applies first; None when no slot sits directly before the readout (the
    transformer's slots are inside its blocks; the sae has none).

    Found with one no-grad, eval-mode ``forward_with_features`` of ``x`` and identity-checked
    forward pre-hooks, so it holds for every model following the LabModel convention."""
    slots: list[nn.Dropout] = list(getattr(model, "dropout_slots", []))
    if not slots or x is None or not len(x) or not hasattr(model, "forward_with_features"):
        return None
    seen: dict[nn.Module, Tensor] = {}
    handles = [s.register_forward_pre_hook(lambda mod, inputs: seen.__setitem__(mod, inputs[0])) for s in slots]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            _, features = model.forward_with_features(x[:1])
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    return next((s for s in reversed(slots) if seen.get(s) is features), None)


class PenultimateFeatures:
    """The batch's penultimate features z, for penalties on them (VICReg, center loss, alignment).

    ``ctx.features`` when the trainer provides it; else the input of the dropout slot feeding the
    readout, captured by a forward pre-hook during the training forward (free); else — no such
    slot, or the captured tensor does not match the batch (another technique's extra forward
    overwrote it) — one extra ``model.features(batch.x)`` forward.
    """

    def __init__(self, model: nn.Module, x_train: Tensor | None) -> None:
        self.slot = feature_slot(model, x_train)
        self.captured: Tensor | None = None
        self.handle = self.slot.register_forward_pre_hook(self._capture, prepend=True) if self.slot else None

    def _capture(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        if module.training and torch.is_grad_enabled():
            self.captured = inputs[0]

    def __call__(self, ctx: LossContext) -> Tensor:
        z, self.captured = self.captured, None
        if ctx.features is not None:
            return ctx.features
        if z is not None and z.shape[0] == ctx.batch.x.shape[0]:
            return z
        return ctx.model.features(ctx.batch.x)
