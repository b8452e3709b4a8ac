"""Train a spectrogram VAE on Ray Train (MultiWorkerMirroredStrategy on a DataParallelTrainer).

    python -m jobs.train --data PARQUET --out DIR_OR_S3 --name RUN
        [--model PRESET] [--prior normal|mixture] [--components K] [--latent-dim D]
        [--recon-weight W] [--epochs E] [--batch-size B] [--lr LR] [--num-workers N]
        [--use-gpu] [--resume] [--config FILE] [--set KEY=VALUE ...]

Checkpoints go to OUT/RUN/checkpoint_<epoch>; the best ones by validation
reconstruction error are kept (and always the latest). An existing RUN is an
error unless --resume is given; --resume continues from the latest checkpoint
with the stored config, changed only by the options given. Any RunConfig key can
be set with --set (``--set loss.kl_warmup_epochs=5``) or a --config file; the
other flags are shorthands for such keys. The last stdout line is JSON with the
best checkpoint and its metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from jobs._cli import (
    USER_ERRORS,
    add_config_arguments,
    add_num_cpus,
    add_out,
    add_recogniser,
    config_overrides,
    fail,
    parser,
    run,
    show_config_defaults,
)
from vae.config import (
    MODEL_PRESETS,
    PRIOR_KINDS,
    RECONSTRUCTION_KINDS,
    ConfigError,
    FaultConfig,
    ModelConfig,
    RunConfig,
    preset,
)

# Shorthand flag -> the config key it sets (fault.*: the test-only FaultConfig, never saved).
SHORTHANDS = {
    "prior": "prior.kind",
    "components": "prior.components",
    "reconstruction": "loss.reconstruction",
    "recon_weight": "loss.recon_weight",
    "kl_warmup": "loss.kl_warmup_epochs",
    "latent_dim": "model.latent_dim",
    "conditional": "model.conditional",
    "sampler": "sampling.sampler",
    "epochs": "train.epochs",
    "time_budget": "train.time_budget_s",
    "batch_size": "train.batch_size",
    "lr": "train.learning_rate",
    "num_workers": "train.num_workers",
    "use_gpu": "train.use_gpu",
    "mixed_precision": "train.mixed_precision",
    "placement": "train.placement_strategy",
    "seed": "train.seed",
    "max_failures": "train.max_failures",
    "keep": "train.checkpoints_to_keep",
    "fault_epoch": "fault.epoch",
    "fault_rank": "fault.rank",
}


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.train", __doc__)
    p.add_argument(
        "--data", required=True, metavar="PARQUET", help="Parquet dataset written by jobs.preprocess (folder or s3://)"
    )
    add_out(p, "folder or s3:// prefix for runs: checkpoints go to OUT/NAME", "--storage")
    p.add_argument("--name", required=True, help="run name: checkpoints go to OUT/NAME")
    p.add_argument("--resume", action="store_true", help="continue the run NAME from its latest checkpoint")
    p.add_argument("--model", choices=sorted(MODEL_PRESETS), help="ModelConfig preset (default: default)")
    p.add_argument("--prior", choices=PRIOR_KINDS, help="latent prior (vae/priors.py)")
    p.add_argument("--components", type=int, help="mixture components K")
    p.add_argument("--reconstruction", choices=RECONSTRUCTION_KINDS, help="reconstruction term (vae/losses.py)")
    p.add_argument("--latent-dim", type=int, help="latent dimensions")
    p.add_argument(
        "--conditional",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="feed the digit to the encoder and the decoder",
    )
    p.add_argument("--recon-weight", type=float, help="weight of the mse/bernoulli reconstruction term")
    p.add_argument("--kl-warmup", type=int, help="epochs over which the KL weight rises to 1")
    p.add_argument("--sampler", choices=["expost", "prior"], help="where generated latents come from")
    p.add_argument("--epochs", type=int, help="total epochs of the run (with --resume: including those done)")
    p.add_argument("--time-budget", type=float, help="seconds of training after which no new epoch starts (0: none)")
    p.add_argument("--batch-size", type=int, help="per worker; the global batch is this x --num-workers")
    p.add_argument("--lr", type=float, help="learning rate (the peak of its schedule)")
    p.add_argument("--num-workers", type=int, help="Ray Train workers")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per worker")
    p.add_argument("--mixed-precision", action="store_true", default=None, help="float16 compute (GPU only)")
    p.add_argument("--placement", choices=["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"], help="worker placement")
    p.add_argument("--seed", type=int, help="seed of the weights, the shuffling and the sampling noise")
    p.add_argument("--max-failures", type=int, help="worker failures to recover from (-1: always)")
    p.add_argument("--keep", type=int, help="checkpoints to keep (best by val_recon_mse, plus the latest)")
    p.add_argument("--fault-epoch", type=int, help=argparse.SUPPRESS)  # test-only fault switch
    p.add_argument("--fault-rank", type=int, help=argparse.SUPPRESS)
    add_num_cpus(p)
    add_recogniser(
        p,
        "recogniser checkpoint: evaluate the best checkpoint on audio, sample metrics included, "
        "into OUT/NAME/metrics.json and OUT/NAME/evaluation/",
    )
    p.add_argument(
        "--evaluate", action="store_true", help="evaluate the best checkpoint on audio even without --recogniser"
    )
    add_config_arguments(p)
    show_config_defaults(p, SHORTHANDS, {"": RunConfig(model=preset(ModelConfig, "default"))})
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_config(args: argparse.Namespace, stored: RunConfig | None) -> tuple[RunConfig, FaultConfig]:
    """The stored config of a resumed run (or the --model preset), changed by the options given,
    and the fault switch."""
    from vae.overrides import apply_overrides, apply_run_overrides, split

    if stored is not None:
        base = stored
        if args.model is not None and preset(ModelConfig, args.model) != stored.model:
            raise ConfigError(f"--model {args.model} differs from the model of the run being resumed")
    else:
        base = RunConfig(model=preset(ModelConfig, args.model or "default"))
    parts = split(config_overrides(args, SHORTHANDS), ["fault"])
    return apply_run_overrides(base, parts[""]), apply_overrides(FaultConfig(), parts["fault"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("train", lambda: _main(args), args.verbose)


def checked_config(args: argparse.Namespace) -> tuple[RunConfig, FaultConfig, RunConfig | None]:
    """The run's config and fault switch, and the stored config it resumes, after every check that
    needs no Ray (so a mistake fails in seconds): the options, the run's name, the recogniser, the
    data's features and its clips."""
    from vae.checkpoint import check_recogniser
    from vae.dataset import check_clips, read_feature_config
    from vae.training import check_run, stored_run_config

    if not args.resume:
        build_config(args, None)  # a bad option fails before any path is read
    check_run(args.out, args.name, args.resume)
    stored = stored_run_config(args.out, args.name) if args.resume else None
    run_cfg, fault = build_config(args, stored)
    if args.recogniser:
        check_recogniser(args.recogniser)
    run_cfg = replace(run_cfg, features=read_feature_config(args.data)).validate()
    check_clips(args.data)  # bad clips fail here, not in every retry of the run
    return run_cfg, fault, stored


def _main(args: argparse.Namespace) -> int:
    """The job's body: check, train, optionally evaluate, report."""
    from vae.pipeline import run_ranking
    from vae.training import describe

    run_cfg, fault, stored = checked_config(args)
    ranking = run_ranking(run_cfg, args.data, args.recogniser)
    print(f"run {args.name}: {args.model or ('as stored' if stored else 'default')} {describe(run_cfg)}", flush=True)

    import ray

    from vae import storage
    from vae.objective import OBJECTIVE
    from vae.pipeline import evaluate_best
    from vae.raysetup import finish_ray, init_ray
    from vae.training import fit

    owns_ray = not ray.is_initialized()
    try:
        init_ray(args.num_cpus)
        result = fit(run_cfg, args.data, args.out, args.name, resume=args.resume, fault=fault, ranking=ranking)
    finally:
        if owns_ray and ray.is_initialized():
            finish_ray()  # also flushes worker logs, so the JSON below stays the last line

    evaluation = {}
    if args.evaluate or args.recogniser:
        try:
            out = storage.join(result.run_dir, "evaluation")
            evaluation = evaluate_best(result.run_dir, result.best_checkpoint, args.data, out, args.recogniser)
            print(f"evaluation: {out}/index.html")
        except USER_ERRORS as exc:
            return fail("train", f"training finished ({result.best_checkpoint}) but its evaluation failed: {exc}")
    m = result.best_metrics
    print(
        f"best checkpoint {result.best_checkpoint}: epoch {m.get('epoch')}, val_recon_mse {m.get('val_recon_mse'):.5f}, "
        f"val_loss {m.get('val_loss'):.4g}"
        + (
            f", objective {m[OBJECTIVE]:.4g} (digit accuracy of its samples {m.get('digit_accuracy')})"
            if OBJECTIVE in m
            else ""
        )
    )
    print(
        json.dumps(
            {
                "run_dir": result.run_dir,
                "best_checkpoint": result.best_checkpoint,
                "best_metrics": result.best_metrics,
                "latest_checkpoint": result.latest_checkpoint,
                "latest_metrics": result.latest_metrics,
                "evaluation": evaluation,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
