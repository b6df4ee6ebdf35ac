"""RunConfig: validation up front, one-line errors naming the field, round trips, --set coercion."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import ConfigError, RunConfig, apply_overrides, dump, load_file, loads, parse_value, validate
from engine.presets import preset_config, preset_ids


def test_defaults_are_valid_and_round_trip_json_and_yaml(tmp_path: Path) -> None:
    cfg = validate({"regularizers": {"l2": {"lambda": 0.01}}})
    for fmt in ("json", "yaml"):
        text = dump(cfg, tmp_path / f"c.{fmt}", fmt=fmt)
        assert loads(text, fmt=fmt) == cfg
        assert validate(load_file(tmp_path / f"c.{fmt}")) == cfg


@pytest.mark.parametrize("preset_id", preset_ids())
def test_every_preset_validates_and_round_trips(preset_id: str) -> None:
    cfg = validate(preset_config(preset_id))
    assert cfg.preset == preset_id
    assert loads(dump(cfg)) == cfg


@pytest.mark.parametrize(
    ("assignment", "field"),
    [
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=0", "optim.lr"),
        ("train.steps=abc", "train.steps"),
        ("data.p=1", "data.p"),
        ("data.train_frac=1.0", "data.train_frac"),
        ("data.train_frac=0", "data.train_frac"),
        ("data.noise=1", "data.noise"),
        ("data.name=mnist", "data.name"),
        ("optim.name=rmsprop", "optim.name"),
        ("no.such.key=1", "no"),
        ("optim.lrr=0.1", "optim.lrr"),
        ("regularizers.nope.x=1", "regularizers.nope"),
        ("regularizers.l2.lambda=-1", "regularizers.l2.lambda"),
        ("regularizers.l2.strength=1", "regularizers.l2.strength"),
        ("model.name=cnn", "model.name"),
        ("data.op=/", "data.p"),  # grokking-quadratic has p=97, prime: division is fine, so flip p too
    ],
)
def test_bad_values_give_one_line_error_naming_the_field(assignment: str, field: str) -> None:
    base = preset_config("grokking-quadratic")
    extra = ["data.p=96"] if assignment == "data.op=/" else []
    with pytest.raises(ConfigError) as info:
        validate(apply_overrides(base, [assignment, *extra]))
    message = str(info.value)
    assert "\n" not in message
    assert field in message


def test_set_coerces_types() -> None:
    data = apply_overrides({}, ["optim.lr=1e-3", "train.steps=12", "loss.float64=true", "name=my run",
                                "model.init_std=null", "regularizers.l2.lambda=0.05"])
    cfg = validate(data)
    assert cfg.optim.lr == 1e-3 and cfg.train.steps == 12 and cfg.loss.float64 is True
    assert cfg.name == "my run" and cfg.model.init_std is None
    assert cfg.enabled_regularizers() == {"l2": {"lambda": 0.05, "include_bias": False}}
    assert parse_value("abc") == "abc" and parse_value("[1, 2]") == [1, 2]


def test_regularizer_shorthand_and_disable() -> None:
    cfg = validate({"regularizers": {"l2": True, "l1": {"enabled": "false"}}})
    assert set(cfg.enabled_regularizers()) == {"l2"}
    assert cfg.regularizers["l1"]["enabled"] is False


def test_set_format_errors() -> None:
    for bad in ["optim.lr", "=3", "optim..lr=1", "optim.lr.x=1"]:
        with pytest.raises(ConfigError):
            validate(apply_overrides({}, [bad]))


def test_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_file(bad)
    obj = tmp_path / "obj.yaml"
    obj.write_text("!!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError):
        load_file(obj)  # safe_load refuses to construct objects
    listy = tmp_path / "list.json"
    listy.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping"):
        load_file(listy)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                      st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False), st.text(max_size=8))
keys = st.sampled_from(["seed", "device", "data", "model", "optim", "train", "loss", "regularizers", "name", "lr",
                        "steps", "p", "l2", "elr", "sam", "lambda", "enabled", "junk", "width", "noise"])
junk = st.recursive(json_leaf, lambda children: st.one_of(st.lists(children, max_size=3),
                                                        st.dictionaries(keys, children, max_size=4)), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, junk, max_size=6))
def test_random_junk_only_ever_raises_config_error(data: dict) -> None:
    try:
        assert isinstance(validate(data), RunConfig)
    except ConfigError as err:
        assert "\n" not in str(err)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="abcdeoptimlrsn.=0123456789-_e[]{}\"", max_size=20), max_size=4))
def test_random_set_strings_only_ever_raise_config_error(assignments: list[str]) -> None:
    try:
        validate(apply_overrides(preset_config("noisy-labels"), assignments))
    except ConfigError as err:
        assert "\n" not in str(err)


# ---- plugin-declared keys and names from the registries ------------------------------------------

# A config as runs stored before datasets declared their own parameters: the full dump, every
# field of every dataset, with values the Lab could leave behind after switching datasets.
OLD_STYLE_DUMP = {
    "name": None, "preset": None, "seed": 3, "device": "auto",
    "data": {"name": "moons", "n_train": 200, "n_test": 100, "jitter": 0.2, "dim": 7, "n_classes": 5,
             "informative": 3, "noise": 0.1, "noise_type": "symmetric", "p": 53, "op": "/", "train_frac": 0.5,
             "encoding": "tokens", "n_labeled": 0, "n_latents": 64, "sparsity": 0.1, "standardize": True, "tasks": 1},
    "model": {"name": "mlp", "width": 32, "depth": 2, "activation": "relu", "bias": True, "init_scale": 1.0,
              "init_std": None, "dropout": 0.0, "heads": 4, "d_mlp": 512, "layernorm": False},
    "optim": {"name": "sgd", "lr": 0.1, "weight_decay": 0.0, "momentum": 0.9, "nesterov": True, "beta1": 0.9,
              "beta2": 0.999, "eps": 1e-08, "schedule": "cosine", "power_p": 10.0, "warmup_steps": 0,
              "step_every": 1000, "step_gamma": 0.1, "min_lr_frac": 0.1},
    "train": {"steps": 10, "batch_size": 0, "eval_every": 5, "log_every": 1, "snapshot_every": 0, "threads": 0},
    "loss": {"name": "gce", "q": 0.5, "z_a": 1.0, "z_b": 0.0, "float64": False, "mse_reduction": "half_sum"},
    "regularizers": {"l2": {"enabled": True, "lambda": 0.01, "include_bias": False}}, "diagnostics": {},
}


def test_old_style_full_dump_still_loads() -> None:
    """Stored runs (show, Compare, export) keep loading: another dataset's keys in a full dump are dropped."""
    cfg = validate(OLD_STYLE_DUMP)
    assert cfg.data.name == "moons" and cfg.data.jitter == 0.2 and cfg.data.n_train == 200
    assert "p" not in cfg.to_dict()["data"] and "encoding" not in cfg.to_dict()["data"]
    assert cfg.optim.momentum == 0.9 and cfg.optim.nesterov is True and cfg.optim.min_lr_frac == 0.1
    assert cfg.loss.q == 0.5
    assert loads(dump(cfg)) == cfg


def test_dataset_keys_belong_to_their_dataset() -> None:
    cfg = validate(apply_overrides(preset_config("grokking-quadratic"), ["data.p=53"]))
    assert cfg.data.p == 53 and cfg.to_dict()["data"]["p"] == 53
    with pytest.raises(ConfigError, match=r"^data\.p: .*moons.*modular.*data\.name=modular"):
        validate(apply_overrides({}, ["data.name=moons", "data.p=53"]))
    # switching dataset on top of a preset that sets the old dataset's keys at their defaults works
    moons = validate(apply_overrides(preset_config("grokking-quadratic"), ["data.name=moons"]))
    assert moons.data.name == "moons" and "p" not in moons.to_dict()["data"]
    assert moons.data.p == 97 and moons.data.encoding == "onehot"  # reads of another dataset's key: its default


@pytest.mark.parametrize(("key", "choices"), [
    ("data.name", "blobs, circles, digits"), ("model.name", "cnn, mlp"), ("optim.name", "adam, adamw"),
    ("optim.schedule", "constant, cosine"), ("loss.name", "ce, gce, mse"),
])
def test_names_come_from_the_registries(key: str, choices: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(apply_overrides({}, [f"{key}=nope"]))
    assert str(info.value).startswith(f"{key}: unknown 'nope'; choose one of {choices}")


def test_declared_keys_are_checked_by_their_declaration() -> None:
    with pytest.raises(ConfigError, match=r"^loss\.q: must be ≥ 0\.05"):
        validate({"loss": {"name": "gce", "q": 0.01}})
    with pytest.raises(ConfigError, match=r"^optim\.nesterov needs optim\.name=sgd"):
        validate({"optim": {"name": "adam", "nesterov": True}})
    with pytest.raises(ConfigError, match=r"^optim\.nesterov needs optim\.name=sgd and optim\.momentum > 0"):
        validate({"optim": {"name": "sgd", "nesterov": True}})
    with pytest.raises(ConfigError, match=r"^data\.dim: must be ≥ data\.informative"):
        validate({"data": {"name": "xor", "dim": 2, "informative": 3}})


def test_compatibility_comes_from_declarations() -> None:
    with pytest.raises(ConfigError, match=r"^model\.name: cnn needs data\.name in \['digits'\] \(got moons\)"):
        validate({"model": {"name": "cnn"}})
    with pytest.raises(ConfigError, match=r"^model\.name: sae needs data\.name in \['sparse_features'\]"):
        validate({"model": {"name": "sae"}})
    with pytest.raises(ConfigError, match=r"^loss\.name: teacher_student is a regression/reconstruction task; "
                                          r"set loss\.name=mse"):
        validate({"data": {"name": "teacher_student"}})
    with pytest.raises(ConfigError, match=r"^model\.activation: crelu .* only model\.name=mlp"):
        validate({"model": {"name": "random_features", "activation": "crelu"}})
    with pytest.raises(ConfigError, match=r"^data\.p: division mod p needs a prime modulus \(got 96\)"):
        validate({"data": {"name": "modular", "p": 96, "op": "/"}})
    assert validate({"data": {"name": "modular", "encoding": "tokens"}, "model": {"name": "transformer"}})


def test_switching_dataset_drops_the_previous_datasets_own_keys() -> None:
    base = preset_config("grokking-orthograd")  # modular with data.p=113, op, train_frac, encoding
    switched = validate(apply_overrides(base, ["data.name=digits", "model.name=mlp"]))
    assert switched.data.name == "digits" and "p" not in switched.to_dict()["data"]
    kept = validate(apply_overrides(base, ["data.name=modular", "data.p=53"]))
    assert kept.data.p == 53 and kept.data.train_frac == base["data"]["train_frac"]
    with pytest.raises(ConfigError, match=r"^data\.p: data\.name=moons does not read p"):
        validate(apply_overrides(base, ["data.name=moons", "data.p=53"]))  # set after the switch: refused
