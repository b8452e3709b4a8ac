"""Hyperparameter sweep: many training runs under Ray Tune, best checkpoint and report in storage.

    python -m jobs.tune --data PARQUET --out DIR_OR_S3 --space YAML --name EXP
        [--num-samples N] [--max-concurrent C] [--workers-per-trial W] [--use-gpu]
        [--recogniser DIR] [--objective voicing held_out] [--resume] [--config FILE] [--set KEY=VALUE ...]

Everything lands under OUT/EXP/: tune/ (Tune state), trials/ (one Train run
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

from jobs._cli import (
    add_config_arguments,
    add_num_cpus,
    add_out,
    add_recogniser,
    config_overrides,
    parser,
    run,
    show_config_defaults,
)
from vae.config import ConfigError, RunConfig, SweepConfig
from vae.objective import OBJECTIVE
from vae.objective import TERMS as OBJECTIVE_TERMS
from vae.search_space import SWEEP_RANKED, load_space

SHORTHANDS = {
    "num_samples": "sweep.num_samples",
    "max_concurrent": "sweep.max_concurrent",
    "workers_per_trial": "sweep.workers_per_trial",
    "use_gpu": "sweep.use_gpu",
    "n_per_digit": "sweep.n_per_digit",
    "objective": "sweep.objective",
}


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.tune", __doc__)
    p.add_argument("--data", required=True, metavar="PARQUET", help="Parquet dataset made by jobs.preprocess")
    add_out(p, "folder or s3:// prefix for the experiment: it goes to OUT/NAME", "--storage")
    p.add_argument("--space", required=True, metavar="YAML", help="search space YAML, e.g. tune_spaces/default.yaml")
    p.add_argument("--name", required=True, help="experiment name")
    p.add_argument("--num-samples", type=int, default=None, help="trials (default: the space's num_samples)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: what the cluster fits)")
    p.add_argument("--workers-per-trial", type=int, help="Ray Train workers per trial")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per Train worker")
    add_recogniser(p, "digit recogniser (jobs.train_classifier) for the objective")
    p.add_argument("--n-per-digit", type=int, help="samples per digit scored by the recogniser each epoch")
    p.add_argument(
        "--objective",
        nargs="+",
        choices=OBJECTIVE_TERMS,
        help="terms the objective adds: voicing (of the samples, against the vocoder's), held_out (reconstruction "
        "of the speaker set by --set train.held_out_speaker=NAME, on its train-split takes)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    add_num_cpus(p)
    add_config_arguments(p, "sweep.max_failures=2")
    show_config_defaults(p, SHORTHANDS, {"sweep": SweepConfig()})
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def configs(args: argparse.Namespace) -> tuple[SweepConfig, RunConfig]:
    """The sweep's settings and its trials' base RunConfig, from the options given."""
    from vae.overrides import apply_overrides, apply_run_overrides, refuse, split

    parts = split(config_overrides(args, SHORTHANDS), ["sweep"])
    refuse(
        parts[""],
        "model",
        "a sweep's model is the space file's base.model preset, changed by its fixed and params keys",
    )
    for key, why in SWEEP_RANKED.items():
        if key in parts[""]:
            raise ConfigError(f"{key}: {why}: a sweep does not read it")
    return apply_overrides(SweepConfig(), parts["sweep"]), apply_run_overrides(RunConfig(), parts[""])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("tune", lambda: _main(args), args.verbose)


def _main(args: argparse.Namespace) -> int:
    """The job's body: check the space and settings, sweep, report."""
    settings, base = configs(args)  # a bad option fails before anything is read
    space = load_space(args.space)  # a malformed space fails here, before Ray or any trial starts
    from vae.checkpoint import check_recogniser
    from vae.dataset import check_clips

    if args.recogniser:
        check_recogniser(args.recogniser)
    check_clips(args.data)  # bad clips fail here, not in every retry of every trial
    from vae.raysetup import finish_ray, init_ray
    from vae.tuning import run_sweep

    init_ray(args.num_cpus)
    result = run_sweep(
        space,
        args.data,
        args.out,
        args.name,
        settings,
        resume=args.resume,
        recogniser_uri=args.recogniser,
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
                    for k in (
                        OBJECTIVE,
                        "val_recon_mse",
                        "digit_accuracy",
                        "voicing_samples",
                        "held_out_recon_mse",
                        "epoch",
                    )
                },
            },
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
