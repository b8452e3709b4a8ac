"""Every module imports on its own in a fresh interpreter, the evaluation never pulls in the report, and
importing the package sets TensorFlow's CPU kernels."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

IMPORT_EACH = """
import importlib, json, sys, traceback
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=-3)
print(json.dumps(failed))
"""


def modules(*packages: str) -> list[str]:
    """Dotted names of every module under ``packages`` (folders of the repository)."""
    names = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def import_in_fresh_interpreter(names: list[str], then: str = "", env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH + then, json.dumps(names)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_every_module_imports():
    failed = json.loads(import_in_fresh_interpreter(modules("vae", "jobs")).splitlines()[-1])
    assert not failed, "\n".join(f"{name}:\n{tb}" for name, tb in failed.items())


def test_the_evaluation_does_not_import_the_reports():
    names = modules("vae/evaluation")
    out = import_in_fresh_interpreter(
        names, then="print(json.dumps(sorted(m for m in sys.modules if m.startswith('vae.reports'))))"
    )
    failed, reports = (json.loads(line) for line in out.splitlines()[-2:])
    assert "vae.evaluation.evaluators.samples" in names and not failed, failed
    assert reports == [], f"importing vae.evaluation pulls in {reports}"


def test_no_evaluation_module_imports_the_reports_even_inside_a_function():
    offending = []
    for path in sorted((ROOT / "vae" / "evaluation").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):  # "from vae import reports" names vae.reports too
                names = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            offending += [
                f"{path.relative_to(ROOT)}:{node.lineno} {n}"
                for n in names
                if n == "vae.reports" or n.startswith("vae.reports.")
            ]
    assert not offending, offending


def test_tensorflow_runs_on_onednn_kernels_unless_the_environment_says_otherwise():
    """The package turns TensorFlow's oneDNN CPU kernels on (TensorFlow itself does only on CPUs with
    AVX-512 VNNI/BF16 or AMX), in any process importing it first; ``TF_ENABLE_ONEDNN_OPTS=0`` wins."""
    from vae import ONEDNN_ENV

    enabled = (
        "from tensorflow.python.util import _pywrap_util_port; print(json.dumps(_pywrap_util_port.IsMklEnabled()))"
    )
    for value, expected in ((None, True), ("0", False)):
        env = {k: v for k, v in os.environ.items() if k != ONEDNN_ENV}
        if value is not None:
            env[ONEDNN_ENV] = value
        failed, on = (
            json.loads(line) for line in import_in_fresh_interpreter(["vae.models"], enabled, env).splitlines()[-2:]
        )
        assert not failed and on is expected, (value, failed, on)
