"""Manifold Mixup: mix hidden states (and targets) of example pairs at a random layer of the MLP."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engine.regularizers._common import class_count, refuse_unmixable, soft_targets
from engine.regularizers.base import Batch, Need, Param, Regularizer, Setup, register


@register
class ManifoldMixup(Regularizer):
    """Mix the hidden states at a random layer k, h̃ = λh + (1−λ)h_π, with targets λỹ + (1−λ)ỹ_π, λ ~ Beta(α, α).

    *Manifold Mixup: Better Representations by Interpolating Hidden States* (Verma et al., 2019)
    and its extended variants. Per update: λ ~ Beta(α, α) (one per batch), a batch
    permutation π, and a layer k drawn uniformly from the eligible set: the input of each
    ``Linear`` of the MLP — k = 0 is the flattened input (plain input mixup, only when
    ``include_input``), k = 1..depth the output of hidden block k (after its activation and
    dropout slot), where k = depth mixes right before the readout. The mixing is a forward
    pre-hook on that Linear, active only for the training forwards of the current update (both
    closures under SAM, the same λ, π, k); it is cleared in ``after_step``, so evaluation and
    diagnostics see the unmixed model. Targets are mixed in ``transform_batch`` (order 90, like
    mixup), so label smoothing then acts on the mixed targets. λ comes from a NumPy generator
    seeded from the technique's torch generator, π and k from that generator.

    Verify against the paper: α = 2.0 default and the eligible layer set (the paper mixes at a
    random layer among {input, first hidden layers}; here every hidden layer is eligible).
    MLP classification with fully labelled data only; cannot be combined with mixup, cutmix,
    regmixup (they already mix the batch) or with ELR / PS-KD (per-sample targets are ill-defined
    on mixed examples). A forward of another batch size during the update (an extra forward by
    another technique) is left unmixed.
    """

    name = "manifold_mixup"
    group = "label"
    source = "Manifold Mixup: Better Representations by Interpolating Hidden States (Verma et al., 2019)"
    order = 90
    tasks = ("classification",)
    exclusive = "batch_mixing"
    requires = (Need(why="it mixes the hidden states of an MLP-style hidden layer stack",
                     fix="use mixup for other models", model_traits=frozenset({"hidden_stack"})),)
    marks = frozenset({"mixes_rows", "alters_forward"})
    params = (
        Param("alpha", float, 2.0, 0.05, 32.0, live=True, log=True,
              help="Beta(α, α) concentration; small α ≈ no mixing"),
        Param("include_input", bool, True, help="also allow k = 0: mixing the inputs (plain mixup)"),
    )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        refuse_unmixable(cls.name, tokens=False, few_labels=bool(cfg.data.n_labeled))

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.num_classes = class_count(setup, self.name)
        model = setup.model
        if not all(hasattr(model, a) for a in ("layers", "out")):
            raise ValueError(f"regularizers.manifold_mixup: needs model.name=mlp (got {type(model).__name__})")
        if getattr(setup.dataset, "labeled", None) is not None:
            raise ValueError("regularizers.manifold_mixup: a few-label run would mix in the hidden labels of "
                             "unlabelled examples; set data.n_labeled=0 or disable manifold_mixup")
        self.targets: list[nn.Linear] = [*model.layers, model.out]  # mixing at k = input of targets[k]
        for k, layer in enumerate(self.targets):
            layer.register_forward_pre_hook(self._mixer(k))
        self._rng = np.random.default_rng(self.generator.initial_seed())
        self.last_lam: Tensor | None = None
        self.last_perm: Tensor | None = None
        self.last_layer: int | None = None  # None: no mixing pending

    def _mixer(self, k: int) -> Any:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
            if self.last_layer != k or not module.training or self.last_perm is None or self.last_lam is None:
                return None
            h = inputs[0]
            if h.shape[0] != self.last_perm.shape[0]:
                return None
            lam = self.last_lam.to(h.dtype)
            return (lam * h + (1 - lam) * h[self.last_perm], *inputs[1:])
        return hook

    def transform_batch(self, batch: Batch, step: int) -> Batch:
        n = batch.x.shape[0]
        alpha = self["alpha"]
        lam = torch.as_tensor(float(self._rng.beta(alpha, alpha)), device=batch.x.device)
        perm = torch.randperm(n, generator=self.generator).to(batch.x.device)
        low = 0 if self["include_input"] else 1
        layer = int(torch.randint(low, len(self.targets), (1,), generator=self.generator))
        self.last_lam, self.last_perm, self.last_layer = lam, perm, layer
        target = soft_targets(batch, self.num_classes)
        lam_y = lam.to(target.dtype)
        return replace(batch, y_soft=lam_y * target + (1 - lam_y) * target[perm])

    def after_step(self, step: int) -> None:
        self.last_layer = None
