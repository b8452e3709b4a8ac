"""Rebuild a sweep's report from its storage alone.

    python -m jobs.report --experiment OUT/EXP

Reads EXP/tune (every trial's parameters, per-epoch metrics and status) and
EXP/best, and rewrites EXP/report/: index.html, summary.json, trials.csv, report.md.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs._cli import parser, run


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.report", __doc__)
    p.add_argument("--experiment", required=True, metavar="DIR_OR_S3", help="OUT/NAME of a sweep made by jobs.tune")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run("report", lambda: _main(args), args.verbose)


def _main(args: argparse.Namespace) -> int:
    from vae import storage
    from vae.reports.sweep import build_sweep_report
    from vae.tuning import best_epoch, load_trials

    trials = load_trials(args.experiment)
    best = best_epoch(trials)
    best_dir = storage.join(args.experiment, "best")
    published = storage.is_published(best_dir)
    report = build_sweep_report(args.experiment, trials, best if published else None)
    if best and not published:
        print(f"{best_dir}: no published version (a publish was interrupted); jobs.tune --resume publishes it")
    print(f"{len(trials)} trials; report: {report}/index.html")
    print(json.dumps({"report": f"{report}/index.html", "trials": len(trials)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
