"""Dataset registry: shapes, dtypes, determinism, modular arithmetic, label noise, few-label splits."""

from __future__ import annotations

from dataclasses import fields
from functools import cache
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from engine.config import DataConfig
from engine.data import REGISTRY, Dataset, build_dataset, dataset_names
from engine.data.modular import modular_table
from engine.data.noise import apply_few_labels, apply_label_noise, stratified_quotas

# Small, fast configurations for every dataset (overrides on top of DataConfig defaults).
SMALL: dict[str, dict[str, Any]] = {
    "moons": {"n_train": 120, "n_test": 80},
    "circles": {"n_train": 120, "n_test": 80},
    "spirals": {"n_train": 120, "n_test": 80, "n_classes": 4},
    "blobs": {"n_train": 120, "n_test": 80, "n_classes": 5, "dim": 7},
    "xor": {"n_train": 120, "n_test": 80, "dim": 20, "informative": 3},
    "digits": {"n_train": 300, "n_test": 200},
    "modular": {"p": 11, "train_frac": 0.4},
    "sparse_features": {"n_train": 120, "n_test": 80, "dim": 16, "n_latents": 48, "sparsity": 0.1},
    "teacher_student": {"n_train": 120, "n_test": 80, "dim": 9},
}


def cfg_for(name: str, **extra: Any) -> DataConfig:
    return DataConfig(name=name, **{**SMALL[name], **extra})


def tensors(data: Dataset) -> dict[str, torch.Tensor]:
    """Every tensor of a Dataset, meta tensors included, keyed by name."""
    out = {f.name: getattr(data, f.name) for f in fields(data) if isinstance(getattr(data, f.name), torch.Tensor)}
    out.update({f"meta.{k}": v for k, v in data.meta.items() if isinstance(v, torch.Tensor)})
    return out


def assert_identical(a: Dataset, b: Dataset) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert ta[key].dtype == tb[key].dtype, key
        assert torch.equal(ta[key], tb[key]), key


def test_registry_covers_every_config_name() -> None:
    assert set(dataset_names()) == set(DataConfig.choices()) == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_declarations_match_what_the_dataset_builds(name: str) -> None:
    """Task, input kind and class count are declared without building; the built data must agree."""
    cfg = cfg_for(name)
    family = REGISTRY.lookup(name)
    data = build_dataset(cfg, seed=0)
    assert data.task == family.task
    assert data.num_classes == family.num_classes(cfg)
    kind = family.inputs(cfg)
    assert kind in family.input_kinds
    if kind == "points2d":
        assert data.input_shape == (2,)
    if kind == "tokens":
        assert torch.equal(data.x_train, data.x_train.round())
    if kind in ("vector", "image"):
        assert torch.is_floating_point(data.x_train) and len(data.input_shape) == 1


def test_input_kind_follows_the_config() -> None:
    modular = REGISTRY.lookup("modular")
    assert modular.inputs(cfg_for("modular", encoding="tokens")) == "tokens"
    assert modular.inputs(cfg_for("modular")) == "vector"
    blobs = REGISTRY.lookup("blobs")
    assert blobs.inputs(cfg_for("blobs", dim=2)) == "points2d" and blobs.inputs(cfg_for("blobs")) == "vector"


def test_dataset_parameters_belong_to_their_dataset() -> None:
    """A dataset's own keys are read as attributes and dumped; another dataset's key is refused."""
    cfg = DataConfig(name="modular", p=53)
    assert cfg.p == 53 and cfg.model_dump()["p"] == 53
    assert "p" not in DataConfig(name="moons").model_dump()
    assert DataConfig(name="moons").p == 97  # read-only fallback: the declaring dataset's default
    with pytest.raises(ValueError, match=r"data\.p: data\.name=moons does not read p \(modular does\)"):
        DataConfig(name="moons", p=53)


# ---------------------------------------------------------------- every dataset


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_and_dtypes(name: str) -> None:
    cfg = cfg_for(name)
    data = build_dataset(cfg, seed=0)
    assert data.name == name
    assert data.x_train.dtype == data.x_test.dtype == torch.float32
    assert data.x_train.device.type == "cpu"
    assert data.x_train.ndim == 2 and data.x_train.shape[1:] == data.x_test.shape[1:]
    assert torch.isfinite(data.x_train).all() and torch.isfinite(data.x_test).all()
    if data.task == "classification":
        assert data.y_train.dtype == data.y_test.dtype == torch.int64
        assert data.y_train.shape == (data.n_train,) and data.y_test.shape == (len(data.x_test),)
        assert data.num_classes is not None and data.output_dim == data.num_classes
        both = torch.cat([data.y_train, data.y_test])
        assert int(both.min()) >= 0 and int(both.max()) < data.num_classes
    else:
        assert data.num_classes is None
        assert data.y_train.dtype == data.y_test.dtype == torch.float32
        assert data.y_train.shape[0] == data.n_train and data.y_test.shape[0] == len(data.x_test)
    if name not in ("modular", "digits"):
        assert data.n_train == cfg.n_train and len(data.x_test) == cfg.n_test
    assert data.y_train_true is None and data.is_noisy is None and data.labeled is None


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_is_bit_identical_and_other_seed_differs(name: str) -> None:
    cfg = cfg_for(name)
    first, again, other = build_dataset(cfg, 3), build_dataset(cfg, 3), build_dataset(cfg, 4)
    assert_identical(first, again)
    assert not torch.equal(first.x_train, other.x_train)


@pytest.mark.parametrize("name", ["moons", "circles", "spirals", "blobs", "xor"])
def test_standardize_uses_train_statistics(name: str) -> None:
    data = build_dataset(cfg_for(name), 0)
    assert data.x_train.mean(0).abs().max() < 1e-5
    assert torch.allclose(data.x_train.std(0, unbiased=False), torch.ones(data.x_train.shape[1]), atol=1e-4)
    raw = build_dataset(cfg_for(name, standardize=False), 0)
    assert torch.allclose((raw.x_train - data.meta["x_mean"]) / data.meta["x_std"], data.x_train, atol=1e-5)
    assert torch.allclose((raw.x_test - data.meta["x_mean"]) / data.meta["x_std"], data.x_test, atol=1e-5)


def test_toy_class_balance_and_dims() -> None:
    spirals = build_dataset(cfg_for("spirals"), 0)
    counts = torch.cat([spirals.y_train, spirals.y_test]).bincount(minlength=4)
    assert int(counts.max() - counts.min()) <= 1
    blobs = build_dataset(cfg_for("blobs"), 0)
    assert blobs.input_shape == (7,) and set(blobs.y_train.tolist()) == set(range(5))


def test_xor_labels_are_parity_of_informative_signs() -> None:
    data = build_dataset(cfg_for("xor", jitter=0.0, standardize=False), 0)
    assert set(data.x_train.unique().tolist()) == {-1.0, 1.0}
    parity = (data.x_train[:, :3] < 0).sum(1) % 2
    assert torch.equal(parity, data.y_train)
    assert 0.3 < data.y_train.float().mean() < 0.7


def test_xor_rejects_dim_below_informative() -> None:
    with pytest.raises(ValueError, match=r"^data\.dim: must be ≥ data\.informative"):
        build_dataset(DataConfig(name="xor", dim=2, informative=3), 0)


# ---------------------------------------------------------------- digits


def test_digits_scaling_split_and_meta() -> None:
    data = build_dataset(cfg_for("digits", standardize=False), 0)
    assert data.meta["image_shape"] == (1, 8, 8) and data.input_shape == (64,)
    assert data.x_train.mean(0).abs().max() < 1e-5  # centred by the train mean
    spread = data.x_train.max(0).values - data.x_train.min(0).values
    assert float(spread.max()) <= 1.0 + 1e-6  # /16: pixel range at most 1
    assert data.n_train == 300 and len(data.x_test) == 200
    rest = build_dataset(cfg_for("digits", n_train=1500, n_test=1000), 0)
    assert len(rest.x_test) == 1797 - 1500  # capped by what is left
    std = build_dataset(cfg_for("digits", standardize=True), 0)
    assert std.x_train.mean(0).abs().max() < 1e-5
    assert torch.equal(data.y_train, std.y_train)  # the flag changes scaling, not the split


def test_digits_train_and_test_partition_the_bundled_images() -> None:
    data = build_dataset(cfg_for("digits", standardize=False, n_train=1000, n_test=797), 0)
    pixels = ((torch.cat([data.x_train, data.x_test]) + data.meta["x_mean"]) * 16).round().numpy()
    bundled = load_digits().data
    # the same multiset of rows: every image used exactly once, none in both train and test
    assert sorted(map(tuple, pixels.tolist())) == sorted(map(tuple, bundled.tolist()))


def test_digits_rejects_too_many_training_images() -> None:
    with pytest.raises(ValueError, match=r"^data\.n_train:"):
        build_dataset(DataConfig(name="digits", n_train=1798), 0)


# ---------------------------------------------------------------- modular


def decode_onehot(x: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    assert torch.equal(x.sum(1), torch.full((len(x),), 2.0))
    return x[:, :p].argmax(1), x[:, p:].argmax(1)


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_modular_split_is_a_disjoint_cover_with_correct_labels(op: str) -> None:
    p, frac = 11, 0.4
    data = build_dataset(cfg_for("modular", op=op, train_frac=frac), 0)
    n_pairs = p * (p - 1) if op == "/" else p * p
    assert data.n_train == round(frac * n_pairs) and data.n_train + len(data.x_test) == n_pairs
    assert data.num_classes == p and data.input_shape == (2 * p,)
    a_tr, b_tr = decode_onehot(data.x_train, p)
    a_te, b_te = decode_onehot(data.x_test, p)
    train_pairs = set(zip(a_tr.tolist(), b_tr.tolist(), strict=True))
    test_pairs = set(zip(a_te.tolist(), b_te.tolist(), strict=True))
    assert not train_pairs & test_pairs
    assert len(train_pairs | test_pairs) == n_pairs
    assert torch.equal(data.meta["pairs_train"], torch.stack([a_tr, b_tr], 1))
    expected = {
        "+": lambda a, b: (a + b) % p,
        "-": lambda a, b: (a - b) % p,
        "*": lambda a, b: (a * b) % p,
        "/": lambda a, b: (a * pow(b, p - 2, p)) % p,
    }[op]
    for a, b, c in zip(a_tr.tolist(), b_tr.tolist(), data.y_train.tolist(), strict=True):
        assert c == expected(a, b)
    for a, b, c in zip(a_te.tolist(), b_te.tolist(), data.y_test.tolist(), strict=True):
        assert c == expected(a, b)


def test_modular_known_values() -> None:
    a, b, c = modular_table(7, "+")
    table = {(int(x), int(y)): int(z) for x, y, z in zip(a, b, c, strict=True)}
    assert table[(3, 5)] == 1 and table[(6, 6)] == 5 and table[(0, 0)] == 0
    a, b, c = modular_table(7, "-")
    assert {(int(x), int(y)): int(z) for x, y, z in zip(a, b, c, strict=True)}[(2, 5)] == 4
    a, b, c = modular_table(7, "*")
    assert {(int(x), int(y)): int(z) for x, y, z in zip(a, b, c, strict=True)}[(4, 5)] == 6


def test_modular_division_inverts_multiplication() -> None:
    p = 97
    a, b, c = modular_table(p, "/")
    assert len(c) == p * (p - 1) and (b != 0).all()
    assert ((c * b) % p == a).all()  # c = a / b  ⇔  c·b ≡ a (mod p)
    table = {(int(x), int(y)): int(z) for x, y, z in zip(a, b, c, strict=True)}
    assert table[(1, 2)] == 49 and table[(6, 3)] == 2  # 2·49 = 98 ≡ 1;  6/3 = 2


def test_modular_division_needs_prime() -> None:
    with pytest.raises(ValueError, match=r"^data\.p:"):
        modular_table(12, "/")


def test_modular_tokens_encoding() -> None:
    p = 11
    data = build_dataset(cfg_for("modular", encoding="tokens"), 0)
    onehot = build_dataset(cfg_for("modular"), 0)
    assert data.x_train.dtype == torch.float32 and data.input_shape == (3,)
    assert {k: data.meta[k] for k in ("p", "op", "vocab", "encoding")} == {
        "p": p,
        "op": "+",
        "vocab": p + 1,
        "encoding": "tokens",
    }
    assert torch.equal(data.x_train[:, 2], torch.full((data.n_train,), float(p)))
    tokens = data.x_train[:, :2].long()
    assert torch.equal(tokens, torch.stack(decode_onehot(onehot.x_train, p), 1))  # same split
    assert torch.equal(data.y_train, (tokens[:, 0] + tokens[:, 1]) % p)


def test_modular_train_sets_nest_across_train_frac() -> None:
    """Changing train_frac keeps the permutation: a larger fraction extends the smaller train set."""
    small = build_dataset(cfg_for("modular", train_frac=0.3), 0)
    large = build_dataset(cfg_for("modular", train_frac=0.5), 0)
    assert torch.equal(large.meta["pairs_train"][: small.n_train], small.meta["pairs_train"])


# ---------------------------------------------------------------- synthetic ground truth


def test_sparse_features_ground_truth() -> None:
    data = build_dataset(cfg_for("sparse_features"), 0)
    assert data.task == "reconstruction" and torch.equal(data.x_train, data.y_train)
    assert torch.equal(data.x_test, data.y_test)
    features = data.meta["true_features"]
    assert features.shape == (48, 16) and features.dtype == torch.float32
    assert torch.allclose(features.norm(dim=1), torch.ones(48), atol=1e-5)
    nonzero = (data.x_train.abs().sum(1) > 0).double().mean()
    assert 0.9 < nonzero <= 1.0  # P(no active feature) = 0.9**48 ≈ 0.6%


def test_sparse_features_codes_are_sparse_uniform_magnitudes() -> None:
    """With fewer latents than dims the features are independent, so the codes can be recovered."""
    data = build_dataset(cfg_for("sparse_features", n_train=2000, n_latents=8, sparsity=0.2), 1)
    features = data.meta["true_features"].double()
    codes = torch.linalg.lstsq(features.T, data.x_train.T.double()).solution.T
    assert torch.allclose(codes @ features, data.x_train.double(), atol=1e-5)  # no additive noise
    assert float(codes.min()) > -1e-5 and float(codes.max()) < 1 + 1e-5
    active = codes.abs() > 1e-5
    assert 0.18 < float(active.double().mean()) < 0.22
    assert 0.45 < float(codes[active].mean()) < 0.55  # U(0, 1) magnitudes


def test_teacher_student_is_linear_teacher_plus_noise() -> None:
    clean = build_dataset(cfg_for("teacher_student", jitter=0.0), 0)
    w = clean.meta["w_star"]
    assert clean.task == "regression" and clean.y_train.shape == (120, 1) and clean.output_dim == 1
    assert torch.allclose(clean.x_train @ w, clean.y_train[:, 0], atol=1e-5)
    assert torch.allclose(clean.x_test @ w, clean.y_test[:, 0], atol=1e-5)
    noisy = build_dataset(cfg_for("teacher_student", jitter=0.5), 0)
    assert torch.equal(noisy.x_train, clean.x_train)  # noise has its own stream
    resid = noisy.y_train[:, 0] - noisy.x_train @ w
    assert 0.35 < float(resid.std()) < 0.65


# ---------------------------------------------------------------- label noise


@cache
def _base() -> Dataset:
    return build_dataset(cfg_for("blobs", n_train=200), 0)


def check_noise_bookkeeping(clean: Dataset, noisy: Dataset, rate: float) -> None:
    n = clean.n_train
    assert noisy.is_noisy is not None and noisy.y_train_true is not None
    assert noisy.is_noisy.dtype == torch.bool and noisy.y_train.dtype == torch.int64
    assert torch.equal(noisy.y_train_true, clean.y_train)
    assert torch.equal(noisy.is_noisy, noisy.y_train != noisy.y_train_true)
    assert int(noisy.is_noisy.sum()) == round(rate * n)
    assert torch.equal(noisy.x_train, clean.x_train)
    assert torch.equal(noisy.y_test, clean.y_test) and torch.equal(noisy.x_test, clean.x_test)


@pytest.mark.parametrize("kind", ["symmetric", "class_dependent"])
def test_label_noise_bookkeeping(kind: str) -> None:
    clean = _base()
    noisy = apply_label_noise(clean, 0.4, kind, seed=0)
    check_noise_bookkeeping(clean, noisy, 0.4)
    assert float(noisy.is_noisy.double().mean()) == round(0.4 * 200) / 200
    assert (noisy.y_train[noisy.is_noisy] != noisy.y_train_true[noisy.is_noisy]).all()
    assert clean.is_noisy is None  # the input Dataset is not mutated


def test_class_dependent_noise_is_pair_flip() -> None:
    noisy = apply_label_noise(_base(), 0.3, "class_dependent", seed=1)
    flipped = noisy.is_noisy
    assert torch.equal(noisy.y_train[flipped], (noisy.y_train_true[flipped] + 1) % 5)


def test_symmetric_noise_reaches_every_other_class() -> None:
    noisy = apply_label_noise(build_dataset(cfg_for("digits", n_train=1500), 0), 0.9, "symmetric", seed=0)
    true, given = noisy.y_train_true[noisy.is_noisy], noisy.y_train[noisy.is_noisy]
    assert len(set(zip(true.tolist(), given.tolist(), strict=True))) == 90  # all 10×9 off-diagonal pairs


def test_noise_rate_does_not_change_split_and_noisy_sets_nest() -> None:
    low = build_dataset(cfg_for("digits", noise=0.2), 5)
    high = build_dataset(cfg_for("digits", noise=0.4), 5)
    clean = build_dataset(cfg_for("digits"), 5)
    assert torch.equal(low.x_train, clean.x_train) and torch.equal(high.x_train, clean.x_train)
    assert torch.equal(low.y_train_true, clean.y_train)
    assert bool((high.is_noisy | ~low.is_noisy).all())  # low-rate noisy set ⊂ high-rate noisy set
    assert torch.equal(low.y_train[low.is_noisy], high.y_train[low.is_noisy])


def test_build_dataset_applies_noise_for_every_classification_family() -> None:
    for name in ("moons", "circles", "spirals", "xor", "modular"):
        data = build_dataset(cfg_for(name, noise=0.25), 0)
        check_noise_bookkeeping(build_dataset(cfg_for(name), 0), data, 0.25)


@pytest.mark.parametrize("name", ["sparse_features", "teacher_student"])
def test_noise_and_few_labels_need_classification(name: str) -> None:
    data = REGISTRY[name].build(cfg_for(name), 0)
    with pytest.raises(ValueError, match=r"^data\.noise:"):
        apply_label_noise(data, 0.2, "symmetric", 0)
    with pytest.raises(ValueError, match=r"^data\.n_labeled:"):
        apply_few_labels(data, 10, 0)


def test_noise_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"^data\.noise_type:"):
        apply_label_noise(_base(), 0.2, "asymmetric", 0)


@settings(max_examples=40, deadline=None)
@given(
    rate=st.floats(min_value=0.0, max_value=0.95, allow_subnormal=False),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    kind=st.sampled_from(["symmetric", "class_dependent"]),
)
def test_noise_bookkeeping_property(rate: float, seed: int, kind: str) -> None:
    clean = _base()
    noisy = apply_label_noise(clean, rate, kind, seed)
    check_noise_bookkeeping(clean, noisy, rate)
    assert torch.equal(apply_label_noise(clean, rate, kind, seed).y_train, noisy.y_train)


# ---------------------------------------------------------------- few labels


def test_few_labels_are_stratified() -> None:
    data = build_dataset(cfg_for("moons", n_train=1000, n_labeled=10), 0)
    assert data.labeled is not None and data.labeled.dtype == torch.bool
    assert int(data.labeled.sum()) == 10
    assert data.y_train[data.labeled].bincount(minlength=2).tolist() == [5, 5]
    assert torch.equal(data.y_train, build_dataset(cfg_for("moons", n_train=1000), 0).y_train)
    digits = build_dataset(cfg_for("digits", n_labeled=25), 1)
    per_class = digits.y_train[digits.labeled].bincount(minlength=10)
    assert int(per_class.sum()) == 25 and int(per_class.min()) >= 2 and int(per_class.max()) <= 3
    again = build_dataset(cfg_for("digits", n_labeled=25), 1)
    assert torch.equal(digits.labeled, again.labeled)


def test_few_labels_at_least_one_per_class_and_water_filling() -> None:
    rng = np.random.default_rng(0)
    assert stratified_quotas(np.array([1, 10, 10]), 9, rng).tolist() == [1, 4, 4]
    quotas = stratified_quotas(np.array([2, 50, 3, 40]), 20, rng)
    assert quotas.sum() == 20 and (quotas >= 1).all() and quotas[0] == 2 and quotas[2] == 3
    assert sorted(quotas[[1, 3]].tolist()) == [7, 8]
    assert stratified_quotas(np.array([3, 3, 3]), 9, rng).tolist() == [3, 3, 3]


def test_few_labels_rejects_too_many() -> None:
    with pytest.raises(ValueError, match=r"^data\.n_labeled:"):
        apply_few_labels(_base(), 201, 0)
