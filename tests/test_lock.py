"""Every install comes from the lock files: the Makefile installs requirements.lock by hash, the lock
satisfies pyproject.toml's ranges, the GPU lock agrees with it, and this environment is the lock's."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from lockfile import locked, locked_versions
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK, GPU_LOCK = REPO / "requirements.lock", REPO / "requirements-gpu.lock"


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements(*extras: str) -> list[Requirement]:
    project = _project()
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def test_make_install_installs_the_lock_by_hash_and_nothing_else():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile[makefile.index("$(STAMP):") :].split("\n\n", 1)[0]
    assert "requirements.lock" in recipe.splitlines()[0], "the venv is rebuilt when the lock changes"
    installs = [line.strip() for line in recipe.splitlines() if "pip install" in line]
    assert installs == [
        "$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock",
        "$(BIN)/python -m pip install --quiet --no-deps -e .",
    ]
    assert re.search(r"^make (lint )?test$", (REPO / ".ci" / "run").read_text(), re.M)


def test_the_lock_pins_every_requirement_within_its_range():
    pins = locked(LOCK)
    for extras, lock in ((("test", "dev"), LOCK), (("gpu",), GPU_LOCK)):
        by_name: dict[str, list[str]] = {}
        for name, version, _ in locked(lock):
            by_name.setdefault(name, []).append(version)
        for req in _requirements(*extras):
            name = canonicalize_name(req.name)
            assert name in by_name, f"{lock.name} does not pin {req.name}: run make lock"
            for version in by_name[name]:
                assert req.specifier.contains(version, prereleases=True), f"{lock.name}: {name}=={version} vs {req}"
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version) for _, version, _ in pins)


def test_every_pin_has_hashes():
    for lock in (LOCK, GPU_LOCK):
        text = lock.read_text()
        blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2] if text.startswith("#") else text)
        pinned = [b for b in blocks if "==" in b.split("\n", 1)[0]]
        assert pinned and all("--hash=sha256:" in b for b in pinned), lock.name


def test_the_gpu_lock_agrees_with_the_lock_on_every_shared_package():
    cpu, gpu = locked_versions(LOCK), locked_versions(GPU_LOCK)
    shared = set(cpu) & set(gpu)
    assert {"ray", "tensorflow", "tensorflow-probability", "keras", "numpy"} <= shared
    assert {name: gpu[name] for name in shared if gpu[name] != cpu[name]} == {}
    assert any(name.startswith("nvidia-") for name in gpu), "the GPU lock brings CUDA's libraries"


def test_this_environment_is_the_locks():
    """What `make install` built: every package the lock pins for this platform, at its version."""
    wrong = {}
    for name, version in locked_versions(LOCK).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert wrong == {}, "(locked, installed): run make install"
