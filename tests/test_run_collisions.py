"""Two writers on one run, through the public CLI on the session's Ray: the second is refused with a
message naming the holder, and the first run's checkpoints and config are its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vae.runlock import LEASE_FILE

REPO = Path(__file__).resolve().parents[1]


def _start(module: str, args: list[str], ray_address: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(module: str, args: list[str], ray_address: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    ends = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < ends, f"{path} never appeared"
        time.sleep(0.2)


def test_a_second_train_of_the_same_run_is_refused_while_the_first_trains(ray_local, small_parquet, tmp_path):
    runs = tmp_path / "runs"
    common = ["--data", small_parquet, "--out", str(runs), "--name", "dup", "--model", "tiny"]
    first = _start("jobs.train", [*common, "--epochs", "3"], ray_local)
    try:
        _wait_for(runs / "dup" / LEASE_FILE, first)
        second = _run("jobs.train", [*common, "--epochs", "5", "--resume"], ray_local)
        out, err = first.communicate(timeout=900)
    finally:
        first.kill()
    assert second.returncode == 1, second.stderr[-3000:]
    assert f"another training run is writing here (pid {first.pid} on " in second.stderr, second.stderr[-3000:]
    assert first.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["latest_metrics"]["epoch"] == 3
    stored = json.loads((runs / "dup" / "run_config.json").read_text())
    assert stored["train"]["epochs"] == 3, "the run's config is the first writer's"
    assert not (runs / "dup" / LEASE_FILE).exists(), "released at the end"


def test_a_second_sweep_of_the_same_name_is_refused_while_the_first_runs(ray_local, small_parquet, tmp_path):
    sweeps = tmp_path / "sweeps"
    args = ["--data", small_parquet, "--out", str(sweeps), "--space", "tune_spaces/smoke.yaml", "--name", "same"]
    first = _start("jobs.tune", [*args, "--max-concurrent", "1"], ray_local)
    try:
        _wait_for(sweeps / "same" / LEASE_FILE, first)
        second = _run("jobs.tune", [*args, "--resume"], ray_local)
    finally:
        first.terminate()
        first.communicate(timeout=300)
    assert second.returncode == 1, second.stderr[-3000:]
    assert f"another sweep is writing here (pid {first.pid} on " in second.stderr, second.stderr[-3000:]
