"""What reaches the console: the jobs' own lines by default, every library's log with ``--verbose``.

TensorFlow and Ray write from code that runs before Python could filter it (TensorFlow's C++ log and
absl's lines as its libraries load; Ray's C++ core, Ray Train's and Ray Data's loggers, deprecation
warnings in Ray's actors). They are turned down through the environment: :func:`configure` sets it in
a job's process before either library loads, a local Ray instance's workers inherit it, and a
cluster's get :func:`worker_env` in ``runtime_env``. A variable the environment already sets wins.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

VERBOSE_ENV = "FSDD_VAE_VERBOSE"
TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"
# Seconds between the progress lines of a long phase (training epochs) without --verbose.
PROGRESS_EVERY_S = 90.0

# Lines Ray forwards from its processes that the driver drops: Ray's C++ core ("[2026-01-01 10:00:00,123
# E 123 456] core_worker.cc:..."), TensorFlow's absl lines ("I0000 00:00:17.1 123 port.cc:153] ..."), and
# Ray's notices from loggers no setting reaches (Ray Train's per-epoch report, the raylet's, a cleaner's).
_NOT_FORWARDED = "|".join(
    (
        r"^\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\] ",
        r"^[DIWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] ",
        r"absl::InitializeLog",
        r"^Reporting training result \d+: ",
        r"^Task \S+ failed\. There are \w+ retries remaining",  # the raylet's, e.g. as Serve shuts down
        r"PYTHON worker processes have been started on node",  # the raylet's, as a sweep's trials start
        r"^Detected that the Ray Train controller actor \(\w+\) is dead",  # a stopped trial's clean-up
    )
)

# A quiet job's environment, and its Ray workers'.
QUIET_ENV = {
    TF_LOG_ENV: "3",  # TensorFlow's C++ log: FATAL only (its errors reach Python as exceptions)
    "RAY_DATA_LOG_LEVEL": "ERROR",  # Ray Data's notices and per-dataset summaries, in every process
    "PYTHONWARNINGS": "ignore::DeprecationWarning",  # Ray's deprecation warnings about its own internals
    "RAY_DEDUP_LOGS_SKIP_REGEX": _NOT_FORWARDED,  # read by the driver as Ray is imported
    # Ray Tune's console reporter, whose experiment header and paths print at any verbosity (its
    # silent verbosity, 0, is for the reporter this selects).
    "RAY_AIR_NEW_OUTPUT": "0",
}


def configure(verbose: bool) -> None:
    """Set this process's environment for a quiet job (each of :data:`QUIET_ENV` the environment does
    not set) or a verbose one (TensorFlow's whole C++ log, Ray's, and every epoch's line). Call it
    before TensorFlow or Ray is imported."""
    if verbose:
        for key, value in QUIET_ENV.items():
            if os.environ.get(key) == value:
                del os.environ[key]
        os.environ[TF_LOG_ENV] = "0"
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)


def is_verbose() -> bool:
    """Whether the job was started with ``--verbose`` (in its Ray workers too)."""
    return os.environ.get(VERBOSE_ENV) == "1"


def library_log_level(quiet: str = "ERROR") -> str:
    """The level of Ray's own loggers (Ray core, Train, Serve): INFO with ``--verbose``, else ``quiet``."""
    return "INFO" if is_verbose() else quiet


def worker_env() -> dict[str, str]:
    """The variables :func:`configure` sets, as this process has them: for a cluster's workers."""
    return {key: os.environ[key] for key in (*QUIET_ENV, VERBOSE_ENV) if key in os.environ}


class Every:
    """When a long phase's next progress line is due: every time with ``--verbose``, otherwise the
    first, then one per :data:`PROGRESS_EVERY_S` seconds, and the ``last``."""

    def __init__(self) -> None:
        self.every_s = 0.0 if is_verbose() else PROGRESS_EVERY_S
        self.said_at: float | None = None

    def due(self, last: bool = False) -> bool:
        """Whether to print a line now; ``last``: the phase's final line, always printed."""
        now = time.monotonic()
        if last or self.said_at is None or now - self.said_at >= self.every_s:
            self.said_at = now
            return True
        return False


class ProgressLine:
    """A long phase's progress, a line per call: on a terminal each one replaces the last in place,
    otherwise those :class:`Every` lets through are printed; ``close()`` ends the phase."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.in_place = self.stream.isatty() and not is_verbose()
        self.every, self.width = Every(), 0

    def __call__(self, text: str) -> None:
        if self.in_place:
            self.stream.write("\r" + text.ljust(self.width))
            self.stream.flush()
            self.width = len(text)
        elif self.every.due():
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """End the in-place line, so what is printed next starts a line of its own."""
        if self.in_place and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


@contextlib.contextmanager
def quiet_log(name: str) -> Iterator[None]:
    """The ``name`` logger's INFO lines dropped inside, unless ``--verbose``: what work done on the side
    of a phase (a checkpoint measured in a Train worker) says of its own steps."""
    import logging

    logger = logging.getLogger(name)
    level = logger.level
    if not is_verbose():
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """File descriptor 2 on /dev/null inside, so what C++ code writes to stderr is dropped too."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _tf_log_level() -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as TensorFlow reads it (0, everything, when unset or not a number)."""
    try:
        return int(os.environ.get(TF_LOG_ENV, "0"))
    except ValueError:
        return 0


class _SilencedLoader(importlib.abc.Loader):
    """``loader``, its module run with stderr silenced."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__spec__.loader = module.__loader__ = self.loader
        with stderr_silenced():
            self.loader.exec_module(module)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """The first ``import tensorflow``, run with stderr silenced while ``TF_CPP_MIN_LOG_LEVEL`` hides
    INFO: TensorFlow's libraries log through absl as they load (oneDNN, the CUDA probe), before
    TensorFlow reads that variable."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and _tf_log_level() >= 1:
            spec.loader = _SilencedLoader(spec.loader)
        return spec


def quiet_tensorflow_import() -> None:
    """Have this process's first ``import tensorflow`` drop what TensorFlow writes to stderr as it
    loads, unless ``TF_CPP_MIN_LOG_LEVEL`` lets INFO through (see :class:`_QuietTensorFlowImport`)."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
