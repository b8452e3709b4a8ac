"""Hyperparameter sweep: many training runs under Ray Tune, best checkpoint and report in storage.

    python -m jobs.tune --data PARQUET --storage DIR_OR_S3 --space YAML --name EXP
        [--num-samples N] [--max-concurrent C] [--workers-per-trial W] [--use-gpu]
        [--classifier CKPT] [--resume] [--config FILE] [--set KEY=VALUE ...]

Everything lands under <storage>/<EXP>/: tune/ (Tune state), trials/ (one Train run
per trial), best/ (published all-or-nothing), report/ and sweep.json (the settings).
After an interruption, the same command with --resume continues without re-running
finished trials. --set sweep.KEY=VALUE sets the SweepConfig (the flags above are
shorthands for its keys); any other key sets the trials' base RunConfig, under the
space's fixed and searched values (``--set train.time_budget_s=120``).
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs._cli import add_config_arguments, config_overrides, parser, positive_int, run
from vae.config import RunConfig, SweepConfig
from vae.raysetup import finish_ray, init_ray
from vae.search_space import load_space

SHORTHANDS = {
    "num_samples": "sweep.num_samples",
    "max_concurrent": "sweep.max_concurrent",
    "workers_per_trial": "sweep.workers_per_trial",
    "use_gpu": "sweep.use_gpu",
    "n_per_digit": "sweep.n_per_digit",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("jobs.tune", __doc__)
    p.add_argument("--data", required=True, help="Parquet dataset made by jobs.preprocess")
    p.add_argument("--storage", required=True, help="folder or s3:// prefix for the experiment")
    p.add_argument("--space", required=True, help="search space YAML, e.g. tune_spaces/default.yaml")
    p.add_argument("--name", required=True, help="experiment name")
    p.add_argument("--num-samples", type=int, default=None, help="trials (default: the space's num_samples)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: what the cluster fits)")
    p.add_argument(
        "--workers-per-trial", type=int, help=f"Ray Train workers per trial (default {SweepConfig.workers_per_trial})"
    )
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per Train worker")
    p.add_argument(
        "--classifier", default=None, help="digit recogniser checkpoint (jobs.train_classifier) for the objective"
    )
    p.add_argument(
        "--n-per-digit",
        type=int,
        help=f"samples per digit scored by the recogniser each epoch (default {SweepConfig.n_per_digit})",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    p.add_argument(
        "--num-cpus", type=positive_int, default=None, help="CPUs of a local Ray instance (ignored with RAY_ADDRESS)"
    )
    add_config_arguments(p, "sweep.max_failures=2")
    return p.parse_args(argv)


def configs(args: argparse.Namespace) -> tuple[SweepConfig, RunConfig]:
    """The sweep's settings and its trials' base RunConfig, from the options given."""
    from vae.overrides import apply_overrides, apply_run_overrides, refuse, split

    parts = split(config_overrides(args, SHORTHANDS), ["sweep"])
    refuse(
        parts[""],
        "model",
        "a sweep's model is the space file's base.model preset, changed by its fixed and params keys",
    )
    return apply_overrides(SweepConfig(), parts["sweep"]), apply_run_overrides(RunConfig(), parts[""])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("tune", lambda: _main(args), args.verbose)


def _main(args: argparse.Namespace) -> int:
    """The job's body: check the space and settings, sweep, report."""
    space = load_space(args.space)  # a malformed space fails here, before Ray or any trial starts
    settings, base = configs(args)
    from vae.dataset import check_clips

    check_clips(args.data)  # bad clips fail here, not in every retry of every trial
    init_ray(args.num_cpus)
    from vae.tuning import run_sweep

    result = run_sweep(
        space,
        args.data,
        args.storage,
        args.name,
        settings,
        resume=args.resume,
        recogniser_uri=args.classifier,
        base=base,
    )
    finish_ray()
    print(f"{result.trials} trials; best: {result.best_uri or 'none'}; report: {result.report_uri}/index.html")
    print(
        json.dumps(
            {
                "experiment": result.experiment,
                "best_checkpoint": result.best_uri and result.best_uri.rsplit("/", 1)[0],
                "report": f"{result.report_uri}/index.html",
                "trials": result.trials,
                "best_params": result.best.get("params"),
                "best_metrics": {
                    k: result.best.get("metrics", {}).get(k)
                    for k in ("objective", "val_recon_mse", "digit_accuracy", "epoch")
                },
            },
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
