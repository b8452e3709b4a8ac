"""The longest functions of vae/ and jobs/, in lines (a function's first to last line), longest first.

    python -m benchmarks.function_lengths [--top N] [--rev REV]

``--rev`` reads the tree of a git revision instead of the working tree, so a before/after is
two commands. tests/test_imports.py holds every function to :data:`MAX_LINES`.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def sources(rev: str | None) -> dict[str, str]:
    """Path -> text of every .py file under vae/ and jobs/, at ``rev`` or in the working tree."""
    if rev is None:
        return {
            str(p.relative_to(ROOT)): p.read_text() for d in ("vae", "jobs") for p in sorted((ROOT / d).rglob("*.py"))
        }
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, "vae", "jobs"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()

    def show(name: str) -> str:
        return subprocess.run(
            ["git", "show", f"{rev}:{name}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout

    return {name: show(name) for name in names if name.endswith(".py")}


def lengths(files: dict[str, str]) -> list[tuple[int, str]]:
    rows = []
    for path, text in files.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append((node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}"))
    return sorted(rows, reverse=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--rev", help="a git revision (default: the working tree)")
    args = p.parse_args()
    for n, where in lengths(sources(args.rev))[: args.top]:
        print(f"{n:4d}  {where}")


if __name__ == "__main__":
    main()
