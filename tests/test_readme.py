"""The README's layout section names every module, so it cannot drift from the tree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout") :]
    return re.search(r"```\n(.*?)```", section, re.S).group(1)


def test_the_layout_section_names_every_module_and_folder():
    block = layout_block()
    named = {line.split()[0] for line in block.splitlines() if line.strip()}
    missing = []
    for folder in ("jobs", "vae", "cluster", "tune_spaces", "benchmarks", "tests"):
        if not any(name.startswith(folder + "/") for name in named):
            missing.append(folder + "/")
    for path in sorted((ROOT / "vae").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        package = rel.rsplit("/", 1)[0] + "/"
        if path.name == "__init__.py" and package == "vae/":
            continue
        # A module of vae/ is named itself; a module of a subpackage through its folder.
        if rel not in named and not (package != "vae/" and package in named):
            missing.append(rel)
    private = [p.relative_to(ROOT).as_posix() for p in (ROOT / "jobs").glob("_*.py") if p.name != "__init__.py"]
    missing += [rel for rel in private if rel not in named]
    assert not missing, f"README's layout section does not name: {missing}"


def test_the_layout_section_names_nothing_that_is_gone():
    for name in (line.split()[0] for line in layout_block().splitlines() if line.strip()):
        assert (ROOT / name).exists(), f"README's layout section names {name}, which does not exist"


def test_the_readme_links_nothing_outside_the_repository():
    for target in re.findall(r"\]\(([^)]+)\)", (ROOT / "README.md").read_text()):
        if "://" not in target and not target.startswith("#"):
            assert (ROOT / target).resolve().is_relative_to(ROOT), target
