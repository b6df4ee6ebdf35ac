"""AbsTopK SAE activation: keep each sample's k latents of largest |pre|, sign kept, no ReLU."""

from __future__ import annotations

from torch import Tensor

from engine.regularizers.base import Param, register
from engine.regularizers.sae_topk import SAEActivation


def abs_topk(pre: Tensor, k: int) -> Tensor:
    """AbsTopK_k(pre) per row: the k entries of largest |pre| keep their signed value; the rest are 0.

    Exactly min(k, n_latents) entries per row are selected (a selected entry that is exactly 0
    stays 0). No ReLU: negative latents are allowed."""
    k = min(k, pre.shape[-1])
    indices = pre.abs().topk(k, dim=-1).indices
    return (pre * 0).scatter(-1, indices, pre.gather(-1, indices))


class AbsTopKActivation:
    """The plain callable installed as ``model.activation`` (not an nn.Module, see models/sae.py)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, pre: Tensor) -> Tensor:
        return abs_topk(pre, self.k)


@register
class SAEAbsTopK(SAEActivation):
    """Keep each sample's k latents of largest |pre| with their sign (no ReLU): exactly k active latents per sample.

    AbsTopK, an extended SAE activation, a variant of the TopK activation of
    *Scaling and evaluating sparse autoencoders* (Gao et al., 2024). z = AbsTopK_k(pre): the k
    pre-activations of largest magnitude keep their signed value, every other latent is exactly
    0, so L0 = k per sample and a latent may be negative (a feature and its "anti-feature" share
    one decoder column). Same op in training and evaluation; gradients reach only the selected
    latents; ``k`` is live. Verify against the paper: the lab implements the one-line description
    (top-k by |pre|, sign kept, no ReLU); no paper-specific scaling or bias convention is applied.
    Sae model only; one SAE sparsity mechanism at a time (conflicts with TopK, BatchTopK, Feature
    Choice and L1). ``sae_aux_k`` still works with it, but its auxiliary
    reconstruction uses ReLU(TopK) of dead latents, i.e. positive codes only.
    """

    name = "sae_abs_topk"
    source = ("AbsTopK SAE activation (a lab extension of TopK); after Scaling and evaluating sparse "
              "autoencoders (Gao et al., 2024)")
    params = (
        Param("k", int, 8, 1, 64, live=True, help="active latents per sample (largest |pre|, sign kept)"),
    )

    def make_activation(self) -> AbsTopKActivation:
        return AbsTopKActivation(self["k"])

    def sync(self) -> None:
        self.activation.k = self["k"]
