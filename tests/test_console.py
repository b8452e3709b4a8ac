"""A job's console: its own lines by default, no TensorFlow, absl, CUDA or Ray internals; all of them
with --verbose."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vae import console

REPO = Path(__file__).resolve().parents[1]
# What TensorFlow, absl, CUDA and Ray's internals print, none of which a quiet job shows.
NOISE = re.compile(
    r"I0000|E0000|W0000|oneDNN|cuInit|absl|PreemptionWatcher|Requesting resources|Reporting training result"
    r"|DeprecationWarning|Progress bars disabled|Checkpoint successfully created"
)


def plain_env(**extra: str) -> dict[str, str]:
    """This environment without what :func:`vae.console.configure` sets: a user's shell."""
    drop = {*console.QUIET_ENV, console.VERBOSE_ENV}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def test_a_quiet_job_sets_each_variable_the_environment_leaves_unset(monkeypatch):
    for key in (*console.QUIET_ENV, console.VERBOSE_ENV):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_DATA_LOG_LEVEL", "DEBUG")
    console.configure(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3" and os.environ["RAY_DATA_LOG_LEVEL"] == "DEBUG"
    assert not console.is_verbose() and console.library_log_level() == "ERROR"
    assert console.worker_env() == {**console.QUIET_ENV, "RAY_DATA_LOG_LEVEL": "DEBUG"}

    console.configure(verbose=True)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" and console.is_verbose()
    assert "RAY_DEDUP_LOGS_SKIP_REGEX" not in os.environ and os.environ["RAY_DATA_LOG_LEVEL"] == "DEBUG"
    assert console.library_log_level() == "INFO" and console.worker_env()[console.VERBOSE_ENV] == "1"


def test_a_cluster_gets_the_settings_in_its_runtime_env(monkeypatch):
    from vae import raysetup

    monkeypatch.setattr(console, "worker_env", lambda: {"TF_CPP_MIN_LOG_LEVEL": "3"})
    monkeypatch.delenv(raysetup.OVERRIDE_JOB_ENV_VAR, raising=False)
    kwargs: dict = {}
    raysetup._cluster_env(kwargs)
    assert kwargs == {"runtime_env": {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3"}}}
    assert os.environ[raysetup.OVERRIDE_JOB_ENV_VAR] == "1"  # a submitted job's same variables give way


def test_the_driver_drops_ray_and_absl_lines_and_keeps_the_jobs():
    skip = re.compile(console.QUIET_ENV["RAY_DEDUP_LOGS_SKIP_REGEX"])
    dropped = [
        "[2026-12-03 16:57:58,163 E 20846 20875] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher'",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796317079.141085   21045 port.cc:153] oneDNN custom operations are on.",
        "E0000 00:00:1796317084.821958   21045 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
        "Reporting training result 1: TrainingReport(checkpoint=None, metrics={'epoch': 1})",
        "Task ServeController.graceful_shutdown failed. There are infinite retries remaining, so the task",
        "WARNING: 8 PYTHON worker processes have been started on node: ae8c66 with address: 192.0.2.2, which is 4x",
        "Detected that the Ray Train controller actor (29294f65f197) is dead. Cleaning up placement group = [...]",
    ]
    kept = [
        "epoch 41 (cap 200), 312/600 s: train loss 1.2e+04 (recon_mse 0.01, kl 3)",
        "stopping after epoch 41: another would pass the 600 s time budget",
        "run r: tiny model (4, 8) latent 16, prior normal, 2 epochs, 1 worker(s) x batch 32",
    ]
    assert [line for line in dropped if not skip.search(line)] == []
    assert [line for line in kept if skip.search(line)] == []


def test_progress_lines_are_spaced_unless_verbose(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: clock[0])
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    every = console.Every()
    said = []
    for step in range(10):
        clock[0] += console.PROGRESS_EVERY_S / 3
        said.append(every.due(last=step == 9))
    assert said == [True, False, False, True, False, False, True, False, False, True]
    monkeypatch.setenv(console.VERBOSE_ENV, "1")
    verbose = console.Every()
    assert all(verbose.due() for _ in range(3))


def test_work_on_the_side_of_a_phase_keeps_its_info_lines_to_verbose_jobs(monkeypatch, caplog):
    import logging

    logger = logging.getLogger("vae.evaluation.audio")
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    with caplog.at_level(logging.INFO, logger="vae"):
        with console.quiet_log("vae.evaluation"):
            logger.info("samples, griffin-lim: 100/100 clips")
            logger.warning("a clip is silent")
        logger.info("after: said")
        monkeypatch.setenv(console.VERBOSE_ENV, "1")
        with console.quiet_log("vae.evaluation"):
            logger.info("verbose: said")
    assert [r.getMessage() for r in caplog.records] == ["a clip is silent", "after: said", "verbose: said"]


def test_a_progress_line_off_a_terminal_prints_spaced_lines(capsys, monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    line = console.ProgressLine()
    for i in range(5):
        line(f"extract: {i}/5 inputs done")
    line.close()
    assert capsys.readouterr().out == "extract: 0/5 inputs done\n"


LOAD_TENSORFLOW = "import vae, tensorflow as tf; tf.constant(1.0) + 1; print('loaded')"


@pytest.mark.parametrize("level,quiet", [("3", True), ("0", False)])
def test_tensorflow_loads_without_a_line_unless_its_log_level_lets_info_through(level, quiet):
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_TENSORFLOW],
        cwd=REPO,
        env=plain_env(TF_CPP_MIN_LOG_LEVEL=level),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "loaded", proc.stderr[-2000:]
    assert (proc.stderr.strip() == "") is quiet, proc.stderr[-2000:]
    assert ("oneDNN" in proc.stderr) is not quiet


def test_a_short_training_run_prints_its_own_lines_only(ray_local, small_parquet, tmp_path):
    """2 epochs of `tiny` through the CLI: a handful of lines, nothing from TensorFlow or Ray; its
    workers (on the session's Ray, a cluster to the job) get the settings through runtime_env."""
    args = ["--data", small_parquet, "--out", str(tmp_path), "--name", "quiet", "--model", "tiny", "--epochs", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.train", *args],
        cwd=REPO,
        env=plain_env(RAY_ADDRESS=ray_local),
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(lines) <= 25, "\n".join(lines)
    assert [line for line in lines if NOISE.search(line)] == []
    assert any(re.search(r"epoch 2/2: train loss \S+ \(recon_mse", line) for line in lines), lines
