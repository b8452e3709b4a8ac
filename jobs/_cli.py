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


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of ``python -m <module>``, described by the first paragraph of its ``doc``,
    with the ``--verbose`` every job takes."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=(doc or "").split("\n\n")[0])
    p.add_argument(
        "--verbose",
        action="store_true",
        help="every progress line (each epoch, Griffin-Lim batch) and TensorFlow's and Ray's own logs; "
        "by default a line per phase and no library's start-up lines",
    )
    return p


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
        "--config", metavar="FILE", help="YAML or JSON of config sections, e.g. {train: {epochs: 5}}, applied first"
    )
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="set",
        help=f"set one config key (a YAML value), e.g. {example}; repeatable, applied after "
        "--config and the other flags, which are shorthands for such keys",
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


def job_config(args: argparse.Namespace, cls: type, root: str, shorthands: Shorthands):
    """A job's own config (``cls``: EvalConfig, ServeConfig, ...) from its defaults, ``--config``, the
    job's shorthand flags and ``--set``, all keys under ``root.``; any other key is an error naming it."""
    from vae.config import ConfigError
    from vae.overrides import apply_overrides, split

    parts = split(config_overrides(args, shorthands), [root])
    if parts[""]:
        raise ConfigError(f"{sorted(parts[''])[0]}: not a key of this job; its settings are {root}.* ({cls.__name__})")
    try:
        return apply_overrides(cls(), parts[root])
    except ConfigError as exc:
        key = str(exc).split(":", 1)[0]
        if key in parts[root]:  # named without its root: name it as the user wrote it
            raise ConfigError(f"{root}.{exc}") from None
        raise
