"""Config and search-space files are bounded before they are parsed: YAML bombs (aliases that
expand to billions of nodes, deep nesting, huge files) fail in a second with a one-line error,
through the public CLI, under a memory cap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# 372 bytes that expand to 10^9 strings when built.
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)
DEEP = "[" * 5000 + "]" * 5000
CAP = 2 << 30  # address space of the job's process: a bomb that got through would fail or swap, not pass

LIMITED = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
sys.argv = [{module!r}, *{args!r}]
runpy.run_module({module!r}, run_name="__main__")
"""


def _job_under_cap(module: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    script = LIMITED.format(cap=CAP, module=module, args=args)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "content, says",
    [
        (BILLION_LAUGHS, "expands to over 100000 values"),
        (DEEP, "nested over 20 levels deep"),
        ("x" * (2 << 20), "over 1048576 bytes"),
    ],
    ids=["billion-laughs", "deep", "huge"],
)
def test_a_bomb_as_a_tune_space_fails_at_once_naming_the_file(tmp_path, content, says):
    bomb = tmp_path / "space.yaml"
    bomb.write_text(content)
    proc = _job_under_cap(
        "jobs.tune",
        ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "s"), "--space", str(bomb), "--name", "n"],
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"{bomb}: {says}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert says in json.loads(proc.stdout.strip().splitlines()[-1])["error"]
    assert not (tmp_path / "s").exists(), "nothing written"


def test_a_bomb_as_a_config_file_fails_at_once_naming_the_file(tmp_path):
    bomb = tmp_path / "config.yaml"
    bomb.write_text(BILLION_LAUGHS)
    proc = _job_under_cap(
        "jobs.train",
        ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "s"), "--name", "n", "--config", str(bomb)],
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"--config {bomb}: expands to over 100000 values" in proc.stderr and "Traceback" not in proc.stderr, (
        proc.stderr
    )
    assert not (tmp_path / "s").exists()


def test_ordinary_anchors_and_nesting_still_load():
    from vae.overrides import load_yaml

    text = "base: &b {epochs: 5, batch_size: 32}\ntrain: *b\nmodel: {filters: [8, 16, 32]}\n"
    assert load_yaml(text, "x") == {
        "base": {"epochs": 5, "batch_size": 32},
        "train": {"epochs": 5, "batch_size": 32},
        "model": {"filters": [8, 16, 32]},
    }
