"""The documentation site builds strictly, names every page, and the README stays short and generated."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def _mkdocs() -> str:
    beside = Path(sys.executable).with_name("mkdocs")
    found = str(beside) if beside.exists() else shutil.which("mkdocs")
    if not found:
        pytest.skip("mkdocs is not installed (the dev extra)")
    return found


def test_mkdocs_build_is_strict_and_passes(tmp_path):
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config.get("strict") is True
    result = subprocess.run(
        [_mkdocs(), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    nav = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
    assert len(nav) == len(set(nav)), "a page is in the nav twice"


def test_the_makefile_builds_the_docs_strictly_and_git_ignores_the_site():
    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/mkdocs build --strict --site-dir build/site" in makefile
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "build/" in ignored and "site/" in ignored


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines"


# A commit hash: 7 to 40 hex digits with at least one digit and one letter (so that words such as
# "deadbeef" or numbers such as 1234567 do not count), standing alone.
HASH = re.compile(r"(?<![0-9A-Za-z_./-])(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![0-9A-Za-z_])")


@pytest.mark.parametrize(
    "path", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in DOCS.rglob("*.md"))], ids=str
)
def test_no_commit_hashes(path):
    found = HASH.findall((ROOT / path).read_text())
    assert not found, f"{path} names commits: {found}"


def test_the_hash_pattern_finds_hashes():
    assert HASH.findall("at 5c7c476, and 15c25ba") == ["5c7c476", "15c25ba"]
    assert not HASH.findall("1234567 clips, a deadbeef, sha256 in config.json")


def test_the_results_tables_are_the_json_s():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.results_table", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_results_check_fails_on_a_hand_edit(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text().replace("| inception score |", "| inception score (edited) |"))
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.results_table", "--check", "--files", str(readme)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "differs" in result.stderr


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for p in DOCS.rglob("*.md")), ids=str)
def test_every_repository_path_a_page_names_exists(path):
    """A refactor that moves a file the docs name fails here, not in a reader's hands."""
    named = re.findall(r"`((?:vae|jobs|cluster|tune_spaces|benchmarks|tests)/[\w./-]*)`", (ROOT / path).read_text())
    missing = [name for name in named if not (ROOT / name).exists()]
    assert not missing, f"{path} names {missing}, which do not exist"
