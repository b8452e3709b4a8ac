"""Everything in one job: extract, train the recogniser, sweep (or train once), evaluate, report.

    python -m jobs.pipeline --input SRC --out DIR_OR_S3 --name EXP
        [--space YAML | --train-only] [--model PRESET] [--epochs E] [--num-workers N]
        [--workers-per-trial W] [--num-samples N] [--max-concurrent C] [--use-gpu] [--resume]
        [--config FILE] [--set KEY=VALUE ...]

Stages already done for the same input and feature config are skipped. Prints
where the report and the best checkpoint are; the last line is JSON. --set
sweep.KEY=VALUE sets the sweep's SweepConfig, any other key the train-only
RunConfig (``--set train.learning_rate=3e-4``); the flags are shorthands for such keys.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs._cli import (
    Shorthands,
    add_config_arguments,
    add_num_cpus,
    add_out,
    config_overrides,
    parser,
    run,
    show_config_defaults,
)
from vae.config import (
    FEATURE_PRESETS,
    MODEL_PRESETS,
    PRIOR_KINDS,
    EvalConfig,
    ModelConfig,
    RunConfig,
    SweepConfig,
    preset,
)

SHORTHANDS: Shorthands = {
    "prior": "prior.kind",
    "epochs": "train.epochs",
    "num_workers": "train.num_workers",
    "use_gpu": ("train.use_gpu", "sweep.use_gpu"),
    "workers_per_trial": "sweep.workers_per_trial",
    "num_samples": "sweep.num_samples",
    "max_concurrent": "sweep.max_concurrent",
}


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.pipeline", __doc__)
    p.add_argument("--input", required=True, metavar="DIR_OR_S3", help="folder or s3:// prefix of FSDD WAV files")
    add_out(p, "folder or s3:// prefix for everything the pipeline makes", "--storage")
    p.add_argument("--name", required=True, help="experiment name: its results go to OUT/NAME")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--space", metavar="YAML", help="search space YAML: run a sweep")
    mode.add_argument("--train-only", action="store_true", help="train one model instead of sweeping")
    p.add_argument("--features", default="default", choices=sorted(FEATURE_PRESETS), help="FeatureConfig preset")
    p.add_argument("--model", default="default", choices=sorted(MODEL_PRESETS), help="train-only: model preset")
    p.add_argument("--prior", choices=PRIOR_KINDS, help="train-only: prior")
    p.add_argument("--epochs", type=int, help="train-only: epochs")
    p.add_argument("--num-workers", type=int, help="train-only: Ray Train workers")
    p.add_argument("--workers-per-trial", type=int, help="sweep: Ray Train workers per trial")
    p.add_argument("--num-samples", type=int, help="sweep: trials (default: the space's)")
    p.add_argument("--max-concurrent", type=int, help="sweep: trials at once (default: what the cluster fits)")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per Train worker")
    p.add_argument("--no-recogniser", action="store_true", help="skip the recogniser (no sample metrics)")
    p.add_argument(
        "--n-per-digit",
        type=int,
        default=EvalConfig.n_per_digit,
        help="digit-conditional samples per digit in the evaluation",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run or sweep")
    add_num_cpus(p)
    add_config_arguments(p)
    show_config_defaults(p, SHORTHANDS, {"": RunConfig(), "sweep": SweepConfig()})
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def configs(args: argparse.Namespace) -> tuple[RunConfig, SweepConfig]:
    """The train-only RunConfig (the --model preset, changed by the options given) and the sweep's settings."""
    from vae.overrides import apply_overrides, apply_run_overrides, split

    parts = split(config_overrides(args, SHORTHANDS), ["sweep"])
    base = RunConfig(model=preset(ModelConfig, args.model))
    return apply_run_overrides(base, parts[""]), apply_overrides(SweepConfig(), parts["sweep"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("pipeline", lambda: _main(args), args.verbose)


def _main(args: argparse.Namespace) -> int:
    """The job's body: every stage, then the summary."""
    cfg, sweep = configs(args)  # a bad option fails before anything is read
    space = None
    if args.space:
        from vae.search_space import load_space

        space = load_space(args.space)
    from vae.pipeline import run_pipeline
    from vae.raysetup import finish_ray, init_ray

    init_ray(args.num_cpus)
    result = run_pipeline(
        args.input,
        args.out,
        args.name,
        features_preset=args.features,
        space=space,
        run_cfg=cfg,
        sweep=sweep,
        with_recogniser=not args.no_recogniser,
        resume=args.resume,
        n_per_digit=args.n_per_digit,
    )
    finish_ray()
    print(f"best checkpoint: {result.best_checkpoint}")
    if result.sweep_report:
        print(f"sweep report: {result.sweep_report}")
    print(f"report: {result.report}")
    print(json.dumps(result.summary(), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
