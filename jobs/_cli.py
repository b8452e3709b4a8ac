"""What every job shares: building its configs from the command line, and failing the same way
(a message naming the culprit on stderr, the same as JSON last on stdout, exit status 1)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

from vae.errors import UserError

# What a job reports as a user's mistake: every UserError, and the ValueErrors of a bad value
# (ConfigError is both).
USER_ERRORS = (UserError, ValueError)

# A shorthand flag's argparse dest -> the dotted config key(s) it sets.
Shorthands = Mapping[str, "str | tuple[str, ...]"]


# An error is one line: a longer message (a storage client's or Ray's, with its traceback) is cut here.
MAX_ERROR_CHARS = 500


def brief(message: str) -> str:
    """``message`` as one line of at most :data:`MAX_ERROR_CHARS` characters."""
    line = " ".join(message.split())
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


def fail(job: str, message: str, verbose: bool = False) -> int:
    """Report ``message`` for ``job`` in one line (all of it with ``verbose``) and return the exit status (1)."""
    short = brief(message)
    if verbose and short != message:
        print(f"{job}: error, in full:\n{message}", file=sys.stderr)
    hint = " (all of it: --verbose)" if short != message and not verbose else ""
    print(f"{job}: error: {short}{hint}", file=sys.stderr)
    print(json.dumps({"error": short}))
    return 1


def positive_int(text: str) -> int:
    """argparse type of a count (CPUs, blocks): a whole number of at least 1, refused before anything starts."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def digit(text: str) -> int:
    """argparse type of a spoken digit: a whole number the dataset has a class for."""
    from vae.config import N_DIGITS

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a digit, got {text!r}") from None
    if not 0 <= value < N_DIGITS:
        raise argparse.ArgumentTypeError(f"digits are 0-{N_DIGITS - 1}, got {value}")
    return value


class _Help(argparse.HelpFormatter):
    """--help that ends each option's line with its default, unless the line says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default == [] or default is argparse.SUPPRESS
        if action.option_strings and not unset and "default" not in text:
            text += " (default %(default)s)"
        return text


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of ``python -m <module>``, described by the first paragraph of its ``doc``,
    with the ``--verbose`` every job takes."""
    p = argparse.ArgumentParser(
        prog=f"python -m {module}", description=(doc or "").split("\n\n")[0], formatter_class=_Help
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="every progress line (each epoch, Griffin-Lim batch) and TensorFlow's and Ray's own logs; "
        "by default a line per phase and no library's start-up lines",
    )
    return p


def add_option(p: argparse.ArgumentParser, name: str, *old: str, required: bool = False, **kwargs: Any) -> None:
    """``p.add_argument(name, **kwargs)`` and the option's ``old`` spellings, kept for one release: they
    set the same value, are left out of --help, and one of them may stand for a ``required`` option."""
    dest = name.lstrip("-").replace("-", "_")
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument(name, dest=dest, **kwargs)
    kept = {k: v for k, v in kwargs.items() if k in ("type", "action", "const", "choices")}
    for spelling in old:
        group.add_argument(spelling, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kept)


def add_out(p: argparse.ArgumentParser, what: str, *old: str, required: bool = True, **kwargs: Any) -> None:
    """``--out``, where a job writes (``what``): every job's one name for it; ``old``: its former
    spellings (``--output``, ``--storage``, ``--dest``)."""
    add_option(p, "--out", *old, required=required, help=what, **{"metavar": "DIR_OR_S3", **kwargs})


def add_recogniser(p: argparse.ArgumentParser, what: str) -> None:
    """``--recogniser``, a digit recogniser written by jobs.train_classifier (formerly ``--classifier``)."""
    add_option(p, "--recogniser", "--classifier", metavar="DIR_OR_S3", help=f"{what} (default none)")


def add_num_cpus(p: argparse.ArgumentParser) -> None:
    """``--num-cpus``, the CPUs of the Ray instance a job starts when it is not given a cluster."""
    p.add_argument(
        "--num-cpus",
        type=positive_int,
        help="CPUs of the local Ray instance (default every CPU; ignored with RAY_ADDRESS)",
    )


def show_config_defaults(p: argparse.ArgumentParser, shorthands: Shorthands, configs: Mapping[str, Any]) -> None:
    """The help of each shorthand option that defaults to None (its config key keeps its value) ends
    with that value; ``configs``: the config dataclass behind each first part of a key ("" for a
    RunConfig, whose sections are the first parts)."""
    from vae.config import to_dict

    values = {key: v for root, config in configs.items() for key, v in _dotted(to_dict(config), root).items()}
    for action in p._actions:
        keys = shorthands.get(action.dest)
        key = keys if isinstance(keys, str) else keys[0] if keys else None
        turns_off = action.nargs == 0 and action.const is False  # a --no-X flag: X's default is not its own
        if key in values and action.default is None and "default" not in (action.help or "") and not turns_off:
            action.help = f"{action.help} (default {_shown(values[key])})"


def _dotted(data: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Nested config data as dotted keys under ``prefix``."""
    out: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        out.update(_dotted(value, key) if isinstance(value, Mapping) else {key: value})
    return out


def _shown(value: Any) -> str:
    """A config value as --help shows it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def log_to_stderr(verbose: bool = False) -> None:
    """The project's log (``vae.*``) on stderr, a timestamp and the module on each line: INFO (one line
    per phase) by default, everything with ``verbose``, which also lets TensorFlow's and Ray's logs
    through in this process and the Ray workers it starts (:func:`vae.console.configure`)."""
    from vae import console

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s] %(message)s", "%H:%M:%S"))
    root = logging.getLogger("vae")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    console.configure(verbose)


def run(job: str, fn: Callable[[], int], verbose: bool = False) -> int:
    """``fn()``, the body of ``job``, logging as :func:`log_to_stderr` says; a user error becomes
    :func:`fail`'s report and exit status 1."""
    log_to_stderr(verbose)
    try:
        return fn()
    except USER_ERRORS as exc:
        return fail(job, str(exc), verbose)


def add_config_arguments(p: argparse.ArgumentParser, example: str = "train.learning_rate=3e-4") -> None:
    """``--config FILE`` and ``--set KEY=VALUE``, the same in every job that builds configs."""
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON of config sections, e.g. {train: {epochs: 5}}, applied first (default none)",
    )
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="set",
        help=f"set one config key (a YAML value), e.g. {example}; repeatable, applied after "
        "--config and the other flags, which are shorthands for such keys (default none)",
    )


def config_overrides(args: argparse.Namespace, shorthands: Shorthands) -> dict[str, Any]:
    """The one place command-line options become config: dotted keys and their values from
    ``--config``, then each shorthand flag given (not None), then each ``--set``, later ones winning."""
    from vae.overrides import parse_assignment, read_file

    out = read_file(args.config) if args.config else {}
    for dest, keys in shorthands.items():
        value = getattr(args, dest)
        if value is not None:
            out.update({key: value for key in ((keys,) if isinstance(keys, str) else keys)})
    out.update(parse_assignment(item) for item in args.set)
    return out


def root_overrides(args: argparse.Namespace, shorthands: Shorthands, root: str) -> dict[str, Any]:
    """The command line's keys under ``root.`` (without it): ``--set sampling.harmonic_depth_db=15`` ->
    ``{"harmonic_depth_db": 15}``."""
    from vae.overrides import split

    return split(config_overrides(args, shorthands), [root])[root]


def job_config(args: argparse.Namespace, cls: type, root: str, shorthands: Shorthands, others: tuple[str, ...] = ()):
    """A job's own config (``cls``: EvalConfig, ServeConfig, ...) from its defaults, ``--config``, the
    job's shorthand flags and ``--set``, all keys under ``root.`` (or under one of ``others``, which the job
    reads with :func:`root_overrides`); any other key is an error naming it."""
    from vae.config import ConfigError
    from vae.overrides import apply_overrides, split

    parts = split(config_overrides(args, shorthands), [root, *others])
    if parts[""]:
        settings = f"{root}.* ({cls.__name__})" + "".join(f" and {r}.*" for r in others)
        raise ConfigError(f"{sorted(parts[''])[0]}: not a key of this job; its settings are {settings}")
    try:
        return apply_overrides(cls(), parts[root])
    except ConfigError as exc:
        key = str(exc).split(":", 1)[0]
        if key in parts[root]:  # named without its root: name it as the user wrote it
            raise ConfigError(f"{root}.{exc}") from None
        raise
