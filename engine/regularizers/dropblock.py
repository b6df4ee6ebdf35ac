"""DropBlock: drop contiguous bs × bs blocks of CNN feature maps, with p rising with depth."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from engine.regularizers.base import Need, Param, Regularizer, Setup, register


def dropblock_gamma(p: float, block: int, size: int) -> float:
    """Seed rate γ = p/bs² · F²/(F − bs + 1)² for a target drop fraction p on F × F maps."""
    return p / block**2 * size**2 / (size - block + 1) ** 2


def dropblock_mask(shape: tuple[int, ...], p: float, block: int, generator: torch.Generator) -> Tensor:
    """A 0/1 keep-mask (N, C, H, W): Bernoulli(γ) seeds where a whole block fits, each grown to bs × bs zeros."""
    n, c, h, w = shape
    gamma = dropblock_gamma(p, block, min(h, w))
    seeds = (torch.rand((n, c, h - block + 1, w - block + 1), generator=generator) < gamma).float()
    # seed (i, j) covers rows i..i+bs−1 and columns j..j+bs−1: pad by bs − 1, then a stride-1 max-pool
    grown = F.max_pool2d(F.pad(seeds, (block - 1,) * 4), kernel_size=block, stride=1)
    return 1.0 - grown


def conv_feature_modules(model: nn.Module) -> list[nn.Module]:
    """Where each conv layer's output leaves its activation: the module after every Conv2d of a Sequential."""
    found: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            children = list(module)
            for i, child in enumerate(children):
                if isinstance(child, nn.Conv2d):
                    nxt = children[i + 1] if i + 1 < len(children) else None
                    found.append(nxt if nxt is not None and not isinstance(nxt, nn.Conv2d | nn.MaxPool2d) else child)
    return found


@register
class DropBlock(Regularizer):
    """Zero random contiguous bs × bs blocks of each conv feature map (structured dropout), p rising with depth.

    *DropBlock: A regularization method for convolutional networks* (Ghiasi, Lin & Le, NeurIPS
    2018), with the depth schedule of *Balanced Multi-Task Attention for Satellite Image
    Classification* (Vir, 2025):

        seeds ~ Bernoulli(γ) where a block fits,  γ = p/bs² · F²/(F − bs + 1)²
        each seed → a bs × bs block of zeros;  h̃ = h ⊙ M · numel(M)/Σ M

    Applied, in training mode only, to every conv layer's output after its activation (the
    CNN's two 8×8 maps), independently per example and channel, with p linear in depth from
    ``p_first`` (first conv layer) to ``p_last`` (last). Rescaling by numel/kept keeps the mean
    activation; evaluation is the identity. γ makes the *expected seed count* match p; block
    overlaps and the border make the realised drop fraction slightly lower (≈ 0.18 for p 0.2,
    bs 2 on 8×8). Masks are drawn on the CPU from the technique's own generator. Needs the
    ``cnn`` model on digits images.
    """

    name = "dropblock"
    group = "noise"
    requires = (
        Need(why="it drops blocks of conv feature maps",
             fix="use dropout otherwise", inputs=frozenset({"image"})),
        Need(why="it drops blocks of conv feature maps",
             fix="use model.name=cnn, or dropout otherwise", model_traits=frozenset({"conv"})),
    )
    marks = frozenset({"alters_forward"})
    source = ("DropBlock: A regularization method for convolutional networks (Ghiasi, Lin & Le, 2018); "
              "Balanced Multi-Task Attention for Satellite Image Classification (Vir, 2025)")
    params = (
        Param("p_first", float, 0.05, 0.0, 0.5, live=True, help="drop fraction p of the first conv layer's maps"),
        Param("p_last", float, 0.20, 0.0, 0.5, live=True, help="drop fraction p of the last conv layer's maps"),
        Param("block_size", int, 2, 1, 4, help="side bs of each dropped square block (2–3 on 8×8 maps)"),
    )

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        self.sites = conv_feature_modules(setup.model)
        if not self.sites:
            raise ValueError(f"regularizers.dropblock: model {type(setup.model).__name__} has no conv layers; "
                             "use model.name=cnn")
        self.handles = [site.register_forward_hook(self._make_hook(i)) for i, site in enumerate(self.sites)]
        self.last_kept: list[float] = [1.0] * len(self.sites)  # kept fraction per site, latest batch

    def p_at(self, depth: int) -> float:
        """Drop fraction of conv site ``depth`` (0 = first): linear from p_first to p_last."""
        last = len(self.sites) - 1
        if last == 0:
            return self["p_last"]
        return self["p_first"] + (self["p_last"] - self["p_first"]) * depth / last

    def _make_hook(self, depth: int) -> Any:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
            p = self.p_at(depth)
            if not module.training or p == 0.0 or output.dim() != 4:
                return None
            block = min(self["block_size"], output.shape[-1], output.shape[-2])
            mask = dropblock_mask(tuple(output.shape), p, block, self.generator).to(output.device, output.dtype)
            kept = mask.sum()
            self.last_kept[depth] = float(kept) / mask.numel()
            return output * mask * (mask.numel() / kept.clamp_min(1.0))
        return hook
