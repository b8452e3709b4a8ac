"""Sweep search spaces as YAML data, validated on load.

A space file names a base configuration (presets plus fixed overrides), the
hyperparameters to search as dotted ``RunConfig`` keys with a distribution each,
and the sweep's scheduler and search algorithm::

    base: {model: default}            # model preset; features come from the data
    fixed: {train.epochs: 20, train.batch_size: 32}
    params:
      model.latent_dim: {choice: [16, 32, 64, 128]}
      prior.kind: {choice: [normal, mixture]}
      prior.recon_weight: {loguniform: [1.0e4, 1.0e8]}
      train.learning_rate: {loguniform: [3.0e-4, 3.0e-3]}
    scheduler: {type: asha, grace_period: 2, reduction_factor: 3}
    search: {type: optuna, seed: 0}
    num_samples: 20

Every error names the file and the key, and is raised before any trial starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from vae.config import (
    MODEL_PRESETS,
    ConfigError,
    ModelConfig,
    PriorConfig,
    RunConfig,
    SamplingConfig,
    TrainConfig,
    from_dict,
    preset,
    to_dict,
)

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint", "lograndint")
SCHEDULERS = ("asha", "fifo")
SEARCHERS = ("optuna", "random")
TOP_LEVEL = ("base", "fixed", "params", "scheduler", "search", "num_samples", "metric", "description")
SECTIONS = {"model": ModelConfig, "prior": PriorConfig, "train": TrainConfig, "sampling": SamplingConfig}


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
    metric: str = "objective"

    def tune_param_space(self) -> dict:
        return {p.key: p.to_tune() for p in self.params}

    def run_config(self, sampled: Mapping[str, Any], base: RunConfig) -> RunConfig:
        """The trial's RunConfig: ``base`` + model preset + fixed values + the sampled values."""
        return apply_overrides(
            dataclasses.replace(base, model=preset(ModelConfig, self.model_preset)), {**self.fixed, **sampled}
        )


def apply_overrides(cfg: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """Apply dotted-key overrides (``{"model.latent_dim": 32}``) to a RunConfig, validated."""
    data = to_dict(cfg)
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        data[section][name] = value
    return from_dict(RunConfig, data).validate()


def load_space(path: str | os.PathLike) -> SearchSpace:
    """Read and validate a space file; raise :class:`SpaceError` naming the file and key."""
    src = os.fspath(path)
    try:
        with open(src) as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise SpaceError(f"{src}: search-space file not found") from None
    except yaml.YAMLError as exc:
        raise SpaceError(f"{src}: not valid YAML: {exc}") from None
    return parse_space(raw, src)


def parse_space(raw: Any, src: str = "<space>") -> SearchSpace:
    def fail(key: str, msg: str) -> SpaceError:
        return SpaceError(f"{src}: {key}: {msg}")

    if not isinstance(raw, dict):
        raise fail("(top level)", "expected a mapping")
    for key in raw:
        if key not in TOP_LEVEL:
            raise fail(str(key), f"unknown key; allowed: {list(TOP_LEVEL)}")

    base = raw.get("base") or {}
    if not isinstance(base, dict) or set(base) - {"model"}:
        raise fail("base", "expected a mapping with only 'model' (a model preset name)")
    model_preset = base.get("model", "default")
    if model_preset not in MODEL_PRESETS:
        raise fail("base.model", f"unknown model preset {model_preset!r}; choose from {sorted(MODEL_PRESETS)}")

    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise fail("fixed", "expected a mapping of dotted config keys to values")
    for key in fixed:
        _check_key(key, f"fixed.{key}", fail)
    fixed = {k: _number(v) for k, v in fixed.items()}

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

    scheduler = dict(raw.get("scheduler") or {"type": "asha"})
    if scheduler.get("type") not in SCHEDULERS:
        raise fail("scheduler.type", f"{scheduler.get('type')!r}; choose from {list(SCHEDULERS)}")
    for k, v in scheduler.items():
        if k in ("grace_period", "reduction_factor", "max_t") and (not isinstance(v, (int, float)) or v <= 0):
            raise fail(f"scheduler.{k}", f"must be a positive number, got {v!r}")
    search = dict(raw.get("search") or {"type": "optuna"})
    if search.get("type") not in SEARCHERS:
        raise fail("search.type", f"{search.get('type')!r}; choose from {list(SEARCHERS)}")

    num_samples = raw.get("num_samples", 8)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise fail("num_samples", f"must be a positive integer, got {num_samples!r}")
    metric = raw.get("metric", "objective")
    if not isinstance(metric, str):
        raise fail("metric", "must be a string")

    space = SearchSpace(src, model_preset, dict(fixed), tuple(params), scheduler, search, num_samples, metric)
    # Every corner of the space must make a valid RunConfig: catch e.g. a negative learning rate now.
    for p in params:
        for value in p.grid(2):
            try:
                space.run_config({p.key: value}, RunConfig())
            except ConfigError as exc:
                raise fail(f"params.{p.key}", f"value {value!r} gives an invalid config: {exc}") from None
    try:
        space.run_config({}, RunConfig())
    except ConfigError as exc:
        raise fail("fixed", str(exc)) from None
    return space


def _number(value: Any) -> Any:
    """PyYAML reads ``1.0e4`` (no sign in the exponent) as a string; take it as the number it means."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_key(key: Any, where: str, fail) -> None:
    if not isinstance(key, str) or "." not in key:
        raise fail(where, "keys are dotted config paths such as 'model.latent_dim'")
    section, name = key.split(".", 1)
    if section not in SECTIONS:
        raise fail(where, f"unknown section {section!r}; choose from {sorted(SECTIONS)}")
    names = {f.name for f in dataclasses.fields(SECTIONS[section])}
    if name not in names:
        raise fail(where, f"unknown config key {name!r} in {section}; known: {sorted(names)}")


def _parse_param(key: str, spec: Any, where: str, fail) -> Param:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise fail(where, f"expected one distribution, e.g. {{loguniform: [1e-4, 1e-2]}}; choose from {list(DISTRIBUTIONS)}")
    (kind, args), = spec.items()
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
