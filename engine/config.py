"""RunConfig: the one typed, validated description of a run.

Everything a run needs is here, validated *before* anything is built (scikit-learn style), so a
bad value fails in milliseconds with a one-line message naming the dotted key, not minutes later
inside the training loop. Unknown keys are errors (README, "Config keys").

The sections hold only what every run has (sizes, label noise, learning rate, ...). Which
datasets, models, optimizers, schedules and losses exist — the default of each section included —
and the keys each of them reads (``data.p``, ``loss.q``, ...) is declared by the plugins themselves
(``engine/plugin.py``) and looked up in their registries here, so adding one is adding a file.

Load/dump round-trips through JSON and (safe) YAML. ``apply_overrides`` implements
``--set a.b=v``: the value string is parsed as JSON when it can be (numbers, booleans, lists),
otherwise kept as a string, and pydantic then coerces it to the field's declared type.
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from engine import safe_input
from engine.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import ModelWrapValidatorHandler, SerializerFunctionWrapHandler

    from engine.plugin import Param, Plugin
    from engine.registry import Registry

__all__ = ["ConfigError", "DataConfig", "LossConfig", "ModelConfig", "OptimConfig", "OutcomeConfig", "RunConfig",
           "TrainConfig"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def registries(cls) -> dict[str, Registry[Any]]:
        """Fields whose value names a plugin, with the registry that plugin lives in."""
        return {}

    @classmethod
    def choices(cls, field: str = "name") -> tuple[str, ...]:
        """The allowed values of a choice field: registered plugin names, or the field's literal values."""
        registry = cls.registries().get(field)
        if registry is not None:
            return tuple(registry.names())
        return typing.get_args(cls.model_fields[field].annotation)


def _registry_default(section: type[_Section], field: str = "name") -> str:
    """The plugin a section gets when the config names none: the family's registry declares it."""
    default = section.registries()[field].default
    assert default is not None, f"{section.__name__}.{field}: its registry declares no default"
    return default


class _PluginSection(_Section):
    """A section whose plugins declare their own keys (``data.p``, ``optim.momentum``, ``loss.q``).

    The plugins' ``Param``s validate those keys; the values live beside the common fields, are
    read as attributes (``cfg.data.p``) and are dumped flat, so the config key contract is the
    same as when every key was a field. ``_STRICT`` sections (data) keep only the selected
    plugin's keys and refuse another plugin's key set to a non-default value; the others keep
    every declared key (an optimizer ignores the keys it does not read, as it always has).
    """

    _FAMILY: ClassVar[str] = ""
    _STRICT: ClassVar[bool] = False
    _LEGACY_KEYS: ClassVar[frozenset[str]] = frozenset()  # every key a pre-registry dump held
    _params: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def _selected(cls, raw: dict[str, Any]) -> list[type[Plugin]]:
        """The plugins the raw section picks (ValueError naming the field for an unknown name)."""
        out = []
        for field, registry in cls.registries().items():
            name = raw.get(field, registry.default)
            if not isinstance(name, str) or name not in registry.load():
                raise ValueError(registry.unknown(name))
            out.append(registry[name])
        return out

    @classmethod
    def declared(cls) -> dict[str, tuple[Param, list[str]]]:
        """Every key a plugin of this section declares: its spec (first declaration) and who reads it."""
        out: dict[str, tuple[Param, list[str]]] = {}
        for registry in cls.registries().values():
            for name, plugin in registry.sorted_items().items():
                for spec in plugin.params:
                    out.setdefault(spec.name, (spec, []))[1].append(name)
        return out

    @model_validator(mode="wrap")
    @classmethod
    def _plugin_params(cls, data: Any, handler: ModelWrapValidatorHandler[_PluginSection]) -> _PluginSection:
        if not isinstance(data, dict):
            return handler(data)
        selected = cls._selected(data)
        declared = cls.declared()
        if cls._STRICT:
            own = {p.name: p for plugin in selected for p in plugin.params}
        else:
            own = {name: spec for name, (spec, _) in declared.items()}
        legacy = bool(cls._LEGACY_KEYS) and data.keys() >= cls._LEGACY_KEYS
        common, params = {}, {}
        for key, value in data.items():
            if key in cls.model_fields or key not in declared:
                common[key] = value  # unknown keys are refused by pydantic, naming them
            elif key in own:
                params[key] = own[key].coerce(value, f"{cls._FAMILY}.{key}")
            elif not legacy and value != declared[key][0].default:
                readers = declared[key][1]
                raise ValueError(f"{cls._FAMILY}.{key}: {cls._FAMILY}.name={data.get('name')} does not read {key} "
                                 f"({'/'.join(readers)} does); remove it or set {cls._FAMILY}.name={readers[0]}")
            # else: another plugin's key at its default, or an old full dump: nothing to keep
        section = handler(common)
        section._params = {name: params.get(name, spec.default) for name, spec in own.items()}
        return section

    @model_serializer(mode="wrap")
    def _dump_params(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        out.update(self._params)
        return out

    def __getattr__(self, item: str) -> Any:
        """Plugin-declared keys as attributes; another plugin's key reads as its declared default."""
        if not item.startswith("_"):
            private = object.__getattribute__(self, "__pydantic_private__") or {}
            params = private.get("_params") or {}
            if item in params:
                return params[item]
            spec = type(self).declared().get(item)
            if spec is not None:
                return spec[0].default
        return super().__getattr__(item)  # type: ignore[misc]


class DataConfig(_PluginSection):
    _FAMILY: ClassVar[str] = "data"
    _STRICT: ClassVar[bool] = True
    _LEGACY_KEYS: ClassVar[frozenset[str]] = frozenset({
        "name", "n_train", "n_test", "jitter", "dim", "n_classes", "informative", "noise", "noise_type", "p", "op",
        "train_frac", "encoding", "n_labeled", "n_latents", "sparsity", "standardize", "tasks"})

    name: str = Field(default_factory=lambda: _registry_default(DataConfig),
                      description="dataset (generated or bundled with scikit-learn; nothing is downloaded)")
    n_train: int = Field(1000, ge=1, le=1_000_000, description="training examples (a fixed dataset: from its pool)")
    n_test: int = Field(1000, ge=0, le=1_000_000, description="test examples (a fixed dataset: the rest, capped)")
    noise: float = Field(0.0, ge=0, lt=1, description="label-noise rate on training labels")
    noise_type: Literal["symmetric", "class_dependent"] = Field(
        "symmetric", description="symmetric: a random other class; class_dependent: c → c + 1 (pair flip)")
    n_labeled: int = Field(0, ge=0, description="semi-supervised: labelled training examples (0 = all)")
    standardize: bool = Field(True, description="centre and scale the inputs with training-set statistics")
    tasks: int = Field(1, ge=1, le=1000, description="plasticity: tasks with fresh random labels (1 = off)")

    @classmethod
    def registries(cls) -> dict[str, Registry[Any]]:
        from engine.data import REGISTRY

        return {"name": REGISTRY}

    @model_validator(mode="after")
    def _tasks_need_plain_labels(self) -> DataConfig:
        from engine.traits import dataset_task

        if self.tasks > 1 and (self.noise > 0 or self.n_labeled or dataset_task(self.name) != "classification"):
            raise ValueError("data.tasks: random-label tasks need a classification dataset without data.noise "
                             "or data.n_labeled; set data.tasks=1 or remove those")
        return self


class ModelConfig(_PluginSection):
    _FAMILY: ClassVar[str] = "model"

    name: str = Field(default_factory=lambda: _registry_default(ModelConfig), description="architecture")
    width: int = Field(128, ge=1, le=65536, description="hidden width (the model's main size)")
    depth: int = Field(2, ge=1, le=64, description="hidden layers")
    activation: Literal["relu", "tanh", "gelu", "silu", "quadratic", "identity", "crelu"] = Field(
        "relu", description="hidden nonlinearity (crelu doubles the width; mlp only)")
    bias: bool = Field(True, description="bias terms in the linear layers")
    init_scale: float = Field(1.0, gt=0, le=1000, description="multiplies every initial weight")
    init_std: float | None = Field(None, gt=0, description="N(0, std²) init for weights; None = PyTorch default")
    dropout: float = Field(0.0, ge=0, lt=1, description="initial p of the dropout slots")

    @classmethod
    def registries(cls) -> dict[str, Registry[Any]]:
        from engine.models import REGISTRY

        return {"name": REGISTRY}


class OptimConfig(_PluginSection):
    _FAMILY: ClassVar[str] = "optim"

    name: str = Field(default_factory=lambda: _registry_default(OptimConfig), description="optimizer")
    lr: float = Field(1e-3, gt=0, le=100, description="base learning rate (live in the Lab)")
    weight_decay: float = Field(0.0, ge=0, le=100, description="coupled or decoupled, as the optimizer's summary says")
    schedule: str = Field(default_factory=lambda: _registry_default(OptimConfig, "schedule"),
                          description="learning-rate schedule over the run")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 (any schedule)")

    @classmethod
    def registries(cls) -> dict[str, Registry[Any]]:
        from engine.optim import OPTIMIZERS, SCHEDULES

        return {"name": OPTIMIZERS, "schedule": SCHEDULES}

    @model_validator(mode="after")
    def _plugin_checks(self) -> OptimConfig:
        selected = [registry[getattr(self, field)] for field, registry in self.registries().items()]
        reads = {p.name for plugin in selected for p in plugin.params}
        for key, (spec, readers) in self.declared().items():
            if spec.type is bool and key not in reads and getattr(self, key) is True:
                raise ValueError(f"optim.{key} needs optim.name={'/'.join(readers)}; "
                                 f"set optim.{key}=false or pick that optimizer")
        for plugin in selected:
            plugin.check_config(self)
        return self


class TrainConfig(_Section):
    steps: int = Field(1000, ge=1, le=10_000_000, description="optimizer steps (the run's budget)")
    batch_size: int = Field(0, ge=0, le=1_000_000, description="0 = full batch")
    eval_every: int = Field(50, ge=1, description="full train/test evaluation every k steps")
    log_every: int = Field(1, ge=1, description="record step metrics every k steps")
    snapshot_every: int = Field(0, ge=0, description="feature snapshots every k steps (0 = off)")
    threads: int = Field(0, ge=0, le=256, description="torch intra-op threads (0 = one)")


class LossConfig(_PluginSection):
    _FAMILY: ClassVar[str] = "loss"

    name: str = Field(default_factory=lambda: _registry_default(LossConfig), description="data loss")
    float64: bool = Field(False, description="compute the loss in float64 (grokking: delays softmax collapse)")

    @classmethod
    def registries(cls) -> dict[str, Registry[Any]]:
        from engine.losses import LOSSES

        return {"name": LOSSES}


class OutcomeConfig(_Section):
    """How the run's outcome verdict is judged (engine/outcome.py; README, Outcome verdicts)."""

    test_threshold: float = Field(0.95, gt=0, le=1, description="test score that counts as generalized "
                                                               "(accuracy; R² for regression/reconstruction)")


class RunConfig(_Section):
    name: str | None = Field(None, description="a name for the run, shown in listings and the app")
    preset: str | None = Field(None, description="the preset the run came from (set by --preset)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seeds data, init, data order and every technique")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    outcome: OutcomeConfig = Field(default_factory=OutcomeConfig)
    regularizers: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                    description="technique → parameters (docs/techniques.md)")
    diagnostics: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                   description="instrument → settings (docs/diagnostics.md)")

    @field_validator("diagnostics", mode="before")
    @classmethod
    def _check_diagnostics(cls, value: Any) -> dict[str, dict[str, Any]]:
        from engine.diagnostics import normalize_diagnostic_params

        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of instrument name to its settings")
        return {str(name): normalize_diagnostic_params(str(name), params) for name, params in value.items()}

    @field_validator("regularizers", mode="before")
    @classmethod
    def _check_regularizers(cls, value: Any) -> dict[str, dict[str, Any]]:
        from engine.regularizers import normalize_regularizer_params

        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of technique name to its parameters")
        return {str(name): normalize_regularizer_params(str(name), params) for name, params in value.items()}

    @model_validator(mode="after")
    def _check_combinations(self) -> RunConfig:
        from engine.compat import check_compatibility

        check_compatibility(self)
        return self

    def enabled_regularizers(self) -> dict[str, dict[str, Any]]:
        """Techniques that are switched on, with their full parameter sets (defaults filled)."""
        return {n: {k: v for k, v in p.items() if k != "enabled"} for n, p in self.regularizers.items() if p["enabled"]}

    def active_diagnostics(self) -> dict[str, dict[str, Any]]:
        """Instruments that run: those switched on here plus every ``default_on`` one that applies.

        Returns name → settings (``every`` and the instrument's params; ``every`` 0 = on demand).
        """
        from engine.diagnostics import all_diagnostics, normalize_diagnostic_params

        active = {}
        for name, cls in all_diagnostics().items():
            settings = self.diagnostics.get(name)
            if settings is None and cls.default_on:
                settings = normalize_diagnostic_params(name, {})
            if settings is not None and settings["enabled"] and cls.applies(self):
                active[name] = {k: v for k, v in settings.items() if k != "enabled"}
        return active

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _format_error(err: ValidationError) -> str:
    """First pydantic error as one line: ``optim.lr: Input should be greater than 0 (got -1.0)``."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if p != "__root__")
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{loc}': remove it or check the spelling (see the config keys in the README)"
    got = first.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {_short(got)})"
    if loc and msg.startswith((loc, "regularizers.", "diagnostics.", "model.", "data.", "optim.", "train.", "loss.")):
        loc, shown = "", ""  # our own validators already name the full key
    where = f"{loc}: " if loc else ""
    return f"{where}{msg}{shown}".replace("\n", " ")


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: a megabyte-long bad value must not become the message."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's digit limit cannot even be printed
        return f"a {type(value).__name__} too large to print"
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


_LONG_RUN = re.compile(r"\S{121,}")


def _cap(message: str) -> str:
    """Cut every run of more than 120 non-space characters (a pasted value, an absurd key) so that a
    refusal stays a short line while keeping its words — the field name and the fix."""
    return _LONG_RUN.sub(lambda m: f"{m.group()[:60]}… ({len(m.group()):,} characters)", message)


def _value_problem(err: ValueError) -> str:
    """A parser's ValueError in the user's terms (Python's digit-limit message advises a sys call)."""
    text = (str(err).splitlines() or [type(err).__name__])[0]
    if "integer string conversion" in text:
        return "a number with more than 4,300 digits; no config value needs one"
    return text


def _key(key: str) -> str:
    """A ``--set`` key as shown in a message: as typed when short and printable, else cut."""
    return key if len(key) <= 80 and key.isprintable() else _short(key)


def validate(data: dict[str, Any]) -> RunConfig:
    """Build a RunConfig or raise ConfigError with a one-line message."""
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping at top level, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_cap(_format_error(err))) from None
    except (ValueError, TypeError, ArithmeticError) as err:  # from our validators outside pydantic's wrapping
        raise ConfigError(_cap((str(err).splitlines() or [type(err).__name__])[0])) from None


def parse_value(text: str) -> Any:
    """Value of ``--set key=text``: JSON when it parses (1e-3, true, [0.9, 0.98], null), else the string.

    Raises ConfigError (without the key, which the caller adds) for text no config value can be:
    nested deeper than 32 levels, duplicate object keys, over 1 MB (engine/safe_input.py says why).
    """
    try:
        return safe_input.parse_scalar_text(text)
    except safe_input.InputError as err:
        raise ConfigError(str(err)) from None


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``a.b=v`` assignments to a plain config dict (validation happens afterwards)."""
    out = json.loads(json.dumps(data))
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {_short(item)}: expected KEY=VALUE, e.g. --set optim.lr=0.01")
        parts = key.split(".")
        if len(parts) > safe_input.MAX_DEPTH:
            raise ConfigError(f"--set {_key(key)}: more than {safe_input.MAX_DEPTH} parts in the key; "
                              "keys look like optim.lr or regularizers.l2.lambda")
        if any(not p for p in parts):
            raise ConfigError(f"--set {_short(item)}: empty part in key '{_key(key)}'")
        try:
            value = parse_value(raw)
        except ConfigError as err:
            raise ConfigError(f"--set {_key(key)}: {err}") from None
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {_key(key)}: '{_key(part)}' is a value, not a section")
            node = child
        previous = node.get(parts[-1])
        node[parts[-1]] = value
        if parts == ["data", "name"] and value != previous:
            _drop_foreign_data_keys(node)
    return out


def _drop_foreign_data_keys(data: dict[str, Any]) -> None:
    """After ``data.name`` changes, drop the keys only other datasets read (a preset's ``data.p`` must not
    block a switch to digits); keys the new dataset reads, and common keys, are kept."""
    from engine.data import REGISTRY

    name = data.get("name")
    if not isinstance(name, str) or name not in REGISTRY.load():
        return  # validation names the unknown dataset
    reads = {spec.name for spec in REGISTRY[name].params}
    for key in [k for k in data if k in DataConfig.declared() and k not in reads]:
        del data[key]


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config as plain data; hostile text becomes a one-line ConfigError.

    YAML is read with SafeLoader semantics (no object construction); size, encoding, nesting and
    duplicate keys are checked by engine/safe_input.py before or while parsing.
    """
    path = Path(path)
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = safe_input.read_text(path)
        data = safe_input.loads_json(text) if kind == "JSON" else safe_input.loads_yaml(text)
    except OSError as err:
        raise ConfigError(f"--config {path}: cannot read file ({err.strerror or type(err).__name__})") from None
    except safe_input.InputError as err:
        raise ConfigError(f"--config {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"--config {path}: not valid JSON: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"--config {path}: not valid YAML: {safe_input.yaml_problem(err)}") from None
    except ValueError as err:  # Python refuses to parse an integer of more than 4,300 digits
        raise ConfigError(f"--config {path}: not valid {kind}: {_value_problem(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: top level must be a mapping of sections")
    return data


def dump(cfg: RunConfig, path: str | Path | None = None, fmt: Literal["json", "yaml"] = "json") -> str:
    data = cfg.to_dict()
    text = json.dumps(data, indent=2) if fmt == "json" else yaml.safe_dump(data, sort_keys=False)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def loads(text: str, fmt: Literal["json", "yaml"] = "json") -> RunConfig:
    """A RunConfig from JSON or YAML text, with the same input checks as ``load_file``."""
    try:
        data = safe_input.loads_json(text) if fmt == "json" else safe_input.loads_yaml(text)
    except safe_input.InputError as err:
        raise ConfigError(f"config text: {err}") from None
    except (ValueError, yaml.YAMLError) as err:
        problem = safe_input.yaml_problem(err) if isinstance(err, yaml.YAMLError) else _value_problem(err)
        raise ConfigError(f"config text: not valid {fmt.upper()}: {problem}") from None
    return validate(data)
