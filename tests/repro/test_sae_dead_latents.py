"""Reproduction of the sae-dead-latents preset (Gao et al. 2024) through the CLI.

Setting: generated sparse features (512 unit directions in 64 dims, each active with probability
0.01, magnitude U(0, 1)) and a TopK SAE with 512 latents — no more latents than true features, as
for real activations — untied encoder init N(0, 0.03²), Adam 3e-3, batch 256, 1,000 steps.
Mini-batch training, so the AuxK toggle is checked as a paired comparison on three seeds (same
data, init and batch order per seed). Measured on this machine (torch 2.13 CPU, one thread) for
seeds 0 / 1 / 2; ≈ 4 s CPU per run without AuxK, ≈ 7 s with it.
"""

from __future__ import annotations

from itertools import pairwise

import pytest

pytestmark = pytest.mark.repro

SEEDS = (0, 1, 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_auxk_revives_dead_latents_without_costing_reconstruction(run_preset, seed: int) -> None:
    _, off = run_preset("sae-dead-latents", f"seed={seed}")
    _, aux = run_preset("sae-dead-latents", f"seed={seed}", variant="regularized")
    assert off.last("sae/dead_frac") >= 0.3                                   # measured 0.486 / 0.473 / 0.508
    assert aux.last("sae/dead_frac") <= off.last("sae/dead_frac") - 0.2       # measured 0.006 / 0.020 / 0.012
    # measured FVU 0.165 vs 0.267 / 0.174 vs 0.265 / 0.164 vs 0.273 (AuxK vs off)
    assert aux.last("sae/fvu") <= off.last("sae/fvu")
    assert off.last("sae/l0_mean") <= 8 and aux.last("sae/l0_mean") <= 8     # TopK k = 8; measured 7.96


def test_tied_init_leaves_no_dead_latents(run_preset) -> None:
    _, tied = run_preset("sae-dead-latents", variant="tied_init")
    assert tied.last("sae/dead_frac") <= 0.05                                 # measured 0.000 (untied: 0.486)


def test_reconstruction_error_and_dead_fraction_fall_with_k(run_preset) -> None:
    fvu, dead = [], []
    for k in (2, 4, 8, 16, 32):
        _, h = run_preset("sae-dead-latents", f"regularizers.sae_topk.k={k}", "train.steps=500")
        fvu.append(h.last("sae/fvu"))
        dead.append(h.last("sae/dead_frac"))
    assert all(a > b for a, b in pairwise(fvu))     # measured 0.593 0.455 0.294 0.181 0.095
    assert all(a > b for a, b in pairwise(dead))   # measured 0.721 0.660 0.512 0.385 0.191
