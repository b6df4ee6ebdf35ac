"""The Zipf options of the SAE techniques (docs/techniques.md: sae_aux_k, sae_feature_choice): aux-Zipf (``sae_aux_k``
``mode=zipf``, a provisional approximation) and Feature Choice with Zipf capacities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from engine.models.sae import SparseAutoencoder
from engine.regularizers import Batch, LossContext, Setup, get
from engine.regularizers.sae_aux_k import SAEAuxK, zipf_fit, zipf_shortfall
from engine.regularizers.sae_feature_choice import feature_choice_relu, zipf_capacities

D, F_ = 4, 6


def aux_zipf(model: SparseAutoencoder, decay: float = 0.5) -> SAEAuxK:
    setup = Setup(model=model, dataset=None, seed=0, total_steps=10, num_classes=None,  # type: ignore[arg-type]
                  device=torch.device("cpu"))
    technique = get("sae_aux_k")(setup, alpha=1.0, k_aux=F_, window=500, mode="zipf", density_decay=decay)
    assert isinstance(technique, SAEAuxK)
    return technique


# ---- aux-Zipf: density tracking, the fit, the shortfall ------------------------------------------

def test_density_is_an_ema_of_each_latents_firing_rate() -> None:
    aux = aux_zipf(SparseAutoencoder(D, 3), decay=0.5)
    first = torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 0.0]])  # rates 1, 0, ½
    second = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]])  # rates 0, ½, 1
    aux.update_counts(first)
    torch.testing.assert_close(aux.density, torch.tensor([1.0, 0.0, 0.5]))  # the first batch as is
    aux.update_counts(second)
    torch.testing.assert_close(aux.density, torch.tensor([0.5, 0.25, 0.75]))  # ½·old + ½·new


def test_zipf_fit_is_least_squares_of_log_density_on_log_rank_over_firing_latents() -> None:
    density = torch.tensor([0.05, 0.4, 0.0, 0.1, 0.3], dtype=torch.float64)
    # ranks by density: 0.4 → 1, 0.3 → 2, 0.1 → 3, 0.05 → 4, 0 → 5 (excluded from the fit)
    slope, intercept = np.polyfit(np.log([1, 2, 3, 4]), np.log([0.4, 0.3, 0.1, 0.05]), 1)
    ranks = np.array([4, 1, 5, 3, 2])
    expected = np.exp(intercept + slope * np.log(ranks))
    np.testing.assert_allclose(zipf_fit(density).numpy(), expected, rtol=1e-12)
    gap = np.maximum(0, np.log(expected) - np.log(np.maximum(density.numpy(), 1e-3)))
    np.testing.assert_allclose(zipf_shortfall(density, 1e-3).numpy(), gap / gap.max(), rtol=1e-12)
    assert zipf_shortfall(density, 1e-3)[2] == 1.0  # the never-fired latent is the most under-used


def test_an_exact_zipf_profile_has_no_under_used_latent() -> None:
    density = torch.tensor([0.5, 0.5 / 3, 0.5 / 2, 0.5 / 5, 0.5 / 4]).double()  # ρ = ½/rank, shuffled
    torch.testing.assert_close(zipf_fit(density), density)
    assert float(zipf_shortfall(density, 1e-6).max()) < 1e-9


def sae_batch(model: SparseAutoencoder) -> tuple[Tensor, LossContext]:
    x = torch.randn(8, D, generator=torch.Generator().manual_seed(0))
    out = model(x)
    return x, LossContext(Batch(x, x, torch.arange(8)), out, None, model, 1, 10, torch.zeros(()))


def test_zero_loss_and_no_gradient_when_every_latent_is_at_or_above_its_fit() -> None:
    torch.manual_seed(0)
    model = SparseAutoencoder(D, F_)
    aux = aux_zipf(model)
    model.activation = lambda pre: torch.ones_like(pre) + 0 * pre  # every latent fires on every row
    _, ctx = sae_batch(model)
    loss = aux.extra_loss(ctx)
    assert loss is not None and float(loss.detach()) == 0.0 and not bool(aux.dead.any())


def test_gradients_reach_only_under_used_latents_weighted_by_their_shortfall() -> None:
    torch.manual_seed(0)
    model = SparseAutoencoder(D, F_)
    aux = aux_zipf(model)
    rates = torch.tensor([1.0, 0.5, 0.5, 0.25, 0.125, 0.0])
    pattern = (torch.arange(8).unsqueeze(1) < 8 * rates).float()  # latent j fires on 8·rate_j rows
    model.activation = lambda pre: pattern * torch.relu(pre) + pattern
    _, ctx = sae_batch(model)
    loss = aux.extra_loss(ctx)
    assert loss is not None and float(loss.detach()) > 0
    loss.backward()
    w = aux.weights  # fit ρ̂ ≈ 1.14, 0.51, 0.32, 0.23, 0.18, 0.14: latents 2 and 3 sit above it
    assert bool(aux.dead[5]) and float(w[5]) == 1.0 and not bool(aux.dead[2] | aux.dead[3])
    enc, dec = model.encoder.weight.grad, model.decoder.weight.grad
    assert enc is not None and dec is not None
    for j in range(F_):
        if w[j] == 0:
            assert float(enc[j].abs().sum()) == 0.0 and float(dec[:, j].abs().sum()) == 0.0
    # the decoder gradient of an under-used latent is w_j × the unweighted AuxK gradient
    reference = aux_zipf(model)
    reference.weights, reference.dead, reference.density = torch.ones(F_), aux.dead.clone(), aux.density
    model.zero_grad()
    model.activation = lambda pre: pattern * torch.relu(pre) + pattern
    _, ctx = sae_batch(model)
    reference.update_density = lambda z: None  # type: ignore[method-assign]  # keep the weights at 1
    ref_loss = reference.extra_loss(ctx)
    assert ref_loss is not None
    torch.testing.assert_close(ref_loss.detach(), loss.detach())  # same value: only the pull is weighted
    ref_loss.backward()
    under = aux.dead.nonzero(as_tuple=True)[0]
    torch.testing.assert_close(dec[:, under], model.decoder.weight.grad[:, under] * w[under])  # type: ignore[index]


# ---- Feature Choice with Zipf capacities ---------------------------------------------------------

@pytest.mark.parametrize(("k", "batch", "n_latents", "s"), [(2, 64, 64, 1.0), (8, 256, 1024, 1.0), (2, 64, 64, 3.0),
                                                            (3, 10, 7, 0.5)])
def test_zipf_capacities_sum_to_k_b_each_at_least_one_and_decreasing(k: int, batch: int, n_latents: int,
                                                                    s: float) -> None:
    m = zipf_capacities(k, batch, n_latents, s)
    assert int(m.sum()) == k * batch and int(m.min()) >= 1 and int(m.max()) <= batch
    assert bool((m[:-1] >= m[1:]).all())  # m_j ∝ 1/j^s is non-increasing in j
    share = torch.arange(1, n_latents + 1, dtype=torch.float64).pow(-s)
    target = k * batch * share / share.sum()
    if bool((target >= 1).all()) and bool((target <= batch).all()):  # no floor or cap binds: plain rounding
        assert bool(((m - target).abs() < 1).all())
    else:  # the floor of 1 takes budget from the head, never gives it
        assert int(m[0]) <= float(target[0]) + 1


def test_exponent_zero_gives_the_uniform_capacity() -> None:
    assert bool((zipf_capacities(2, 64, 64, 0.0) == 2).all())


def test_every_latent_fires_at_most_its_capacity_per_batch() -> None:
    pre = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)) + 3.0  # nearly all positive
    m = zipf_capacities(2, 64, 64, 1.0)
    z, cutoff = feature_choice_relu(pre, m)
    fires = (z > 0).sum(0)
    assert bool((fires <= m).all()) and bool((fires == m).all())  # all positive: exactly m_j each
    assert int(fires.sum()) == 2 * 64
    torch.testing.assert_close(cutoff, pre.sort(0, descending=True).values.gather(0, (m - 1).unsqueeze(0))[0])


# ---- behaviour on the sparse-features SAE of test_behaviour_sae.py -------------------------------

def test_aux_zipf_leaves_fewer_dead_latents_than_topk_alone() -> None:
    """Honest scope: fewer dead latents and a lower FVU than TopK alone; the count of latents
    below the Zipf fit barely moves (measured 43 vs 47 of 64) and plain AuxK revives more
    (dead 0.391) on this problem."""
    from tests.unit.test_behaviour_sae import K, sae

    topk, zipf = sae(sae_topk={"k": K}), sae(sae_topk={"k": K}, sae_aux_k={"mode": "zipf"})
    assert zipf.final["sae/dead_frac"] < 0.8 * topk.final["sae/dead_frac"]  # measured 0.438 vs 0.609
    assert zipf.final["sae/fvu"] < topk.final["sae/fvu"]  # measured 0.495 vs 0.523


def test_feature_choice_with_zipf_capacities_respects_them_in_training() -> None:
    from tests.unit.test_behaviour_sae import K, latents, sae

    trainer = sae(sae_feature_choice={"k": K, "capacity": "zipf"})
    batch = trainer.data.x_train[:64]
    fires = (latents(trainer, training=True, x=batch) > 0).sum(0)
    m = zipf_capacities(K, 64, 64, 1.0)
    assert bool((fires <= m).all())
    assert int(fires.sum()) > 0.9 * K * 64  # measured 127 of k·B = 128: the budget is used
    assert trainer.final["sae/dead_frac"] < 0.05  # measured 0.000
