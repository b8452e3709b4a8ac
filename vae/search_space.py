"""Sweep search spaces as YAML data, validated on load.

A space file names a base configuration (presets plus fixed overrides), the
hyperparameters to search as dotted ``RunConfig`` keys with a distribution each,
and the sweep's scheduler and search algorithm::

    base: {model: default}            # model preset; features come from the data
    fixed: {train.epochs: 20, train.batch_size: 32}
    params:
      model.latent_dim: {choice: [16, 32, 64, 128]}
      prior.kind: {choice: [normal, mixture]}
      loss.recon_weight: {loguniform: [1.0e4, 1.0e8]}
      train.learning_rate: {loguniform: [3.0e-4, 3.0e-3]}
    scheduler: {type: asha, grace_period: 2, reduction_factor: 3}
    search: {type: optuna, seed: 0}   # optional: start_with: [{model.latent_dim: 32, ...}, ...]
    num_samples: 20

Scheduler settings (:data:`SCHEDULER_KEYS`): ``asha`` takes ``grace_period`` and
``max_t`` (integer epochs, 1 <= grace_period <= max_t <= train.epochs; max_t defaults
to train.epochs) and ``reduction_factor`` (> 1); ``fifo`` takes none. Search settings:
``seed`` (an integer >= 0) and ``start_with`` (configurations tried first, each giving every
searched key a value inside the space). A sweep always minimises the weight-independent objective
(``vae.tuning``), so there is no ``metric`` key. Every error names the file and the
key, and is raised before anything is written or any trial starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vae.compat import MOVED_KEYS
from vae.config import (
    MODEL_PRESETS,
    ConfigError,
    LossConfig,
    ModelConfig,
    PriorConfig,
    RunConfig,
    SamplingConfig,
    SweepConfig,
    TrainConfig,
    preset,
)
from vae.overrides import apply_overrides, read_yaml_file  # noqa: F401  (apply_overrides re-exported)

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint", "lograndint")
TOP_LEVEL = ("base", "fixed", "params", "scheduler", "search", "num_samples", "description")
SCHEDULER_KEYS = {"asha": ("type", "grace_period", "reduction_factor", "max_t"), "fifo": ("type",)}
SEARCH_KEYS = {"optuna": ("type", "seed", "start_with"), "random": ("type", "seed", "start_with")}
# prior.components takes whole numbers only: these distributions give them.
INTEGER_DISTRIBUTIONS = ("choice", "randint", "lograndint")
SECTIONS = {
    "model": ModelConfig,
    "prior": PriorConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "sampling": SamplingConfig,
}
COMPONENTS_KEY = "prior.components"


class SpaceError(ConfigError):
    """A search-space file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Param:
    key: str
    kind: str
    args: tuple

    def to_tune(self):
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        low, high = self.args
        return {
            "uniform": tune.uniform,
            "loguniform": tune.loguniform,
            "randint": lambda lo, hi: tune.randint(lo, hi + 1),
            "lograndint": lambda lo, hi: tune.lograndint(lo, hi + 1),
        }[self.kind](low, high)

    def grid(self, n: int = 3) -> list:
        """A few representative values (for reports and benchmarks)."""
        if self.kind == "choice":
            return list(self.args)
        low, high = self.args
        if self.kind in ("loguniform", "lograndint"):
            vals = [math.exp(math.log(low) + i * (math.log(high) - math.log(low)) / (n - 1)) for i in range(n)]
        else:
            vals = [low + i * (high - low) / (n - 1) for i in range(n)]
        return [round(v) for v in vals] if self.kind.endswith("int") else vals


@dataclass(frozen=True)
class SearchSpace:
    source: str
    model_preset: str = "default"
    fixed: Mapping[str, Any] = field(default_factory=dict)
    params: tuple[Param, ...] = ()
    scheduler: Mapping[str, Any] = field(default_factory=lambda: {"type": "asha"})
    search: Mapping[str, Any] = field(default_factory=lambda: {"type": "optuna"})
    num_samples: int = 8
    # Configurations the search tries first (every searched key given), e.g. the default configuration.
    start_with: tuple[Mapping[str, Any], ...] = ()

    def tune_param_space(self) -> dict:
        return {p.key: p.to_tune() for p in self.params}

    def run_config(self, sampled: Mapping[str, Any], base: RunConfig) -> RunConfig:
        """The trial's RunConfig: ``base`` + model preset + fixed values + the sampled values."""
        values = {**self.fixed, **sampled}
        return apply_overrides(dataclasses.replace(base, model=preset(ModelConfig, self.model_preset)), values)


def load_space(path: str | os.PathLike) -> SearchSpace:
    """Read and validate a space file; raise :class:`SpaceError` naming the file and key."""
    src = os.fspath(path)
    try:
        raw = read_yaml_file(src, src)
    except FileNotFoundError:
        raise SpaceError(f"{src}: search-space file not found") from None
    except ConfigError as exc:
        raise SpaceError(str(exc)) from None
    return parse_space(raw, src)


def _failer(src: str):
    """``fail(key, message)``: the SpaceError naming ``src`` and the key."""

    def fail(key: str, msg: str) -> SpaceError:
        return SpaceError(f"{src}: {key}: {msg}")

    return fail


def parse_space(raw: Any, src: str = "<space>") -> SearchSpace:
    fail = _failer(src)
    _check_top_level(raw, fail)
    model_preset = _parse_base(raw, fail)
    fixed = _parse_fixed(raw, fail)
    params = _parse_params(raw, fixed, fail)
    num_samples = raw.get("num_samples", SearchSpace.num_samples)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise fail("num_samples", f"must be a positive integer, got {num_samples!r}")
    scheduler = _settings(raw, "scheduler", SCHEDULER_KEYS, "asha", fail)
    search = _settings(raw, "search", SEARCH_KEYS, "optuna", fail)
    if "seed" in search and not _whole(search["seed"], 0):
        raise fail("search.seed", f"must be an integer >= 0, got {search['seed']!r}")
    start_with = search.pop("start_with", None) or []
    if not isinstance(start_with, list):
        raise fail("search.start_with", "expected a list of configurations")
    start_with = tuple(_parse_start(i, point, params, fail) for i, point in enumerate(start_with))
    space = SearchSpace(src, model_preset, dict(fixed), tuple(params), scheduler, search, num_samples, start_with)
    _check_configs(space, fail)
    return space


def _check_top_level(raw: Any, fail) -> None:
    if not isinstance(raw, dict):
        raise fail("(top level)", "expected a mapping")
    for key in raw:
        if key == "metric":
            raise fail(
                "metric",
                "not part of the format: a sweep always minimises the weight-independent objective "
                "(val_recon_mse / val_variance + 1 - digit_accuracy, and the terms of --objective: see vae.objective)",
            )
        if key not in TOP_LEVEL:
            raise fail(str(key), f"unknown key; allowed: {list(TOP_LEVEL)}")


def _parse_base(raw: dict, fail) -> str:
    """The model preset the space starts from."""
    base = raw.get("base") or {}
    if not isinstance(base, dict) or set(base) - {"model"}:
        raise fail("base", "expected a mapping with only 'model' (a model preset name)")
    model_preset = base.get("model", "default")
    if model_preset not in MODEL_PRESETS:
        raise fail("base.model", f"unknown model preset {model_preset!r}; choose from {sorted(MODEL_PRESETS)}")
    return model_preset


def _parse_fixed(raw: dict, fail) -> dict[str, Any]:
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise fail("fixed", "expected a mapping of dotted config keys to values")
    for key in fixed:
        _check_key(key, f"fixed.{key}", fail)
    return {k: _number(v) for k, v in fixed.items()}


def _parse_params(raw: dict, fixed: Mapping[str, Any], fail) -> list[Param]:
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict) or not params_raw:
        raise fail("params", "expected a non-empty mapping of dotted config keys to distributions")
    params = []
    for key, spec in params_raw.items():
        where = f"params.{key}"
        _check_key(key, where, fail)
        if key in fixed:
            raise fail(where, "is both fixed and searched")
        params.append(_parse_param(key, spec, where, fail))
        if key == COMPONENTS_KEY and params[-1].kind not in INTEGER_DISTRIBUTIONS:
            raise fail(where, f"takes whole numbers: use one of {list(INTEGER_DISTRIBUTIONS)}, not {params[-1].kind}")
    return params


def _check_configs(space: SearchSpace, fail) -> None:
    """Every corner of the space and every starting point must make a valid RunConfig (catch e.g. a
    negative learning rate now), and the asha scheduler's settings must fit the epochs."""
    try:
        epochs = space.run_config({}, RunConfig()).train.epochs
    except ConfigError as exc:
        raise fail("fixed", str(exc)) from None
    for p in space.params:
        for value in p.grid(2):
            try:
                space.run_config({p.key: value}, RunConfig())
            except ConfigError as exc:
                raise fail(f"params.{p.key}", f"value {value!r} gives an invalid config: {exc}") from None
    for i, point in enumerate(space.start_with):
        try:
            space.run_config(point, RunConfig())
        except ConfigError as exc:
            raise fail(f"search.start_with[{i}]", f"gives an invalid config: {exc}") from None
    if space.scheduler["type"] == "asha":
        if "train.epochs" in [p.key for p in space.params]:
            raise fail(
                "params.train.epochs",
                "cannot be searched with the asha scheduler: its rungs need one epoch count "
                "(fix train.epochs; the scheduler stops weak trials early)",
            )
        asha_settings(space.scheduler, epochs, SweepConfig(), fail)


def _parse_start(i: int, point: Any, params: list[Param], fail) -> dict:
    where = f"search.start_with[{i}]"
    if not isinstance(point, dict):
        raise fail(where, "expected a mapping of searched keys to values")
    keys = {p.key for p in params}
    if set(point) != keys:
        missing, extra = sorted(keys - set(point)), sorted(set(point) - keys)
        raise fail(where, f"must give every searched key and only those; missing {missing}, not searched {extra}")
    out = {}
    for p in params:
        value = _number(point[p.key])
        inside = (
            value in p.args
            if p.kind == "choice"
            else (isinstance(value, (int, float)) and not isinstance(value, bool) and p.args[0] <= value <= p.args[1])
        )
        if not inside:
            raise fail(f"{where}.{p.key}", f"{value!r} is outside the searched {p.kind} {list(p.args)}")
        out[p.key] = value
    return out


def _whole(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _settings(raw: dict, section: str, allowed: Mapping[str, tuple[str, ...]], default: str, fail) -> dict:
    """The ``scheduler`` or ``search`` mapping: a known type and only the keys that type takes."""
    settings = raw.get(section)
    settings = {"type": default} if settings is None else settings
    if not isinstance(settings, dict):
        raise fail(section, f"expected a mapping such as {{type: {default}}}, got {settings!r}")
    settings = {"type": default, **settings}
    kind = settings["type"]
    if kind not in allowed:
        raise fail(f"{section}.type", f"{kind!r}; choose from {list(allowed)}")
    for key in settings:
        if key not in allowed[kind]:
            raise fail(
                f"{section}.{key}", f"unknown setting of {section} type {kind!r}; allowed: {list(allowed[kind])}"
            )
    return settings


def asha_settings(scheduler: Mapping[str, Any], epochs: int, defaults: SweepConfig, fail=None) -> dict[str, Any]:
    """ASHA's ``max_t``, ``grace_period`` and ``reduction_factor``: the space's, else ``defaults``'
    (max_t: ``epochs``), checked against the epochs every trial runs (Ray asserts only some of this,
    and only once running)."""
    fail = fail or _failer("<space>")
    max_t = scheduler.get("max_t", epochs)
    if not _whole(max_t, 1) or max_t > epochs:
        raise fail("scheduler.max_t", f"must be an integer from 1 to train.epochs={epochs}, got {max_t!r}")
    grace = scheduler.get("grace_period", defaults.grace_period)
    if not _whole(grace, 1) or grace > max_t:
        raise fail(
            "scheduler.grace_period",
            f"must be an integer from 1 to max_t={max_t} (train.epochs={epochs}), got {grace!r}",
        )
    factor = scheduler.get("reduction_factor", defaults.reduction_factor)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 1:
        raise fail("scheduler.reduction_factor", f"must be a number above 1, got {factor!r}")
    return {"max_t": max_t, "grace_period": grace, "reduction_factor": float(factor)}


def _number(value: Any) -> Any:
    """PyYAML reads ``1.0e4`` (no sign in the exponent) as a string; take it as the number it means."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


# Keys a sweep sets for every trial itself: a space or an override naming one would change nothing.
SWEEP_RANKED = {
    "train.rank_by": "a sweep ranks every trial's checkpoints by its objective (vae.objective; sweep.objective)",
    "train.rank_samples_per_digit": "a sweep scores sweep.n_per_digit samples of each digit",
}


def _check_key(key: Any, where: str, fail) -> None:
    if not isinstance(key, str) or "." not in key:
        raise fail(where, "keys are dotted config paths such as 'model.latent_dim'")
    if key in MOVED_KEYS:
        raise fail(where, f"has moved: write {MOVED_KEYS[key]!r}")
    if key in SWEEP_RANKED:
        raise fail(where, f"{SWEEP_RANKED[key]}: it has no place in a space")
    section, name = key.split(".", 1)
    if section not in SECTIONS:
        raise fail(where, f"unknown section {section!r}; choose from {sorted(SECTIONS)}")
    names = {f.name for f in dataclasses.fields(SECTIONS[section])}
    if name not in names:
        raise fail(where, f"unknown config key {name!r} in {section}; known: {sorted(names)}")


def _parse_param(key: str, spec: Any, where: str, fail) -> Param:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise fail(
            where, f"expected one distribution, e.g. {{loguniform: [1e-4, 1e-2]}}; choose from {list(DISTRIBUTIONS)}"
        )
    ((kind, args),) = spec.items()
    if kind not in DISTRIBUTIONS:
        raise fail(where, f"unknown distribution {kind!r}; choose from {list(DISTRIBUTIONS)}")
    if not isinstance(args, list) or not args:
        raise fail(f"{where}.{kind}", "expected a non-empty list")
    args = [_number(a) for a in args]
    if kind == "choice":
        return Param(key, kind, tuple(args))
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise fail(f"{where}.{kind}", f"expected [low, high] numbers, got {args!r}")
    low, high = args
    if not low < high:
        raise fail(f"{where}.{kind}", f"low {low!r} must be below high {high!r}")
    if kind.startswith("log") and low <= 0:
        raise fail(f"{where}.{kind}", f"log-scale bounds must be positive, got {low!r}")
    if kind.endswith("int") and not (float(low).is_integer() and float(high).is_integer()):
        raise fail(f"{where}.{kind}", f"integer bounds expected, got {args!r}")
    return Param(key, kind, (low, high))
