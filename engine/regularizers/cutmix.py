"""CutMix: paste a random box from another example; mix the labels by the pasted area."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from engine.regularizers._common import class_count, refuse_unmixable, soft_targets
from engine.regularizers.base import Batch, Need, Param, Regularizer, Setup, register


def cutmix_box(lam: float, height: int, width: int, cy: int, cx: int) -> tuple[int, int, int, int]:
    """The reference box: side √(1−λ) of the image around (cy, cx), clipped → (y0, y1, x0, x1)."""
    cut = math.sqrt(1.0 - lam)
    h, w = int(height * cut), int(width * cut)
    return (min(max(cy - h // 2, 0), height), min(max(cy + h // 2, 0), height),
            min(max(cx - w // 2, 0), width), min(max(cx + w // 2, 0), width))


@register
class CutMix(Regularizer):
    """Replace a random box of each image by the same box of another image; labels mix by area.

    *CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features* (Yun
    et al., ICCV 2019), following the authors' reference code:

        λ ~ Beta(α, α);  box of side √(1−λ)·(H, W) centred at a uniform pixel, clipped to the image
        x̃ = x with the box taken from x_π;  λ' = 1 − box area/(H·W);  ỹ = λ'ỹ + (1−λ')ỹ_π

    One λ, one box and one permutation π per batch (as in the reference code); with ``prob``
    < 1 a batch is mixed with that probability (the reference's ``cutmix_prob``) and otherwise
    passed through untouched. The label weight uses the *clipped* box, so it is exactly the
    fraction of pixels that still come from x. Inputs are the flat 8×8 digits, viewed as
    ``meta["image_shape"]`` (1, 8, 8) images. Runs last in ``transform_batch`` (order 90); label
    smoothing then acts on the mixed targets. Training only: memorisation metrics come from the
    unmixed evaluation pass. Randomness: λ from a NumPy generator seeded with the technique's
    generator seed (as mixup), π, the box centre and the coin from the technique's generator.
    Cannot be combined with mixup or RegMixup (one mixing scheme at a time) nor with ELR / PS-KD,
    whose per-sample targets are ill-defined on mixed inputs.
    """

    name = "cutmix"
    group = "label"
    source = ("CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features "
              "(Yun et al., 2019)")
    order = 90
    tasks = ("classification",)
    exclusive = "batch_mixing"
    requires = (Need(why="it pastes rectangles between images", fix="use mixup there", inputs=frozenset({"image"})),)
    marks = frozenset({"mixes_rows"})
    params = (
        Param("alpha", float, 1.0, 0.05, 32.0, live=True, log=True, help="Beta(α, α) concentration of λ"),
        Param("prob", float, 1.0, 0.0, 1.0, live=True, help="probability that a batch is mixed at all"),
    )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        refuse_unmixable(cls.name, tokens=False, few_labels=bool(cfg.data.n_labeled))

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.num_classes = class_count(setup, self.name)
        meta = getattr(setup.dataset, "meta", {}) or {}
        shape = tuple(meta.get("image_shape", ()))
        x_train = getattr(setup.dataset, "x_train", None)
        if len(shape) != 3 or (x_train is not None and math.prod(shape) != math.prod(x_train.shape[1:])):
            raise ValueError("regularizers.cutmix: needs image inputs with meta['image_shape'] (digits)")
        if getattr(setup.dataset, "labeled", None) is not None:
            raise ValueError("regularizers.cutmix: a few-label run would paste in the hidden labels of "
                             "unlabelled examples; set data.n_labeled=0 or disable cutmix")
        self.image_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self._rng = np.random.default_rng(self.generator.initial_seed())
        self.last_box: tuple[int, int, int, int] | None = None  # latest batch, for metrics and tests
        self.last_lam: float | None = None  # the area-corrected label weight λ'
        self.last_perm: torch.Tensor | None = None

    def transform_batch(self, batch: Batch, step: int) -> Batch:
        alpha = self["alpha"]
        lam = float(self._rng.beta(alpha, alpha))
        coin = float(torch.rand((), generator=self.generator))
        n = batch.x.shape[0]
        perm = torch.randperm(n, generator=self.generator).to(batch.x.device)
        _, height, width = self.image_shape
        cy = int(torch.randint(height, (), generator=self.generator))
        cx = int(torch.randint(width, (), generator=self.generator))
        if coin >= self["prob"]:
            self.last_box, self.last_lam, self.last_perm = None, None, None
            return batch
        y0, y1, x0, x1 = box = cutmix_box(lam, height, width, cy, cx)
        lam_adj = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
        self.last_box, self.last_lam, self.last_perm = box, lam_adj, perm

        images = batch.x.reshape(n, *self.image_shape)
        mixed = images.clone()
        mixed[:, :, y0:y1, x0:x1] = images[perm][:, :, y0:y1, x0:x1]
        target = soft_targets(batch, self.num_classes)
        y_soft = lam_adj * target + (1.0 - lam_adj) * target[perm]
        return replace(batch, x=mixed.reshape(batch.x.shape), y_soft=y_soft)
