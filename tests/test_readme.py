"""The README says only what is true of the tree: its layout, its jobs, its links, its commands."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# Every top-level folder a user meets; the layout names each one and nothing else.
FOLDERS = ("vae", "jobs", "cluster", "tune_spaces", "benchmarks", "docs", "tests")


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def layout_block() -> str:
    return re.search(r"```\n(.*?)```", section("Layout"), re.S).group(1)


def test_the_readme_keeps_the_two_commands():
    commands = re.search(r"```bash\n(.*?)```", section("Set up and run"), re.S).group(1)
    assert re.search(r"^make demo\b", commands, re.M), commands
    assert re.search(r"^make test\b", commands, re.M), commands
    assert "requirements.lock" in section("Set up and run")


def test_the_layout_section_names_every_top_level_folder():
    named = [line.split()[0] for line in layout_block().splitlines() if line.strip()]
    assert sorted(named) == sorted(f"{folder}/" for folder in FOLDERS)


def test_every_tracked_top_level_folder_is_in_the_layout():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    folders = {path.split("/", 1)[0] for path in tracked.splitlines() if "/" in path and not path.startswith(".")}
    named = {line.split()[0].rstrip("/") for line in layout_block().splitlines() if line.strip()}
    assert folders <= named, f"README's layout does not name {sorted(folders - named)}"


def test_the_layout_section_names_nothing_that_is_gone():
    for name in (line.split()[0] for line in layout_block().splitlines() if line.strip()):
        assert (ROOT / name).is_dir(), f"README's layout section names {name}, which does not exist"


def test_the_readme_links_nothing_outside_the_repository_and_nothing_missing():
    for target in re.findall(r"\]\(([^)]+)\)", README):
        if "://" in target or target.startswith("#"):
            continue
        path = (ROOT / target.split("#", 1)[0]).resolve()
        assert path.is_relative_to(ROOT), target
        assert path.exists(), f"README links {target}, which does not exist"


def _jobs() -> list[str]:
    return sorted(p.stem for p in (ROOT / "jobs").glob("*.py") if not p.name.startswith("_"))


def _jobs_table() -> dict[str, str]:
    rows = {}
    for line in section("The jobs").splitlines():
        match = re.match(r"\| `(\w+)` \|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_the_jobs_table_names_every_job_and_nothing_else():
    assert sorted(_jobs_table()) == _jobs()


def _flags(job: str) -> set[str]:
    """The flags a job's parser accepts, read from its argparse (the parser is built, nothing runs)."""
    import importlib

    module = importlib.import_module(f"jobs.{job}")
    captured: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        captured.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    try:
        entry = getattr(module, "parse_args", None) or module.main
        with pytest.raises(SystemExit):
            entry([])
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    (own,) = [p for p in captured if p.prog == f"python -m jobs.{job}"]
    return {flag for action in own._actions for flag in action.option_strings}


@pytest.mark.parametrize("job", _jobs())
def test_the_jobs_table_lists_only_flags_the_job_has(job):
    listed = set(re.findall(r"`(--[a-z0-9-]+)", _jobs_table()[job]))
    assert listed, f"no flags listed for {job}"
    unknown = listed - _flags(job)
    assert not unknown, f"README lists {sorted(unknown)} for jobs.{job}, which it does not take"


def test_the_readme_does_not_document_the_retired_workers_option():
    assert not re.search(r"--workers\b(?!-)", README)


def test_one_kuberay_minimum_and_it_is_the_manifests():
    """The README names one KubeRay version, the highest any manifest says it needs."""
    needs = []
    for manifest in sorted((ROOT / "cluster").glob("kuberay-*.yaml")):
        needs += re.findall(r"KubeRay operator >= ([\d.]+)", manifest.read_text())
    assert needs
    highest = max(needs, key=lambda v: tuple(int(x) for x in v.split(".")))
    mentioned = set(re.findall(r"KubeRay[^\n]*?(\d+\.\d+(?:\.\d+)?)", README))
    assert mentioned == {highest}, (mentioned, highest)
