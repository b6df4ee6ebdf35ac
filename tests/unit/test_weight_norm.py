"""weight_norm: w = g·v/‖v‖ per output unit, and the optimizer trains g and v."""

from __future__ import annotations

import torch

from engine.config import validate
from engine.trainer import Trainer


def test_weight_is_g_times_unit_direction_and_g_v_are_trained() -> None:
    cfg = validate({"seed": 0, "data": {"name": "moons", "n_train": 100, "n_test": 20},
                    "model": {"name": "mlp", "width": 8}, "optim": {"name": "sgd", "lr": 0.1},
                    "train": {"steps": 5, "eval_every": 5}, "regularizers": {"weight_norm": {}, "l2_init": {}}})
    trainer = Trainer(cfg)
    names = {n for n, _ in trainer.model.named_parameters()}
    assert any(n.endswith("parametrizations.weight.original0") for n in names)  # g
    assert not any(n.endswith(".weight") for n in names)  # w itself is no longer a parameter
    layer = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear))
    g = layer.parametrizations.weight.original0.detach().clone()
    v = layer.parametrizations.weight.original1.detach()
    torch.testing.assert_close(layer.weight, g * v / v.norm(dim=1, keepdim=True))
    torch.testing.assert_close(layer.weight.norm(dim=1, keepdim=True), g.abs())
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert id(layer.parametrizations.weight.original0) in optimized
    assert trainer.run().status == "completed"
    assert not torch.equal(layer.parametrizations.weight.original0.detach(), g)  # g was trained
