"""``fsdd-vae JOB [OPTIONS]`` (or ``python -m jobs JOB [OPTIONS]``): the same as ``python -m jobs.JOB [OPTIONS]``.

``fsdd-vae --help`` lists the jobs, each with the first line of its docstring, read without importing it.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import jobs


def job_names() -> list[str]:
    """Every job: the modules of the ``jobs`` package but its private ones."""
    return sorted(m.name for m in pkgutil.iter_modules(jobs.__path__) if not m.name.startswith("_"))


def summary(name: str) -> str:
    """The first line of the job's docstring, as plain text."""
    source = (Path(jobs.__file__).parent / f"{name}.py").read_text()
    return (ast.get_docstring(ast.parse(source)) or "").split("\n", 1)[0].replace("``", "")


def usage() -> str:
    """``fsdd-vae --help``: how to call it, and every job with its summary."""
    names = job_names()
    width = max(map(len, names))
    rows = "\n".join(f"  {name:<{width}}  {summary(name)}" for name in names)
    return (
        "usage: fsdd-vae JOB [OPTIONS]   (the same as python -m jobs.JOB [OPTIONS])\n\n"
        f"jobs:\n{rows}\n\n`fsdd-vae JOB --help` lists a job's options."
    )


def main(argv: list[str] | None = None) -> int:
    """Run the job named first in ``argv`` with the rest; the job list for none or ``--help``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name = argv[0].replace("-", "_")
    if name not in job_names():
        print(f"fsdd-vae: error: no job {argv[0]!r}; the jobs: {', '.join(job_names())}", file=sys.stderr)
        return 2
    return importlib.import_module(f"jobs.{name}").main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
