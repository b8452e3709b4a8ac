"""Every module imports on its own in a fresh interpreter, no vae module imports another that imports it
back, configs validate without TensorFlow, the trainer and the evaluation stay apart (the evaluation
never pulls in the report, the trainer never the evaluation), and importing the package sets
TensorFlow's CPU kernels."""

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


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file at ``path``, module-level or inside a function;
    ``from a import b`` names both ``a`` and ``a.b`` (``b`` may be a module)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import"
            out += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def import_graph() -> dict[str, set[str]]:
    """Each ``vae`` module -> the ``vae`` modules it imports, anywhere in its code (``from a import b``:
    the module ``a.b`` where there is one, else ``a``)."""
    names = set(modules("vae"))
    graph = {}
    for name in names:
        path = ROOT / Path(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        by_line: dict[int, set[str]] = {}
        for line, imported in imported_names(path):
            by_line.setdefault(line, set()).add(imported)
        edges = set()
        for imported in by_line.values():
            modules_named = {n for n in imported if n in names}
            # The longest names are the modules imported; their package is imported only on the way.
            edges |= {n for n in modules_named if not any(m.startswith(n + ".") for m in modules_named)}
        graph[name] = edges - {name, "vae"}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for name in graph[todo.pop()] - seen:
            seen.add(name)
            todo.append(name)
    return seen


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
    offending = [
        f"{path.relative_to(ROOT)}:{line} {n}"
        for path in sorted((ROOT / "vae" / "evaluation").rglob("*.py"))
        for line, n in imported_names(path)  # "from vae import reports" names vae.reports too
        if n == "vae.reports" or n.startswith("vae.reports.")
    ]
    assert not offending, offending


def test_no_vae_module_imports_one_that_imports_it_back():
    """No cycle in the graph of imports among vae modules, counting those inside functions."""
    graph = import_graph()
    assert {"vae.config", "vae.worker", "vae.training", "vae.priors"} <= set(graph)
    assert "vae.config" in graph["vae.priors"]  # the graph sees imports
    cycles = sorted(name for name in graph if name in reachable(graph, name))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_the_trainer_is_handed_its_scorer_and_never_imports_the_evaluation():
    graph = import_graph()
    for trainer in ("vae.worker", "vae.training"):
        evaluation = sorted(n for n in reachable(graph, trainer) if n.startswith("vae.evaluation"))
        assert not evaluation, f"{trainer} imports {evaluation}"


VALIDATE_EVERY_PRESET = """
import dataclasses, sys
from vae import config
for cls, table in config.PRESETS.items():
    for name in table:
        config.preset(cls, name)
for cls in [c for c in vars(config).values() if isinstance(c, type) and dataclasses.is_dataclass(c)]:
    cls().validate()
for kind in config.PRIOR_KINDS:
    config.PriorConfig(kind=kind).validate()
for kind in config.RECONSTRUCTION_KINDS:
    config.LossConfig(reconstruction=kind).validate()
config.DemoConfig().run_config()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tensorflow_probability"))))
"""


def test_validating_every_config_and_preset_does_not_load_tensorflow():
    failed, heavy = (
        json.loads(line)
        for line in import_in_fresh_interpreter(["vae.config"], VALIDATE_EVERY_PRESET).splitlines()[-2:]
    )
    assert not failed, failed
    assert heavy == [], f"validating configs imports {heavy[:5]}"


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


def test_no_function_in_vae_or_jobs_is_over_sixty_lines():
    from benchmarks.function_lengths import MAX_LINES, lengths, sources

    assert [where for n, where in lengths(sources(None)) if n > MAX_LINES] == []
