"""Hyperparameter sweep: many training runs under Ray Tune, best checkpoint and report in storage.

    python -m jobs.tune --data PARQUET --storage DIR_OR_S3 --space YAML --name EXP
        [--num-samples N] [--max-concurrent C] [--workers-per-trial W] [--use-gpu]
        [--classifier CKPT] [--resume]

Everything lands under <storage>/<EXP>/: tune/ (Tune state), trials/ (one Train run
per trial), best/ (published all-or-nothing) and report/. After an interruption,
the same command with --resume continues without re-running finished trials.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs._cli import fail
from vae.config import ConfigError
from vae.errors import UserError
from vae.raysetup import finish_ray, init_ray
from vae.search_space import load_space


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.tune", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="Parquet dataset made by jobs.preprocess")
    p.add_argument("--storage", required=True, help="folder or s3:// prefix for the experiment")
    p.add_argument("--space", required=True, help="search space YAML, e.g. tune_spaces/default.yaml")
    p.add_argument("--name", required=True, help="experiment name")
    p.add_argument("--num-samples", type=int, default=None, help="trials (default: the space's num_samples)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: what the cluster fits)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers per trial")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per Train worker")
    p.add_argument("--classifier", default=None, help="digit recogniser checkpoint (jobs.train_classifier) for the objective")
    p.add_argument("--n-per-digit", type=int, default=3, help="samples per digit scored by the recogniser each epoch")
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (ignored with RAY_ADDRESS)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        space = load_space(args.space)  # a malformed space fails here, before Ray or any trial starts
        for flag in ("num_samples", "max_concurrent", "workers_per_trial", "n_per_digit"):
            value = getattr(args, flag)
            if value is not None and value < 1:
                raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
        init_ray(args.num_cpus)
        from vae.tuning import run_sweep

        result = run_sweep(
            space,
            args.data,
            args.storage,
            args.name,
            num_samples=args.num_samples,
            max_concurrent=args.max_concurrent,
            workers_per_trial=args.workers_per_trial,
            use_gpu=args.use_gpu,
            resume=args.resume,
            recogniser_uri=args.classifier,
            n_per_digit=args.n_per_digit,
        )
    except (UserError, FileNotFoundError, FileExistsError) as exc:
        return fail("tune", str(exc))
    finish_ray()
    print(f"{result.trials} trials; best: {result.best_uri or 'none'}; report: {result.report_uri}/index.html")
    print(json.dumps({
        "experiment": result.experiment,
        "best_checkpoint": result.best_uri and result.best_uri.rsplit("/", 1)[0],
        "report": f"{result.report_uri}/index.html",
        "trials": result.trials,
        "best_params": result.best.get("params"),
        "best_metrics": {k: result.best.get("metrics", {}).get(k) for k in ("objective", "val_recon_mse", "digit_accuracy", "epoch")},
    }, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
