"""FATReLU: from a given point of the run on, ReLU activations below a positive threshold are zeroed."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from engine.capabilities import has_relu_modules
from engine.regularizers.activation_l1 import RELU_FAMILY
from engine.regularizers.base import Param, Regularizer, Setup, register


def fatrelu(output: Tensor, threshold: float) -> Tensor:
    """x if x ≥ T else 0, applied to a ReLU output (which is already 0 below 0)."""
    return output.masked_fill(output < threshold, 0.0)


@register
class FATReLU(Regularizer):
    """From `start`·T updates on, every ReLU outputs x·1[x ≥ T] (forced activation threshold): sparser activations.

    FATReLU, *Inducing and Exploiting Activation Sparsity for Fast Neural Network Inference*
    (Kurtz et al., ICML 2020); used as the final stage of *ProSparse* (Song et al., 2024) after the
    progressive L1 penalty (``activation_l1``). Small positive activations carry
    little signal; zeroing them raises the exact-zero fraction at a small cost in accuracy.
    Conventions: applied by forward hooks on every ReLU-family activation module (prepended, so
    the ``units`` diagnostic and activation_l1 see the thresholded output), in training and
    evaluation alike, from the first forward after ``start``·T updates are complete (``start``
    = 0: from the start); the gradient passes only through kept activations. Verify the defaults
    against the papers (T 0.1, start 0.8 = activation_l1's default end of its ramp, here).
    """

    name = "fatrelu"
    group = "repr"
    source = ("Inducing and Exploiting Activation Sparsity for Fast Neural Network Inference "
              "(Kurtz et al., 2020); final stage of ProSparse (Song et al., 2024)")
    params = (
        Param("threshold", float, 0.1, 0.0, 10.0, live=True, log=True, help="activation threshold T > 0"),
        Param("start", float, 0.8, 0.0, 1.0, help="fraction of the run after which the threshold applies"),
    )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if not has_relu_modules(cfg):
            raise ValueError(f"regularizers.fatrelu: thresholds ReLU activation modules, which model {cfg.model.name} "
                             f"(activation {cfg.model.activation}) does not have; set model.activation=relu")

    def __init__(self, setup: Setup, **values: Any) -> None:
        super().__init__(setup, **values)
        modules = [m for m in setup.model.modules() if isinstance(m, RELU_FAMILY)]
        if not modules:
            raise ValueError(f"regularizers.fatrelu: model {type(setup.model).__name__} has no ReLU activation modules")
        self.active = self["start"] == 0.0
        for module in modules:
            module.register_forward_hook(self._hook, prepend=True)

    def _hook(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
        return fatrelu(output, self["threshold"]) if self.active else None

    def after_step(self, step: int) -> None:
        self.active = step >= self["start"] * self.setup.total_steps
