"""Dotted-key overrides of a config: ``train.learning_rate=3e-4`` on top of a preset or a stored config.

Every job builds its configs the same way (``jobs._cli.config_overrides``): a ``--config`` file
(YAML or JSON, config sections as nested mappings), then the job's shorthand flags (``--lr`` is
``train.learning_rate``), then each ``--set KEY=VALUE``; the result is one mapping of dotted keys
to values, split by its first part between the job's configs (``sweep.*`` to a
:class:`~vae.config.SweepConfig`, the rest to a RunConfig) and applied with
:func:`apply_overrides`. Every error is a :class:`~vae.config.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import yaml

from vae.config import ConfigError, RunConfig, Validated, from_dict, to_dict

T = TypeVar("T", bound=Validated)

# Config and search-space files are a few KB; these bounds refuse YAML bombs (aliases of aliases
# that expand to billions of values, deep nesting) before anything is built from them.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 20

# YAML 1.1 (PyYAML) reads 1e-3 and 1.0e4 as strings: numbers in this form are taken as floats.
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def load_yaml(text: str, where: str) -> Any:
    """``text`` as YAML (JSON included), refused with a ConfigError naming ``where`` if it is over
    :data:`MAX_YAML_BYTES`, would expand (aliases included) to over :data:`MAX_YAML_VALUES` values,
    or nests deeper than :data:`MAX_YAML_DEPTH`: checked on the parser's events, before any object
    is built."""
    if len(text.encode()) > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: over {MAX_YAML_BYTES} bytes; config files are a few KB")
    try:
        _check_expansion(yaml.parse(text, Loader=yaml.SafeLoader), where)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML or JSON: {exc}") from None


def _check_expansion(events: Iterable[yaml.Event], where: str) -> None:
    """Count the values the document expands to, an alias counting as all of its anchor's."""
    sizes: dict[str, int] = {}
    open_: list[list[Any]] = [[None, 0]]  # [anchor, values so far] of each collection being read
    for event in events:
        if isinstance(event, yaml.CollectionStartEvent):
            open_.append([event.anchor, 1])
            if len(open_) - 1 > MAX_YAML_DEPTH:
                raise ConfigError(f"{where}: nested over {MAX_YAML_DEPTH} levels deep")
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, n = open_.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, n = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent) and event.anchor is not None:  # an alias always names one
            anchor, n = None, sizes.get(event.anchor, 1)
        else:
            continue
        if anchor:
            sizes[anchor] = n
        open_[-1][1] += n
        if open_[-1][1] > MAX_YAML_VALUES:
            raise ConfigError(f"{where}: expands to over {MAX_YAML_VALUES} values through YAML aliases (*name)")


def read_yaml_file(path: str, where: str) -> Any:
    """The YAML file at ``path`` through :func:`load_yaml`, reading no more than its size bound."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read(MAX_YAML_BYTES + 1)
    return load_yaml(text, where)


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML reads it (ints, floats, true/false, [lists], strings), 1e-3 included."""
    return as_number(load_yaml(text, f"{text[:80]!r}"))


def as_number(value: Any) -> Any:
    """A string that spells a number in exponent form, as that number; anything else unchanged."""
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [as_number(v) for v in value]
    return value


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"train.epochs=5"`` -> ``("train.epochs", 5)``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.learning_rate=3e-4")
    return key, parse_value(value)


def read_file(path: str | os.PathLike) -> dict[str, Any]:
    """A ``--config`` file (YAML or JSON: config sections as nested mappings) as dotted keys."""
    src = os.fspath(path)
    try:
        raw = read_yaml_file(src, f"--config {src}")
    except OSError as exc:
        raise ConfigError(f"--config {src}: cannot be read: {exc.strerror or exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {src}: expected a mapping of config sections, e.g. {{train: {{epochs: 5}}}}")
    return flatten(raw)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 5}}`` -> ``{"train.epochs": 5}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = as_number(value)
    return out


def split(overrides: Mapping[str, Any], roots: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The overrides of each root (``sweep.num_samples`` -> ``{"sweep": {"num_samples": ...}}``), the
    rest under ``""``."""
    parts: dict[str, dict[str, Any]] = {root: {} for root in (*roots, "")}
    for key, value in overrides.items():
        root, _, rest = key.partition(".")
        if root in parts and rest:
            parts[root][rest] = value
        else:
            parts[""][key] = value
    return parts


def apply_overrides(cfg: T, overrides: Mapping[str, Any]) -> T:
    """``cfg`` with dotted-key overrides (``{"model.latent_dim": 32}``) applied, validated."""
    data = to_dict(cfg)
    for key, value in overrides.items():
        _assign(data, type(cfg), key, value)
    return from_dict(type(cfg), data).validate()


def apply_run_overrides(base: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """:func:`apply_overrides` for a job's RunConfig, whose features always come from its dataset."""
    features = sorted(k for k in overrides if k.split(".", 1)[0] == "features")
    if features:
        raise ConfigError(
            f"{features[0]}: the features are those the dataset was made with (jobs.preprocess --features)"
        )
    return apply_overrides(base, overrides)


def refuse(overrides: Mapping[str, Any], section: str, why: str) -> None:
    """A ConfigError naming the first override of ``section``, which this job cannot honour."""
    keys = sorted(k for k in overrides if k.split(".", 1)[0] == section)
    if keys:
        raise ConfigError(f"{keys[0]}: {why}")


def _assign(data: dict[str, Any], cls: type, key: str, value: Any) -> None:
    """Set ``data[a][b] = value`` for ``key`` ``"a.b"``, checking each part against the dataclasses."""
    *path, name = key.split(".")
    node, node_cls = data, cls
    for part in path:
        default = _field_default(node_cls, part, key)
        if not dataclasses.is_dataclass(default):
            raise ConfigError(f"{key}: {node_cls.__name__}.{part} is a value, not a section")
        node, node_cls = node[part], type(default)
    default = _field_default(node_cls, name, key)
    if dataclasses.is_dataclass(default):
        raise ConfigError(
            f"{key}: is a section, not a value; set its keys, e.g. {key}.{dataclasses.fields(default)[0].name}"
        )
    node[name] = value


def _field_default(cls: type, name: str, key: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    known = sorted(f.name for f in dataclasses.fields(cls))
    raise ConfigError(f"{key}: unknown config key {name!r} in {cls.__name__}; known: {known}")
