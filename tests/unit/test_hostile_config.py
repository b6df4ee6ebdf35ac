"""Generated hostile config input — random bytes, deep nesting, duplicate keys, huge numbers, unicode —
thrown at every entry point that reads user text: ``load_file``, ``--set`` (``apply_overrides`` and the
CLI's ``load_run_config``) and the Lab URL (``labstate.from_query``). Only a one-line ``ConfigError``
may come out (``from_query`` never raises: it reports problems)."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import labstate
from engine.cli import load_run_config
from engine.config import ConfigError, apply_overrides, load_file, parse_value, validate
from engine.safe_input import MAX_DEPTH, json_depth

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = ["seed", "optim.lr", "optim.name", "train.steps", "train.batch_size", "data.noise", "data.n_train",
        "model.width", "regularizers.l2.lambda", "regularizers.elr", "loss.name", "nosuch.key"]

huge_numbers = st.one_of(
    st.integers(min_value=-10**300, max_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),  # torch may flush denormals
    st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", "9" * 4_400, "1" + "0" * 5_000, "0x1p1024"]),
)
scalars = st.one_of(st.none(), st.booleans(), huge_numbers, st.text(max_size=30))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=12)


def assert_one_line(err: ConfigError) -> None:
    message = str(err)
    assert message and "\n" not in message and "\r" not in message, message[:500]
    assert len(message) < 1_000, message[:500]


def load_bytes(content: bytes, suffix: str) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"c{suffix}"
        path.write_bytes(content)
        try:
            data = load_file(path)
        except ConfigError as err:
            assert_one_line(err)
            return None
    try:  # whatever parsed must also validate or be refused in one line
        validate(data)
    except ConfigError as err:
        assert_one_line(err)
    return data


def nested(depth: int, style: str) -> str:
    if style == "json_list":
        return '{"optim": {"lr": ' + "[" * depth + "]" * depth + "}}"
    if style == "json_open":  # never closed: what the recursive C scanner would descend first
        return '{"optim": ' + '{"a": ' * depth
    if style == "yaml_flow":
        return "optim: " + "{a: " * depth + "1" + "}" * depth + "\n"
    return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v: 1\n"  # yaml block


# ---- files ---------------------------------------------------------------------------------------

@SETTINGS
@given(content=st.binary(max_size=2_000), suffix=st.sampled_from([".yaml", ".json", ".yml"]))
def test_random_bytes(content: bytes, suffix: str) -> None:
    load_bytes(content, suffix)


@SETTINGS
@given(text=st.text(max_size=400), suffix=st.sampled_from([".yaml", ".json"]))
def test_random_unicode_text(text: str, suffix: str) -> None:
    load_bytes(text.encode("utf-8", "surrogatepass"), suffix)


@SETTINGS
@given(depth=st.integers(MAX_DEPTH + 1, 20_000), style=st.sampled_from(["json_list", "json_open", "yaml_flow",
                                                                          "yaml_block"]))
def test_deep_nesting_is_refused_by_name(depth: int, style: str) -> None:
    suffix = ".json" if style.startswith("json") else ".yaml"
    if style == "yaml_block":
        depth = min(depth, 300)  # block YAML grows quadratically with depth; 300 is far past the cap
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"c{suffix}"
        path.write_text(nested(depth, style), encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_file(path)
    assert_one_line(info.value)
    assert "nested deeper than 32" in str(info.value)


@pytest.mark.parametrize("style", ["json_list", "yaml_flow", "yaml_block"])
def test_nesting_up_to_the_cap_is_read(style: str, tmp_path: Path) -> None:
    """The cap refuses what no config needs, not ordinary structure: 30 levels still parse."""
    path = tmp_path / ("c.json" if style.startswith("json") else "c.yaml")
    path.write_text(nested(30, style), encoding="utf-8")
    assert isinstance(load_file(path), dict)


@SETTINGS
@given(key=st.text(min_size=1, max_size=20).filter(lambda k: k.isprintable()),
       first=json_values, second=json_values, where=st.integers(0, 3), fmt=st.sampled_from(["json", "yaml"]))
def test_duplicate_keys_are_refused_naming_the_key(key: str, first: Any, second: Any, where: int, fmt: str) -> None:
    def text_of(value: Any) -> str:  # unescaped, so YAML reads the same characters JSON does
        return json.dumps(value, ensure_ascii=False)

    pair = f"{text_of(key)}: {text_of(first)}, {text_of(key)}: {text_of(second)}"
    text = '{"a": ' * where + "{" + pair + "}" + "}" * where
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"c.{fmt}"  # JSON text is also YAML (flow style)
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_file(path)
    assert_one_line(info.value)
    assert f"duplicate key {key!r}" in str(info.value) or "not valid YAML" in str(info.value)


def test_a_file_over_1_mb_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text('{"seed": 1, "pad": "' + "x" * 1_100_000 + '"}', encoding="utf-8")
    with pytest.raises(ConfigError, match="larger than 1 MB"):
        load_file(path)


# ---- --set and the CLI path ---------------------------------------------------------------------

@SETTINGS
@given(key=st.sampled_from(KEYS), value=st.one_of(huge_numbers.map(str), st.text(max_size=60),
                                                   json_values.map(json.dumps)))
def test_set_values(key: str, value: str) -> None:
    try:
        load_run_config("grokking-quadratic", None, [f"{key}={value}"])
    except ConfigError as err:
        assert_one_line(err)


@SETTINGS
@given(assignment=st.text(max_size=80))
def test_set_arbitrary_assignments(assignment: str) -> None:
    try:
        load_run_config("noisy-labels", None, [assignment])
    except ConfigError as err:
        assert_one_line(err)


@SETTINGS
@given(depth=st.integers(MAX_DEPTH + 1, 60_000), closed=st.booleans(), bracket=st.sampled_from(["[", '{"a":']))
def test_deep_set_values_are_refused(depth: int, closed: bool, bracket: str) -> None:
    closing = ("]" if bracket == "[" else "}") * depth if closed else ""
    with pytest.raises(ConfigError) as info:
        apply_overrides({}, [f"optim.lr={bracket * depth}{closing}"])
    assert_one_line(info.value)
    assert str(info.value).startswith("--set optim.lr: nested deeper than 32")


@SETTINGS
@given(value=json_values)
def test_parse_value_round_trips_what_is_not_hostile(value: Any) -> None:
    text = json.dumps(value)
    assert json_depth(text) <= MAX_DEPTH  # generated values are shallow
    try:
        parsed = parse_value(text)
    except ConfigError as err:  # only a duplicate key (generated dict keys are unique) could get here
        pytest.fail(f"refused a plain JSON value: {err}")
    assert json.dumps(parsed) == text


# ---- the Lab URL ------------------------------------------------------------------------------------

url_parts = st.one_of(st.text(max_size=40), st.sampled_from(
    ["optim.lr=" + "[" * 50_000, "optim.lr=" + "9" * 5_000, "optim.lr=1e999", "seed=-1e999",
     'regularizers.l2={"lambda": 1, "lambda": 2}', "a" * 10_000 + "=1", "=", "optim.lr=", "train.steps=1.5"]),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=30)))


@SETTINGS
@given(params=st.fixed_dictionaries({}, optional={
    "preset": st.lists(st.one_of(st.text(max_size=20), st.sampled_from(["noisy-labels", "x" * 10_000])),
                       max_size=2),
    "variant": st.lists(st.text(max_size=20), max_size=2),
    "set": st.lists(url_parts, max_size=4),
}))
def test_from_query_never_raises(params: dict[str, list[str]]) -> None:
    view = labstate.from_query(params, "grokking-quadratic")
    assert view.preset in labstate.preset_ids()
    for problem in view.problems:
        assert "\n" not in problem and len(problem) < 1_000, problem[:500]
    for key, _ in view.assignments:  # every kept assignment is a plain dotted key
        assert re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key), key


def test_from_query_absurd_set_loads_the_preset_with_a_warning() -> None:
    view = labstate.from_query({"preset": ["noisy-labels"], "set": ["optim.lr=" + "[" * 50_000, "optim.lr=0.5"]},
                               "grokking-quadratic")
    assert view.preset == "noisy-labels" and view.assignments == [("optim.lr", 0.5)]
    assert len(view.problems) == 1 and "nested deeper than 32" in view.problems[0]
    assert len(view.problems[0]) < 300
