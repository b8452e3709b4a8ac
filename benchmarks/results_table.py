"""Render the measured demo figures (benchmarks/results/demo.json) as the README's results table.

    python -m benchmarks.results_table            # rewrite the tables between the markers
    python -m benchmarks.results_table --check    # exit 1 if a table is not the JSON's
    python -m benchmarks.results_table --print    # print the table only

The table lives in README.md and docs/benchmarks.md between ``<!-- results:start -->`` and
``<!-- results:end -->`` and is never edited by hand: measure, put the figures in the JSON (with the
command, machine and date), and run this script.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo.json"
TARGETS = (ROOT / "README.md", ROOT / "docs" / "benchmarks.md")
START = "<!-- results:start -->"
END = "<!-- results:end -->"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _number(value: float) -> str:
    return f"{value:g}"


def render(results: dict) -> str:
    """The Markdown block that goes between the markers (markers excluded)."""
    runs = results["runs"]
    first = results["first_run_s"]
    once = sum(first.values())
    head = "| | " + " | ".join(f"seed {run['seed']}" for run in runs) + " | floor | target |"
    rule = "|---|" + "---|" * len(runs) + "---|---|"
    rows = [head, rule]
    own = [sum(run["phases_s"].values()) for run in runs]
    rows.append(
        "| demo time: first run (rerun) | "
        + " | ".join(f"{_minutes(s + once)} ({_minutes(s)})" for s in own)
        + " | | |"
    )
    rows.append("| epochs in the 600 s budget | " + " | ".join(str(run["epochs"]) for run in runs) + " | | |")
    for key, meta in results["metrics"].items():
        values = " | ".join(f"{run['metrics'][key]:.{meta['decimals']}f}" for run in runs)
        rows.append(f"| {meta['label']} | {values} | {_number(meta['floor'])} | {meta['target']} |")
    phases = ", ".join(f"{name} {seconds:g} s" for name, seconds in first.items())
    footer = (
        f"Measured {results['date']} on {results['machine']}: `{results['command']}`. "
        f"Demo time is the sum of the phases: training and evaluation of each run, plus {phases} "
        "on a first run (a rerun in the same folder reuses them). Floor: real test clips through "
        "the features and Griffin-Lim alone, the best the vocoder allows. "
        "Generated from `benchmarks/results/demo.json` by `python -m benchmarks.results_table`."
    )
    return "\n".join(rows) + "\n\n" + footer


def block(text: str) -> str:
    """What a file holds between the markers, stripped."""
    if START not in text or END not in text:
        raise SystemExit(f"no {START} ... {END} section")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def rewrite(text: str, table: str) -> str:
    before = text.split(START, 1)[0]
    after = text.split(END, 1)[1]
    return f"{before}{START}\n{table}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.results_table", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if a file's table differs from the JSON's")
    mode.add_argument("--print", action="store_true", help="print the table instead of writing the files")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--files", type=Path, nargs="+", default=list(TARGETS), help="files with the markers")
    args = p.parse_args(argv)
    table = render(json.loads(args.results.read_text()))
    if args.print:
        print(table)
        return 0
    stale = []
    for path in args.files:
        text = path.read_text()
        current = block(text)
        if args.check:
            if current != table:
                stale.append(path.name)
        elif current != table:
            path.write_text(rewrite(text, table))
    if stale:
        print(
            f"the results table of {', '.join(stale)} differs from {args.results.name}: "
            "run `python -m benchmarks.results_table`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
