"""What each modelling choice buys, heard through the vocoder: named variants trained for the same
wall-clock budget on the same data, scored with jobs.evaluate's metrics, in one run.

    python -m benchmarks.quality --data PARQUET --classifier RECOGNISER [--budget 300 | --epochs N] [--seeds 0 1]
        [--variants original expost conditional calibrated mixture tied default pitch through]
        [--held-out-speaker theo] [--out benchmarks/results/voice.json] [--keep DIR]

Every variant is a few config overrides (plain data, below) on the project's defaults, trained by
``vae.training.fit`` (Ray Train, one worker) until ``--budget`` seconds of training are spent, then
scored on the test split by ``vae.evaluation.run.evaluate_run``. ``--epochs`` trains a fixed number of
epochs instead (a fair comparison on a machine shared with other work). ``--held-out-speaker`` keeps
that speaker out of every variant's training, so the held-out metrics score a voice never heard.
Prints one table, with the vocoder floors (real test clips through the features and Griffin-Lim alone)
and the seconds each used, and the spread over ``--seeds``. The last stdout line is JSON with every
row; ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time

import numpy as np

# The model `make demo` trained before the issue "Digits people can hear": unconditional, N(0, I),
# 1e5 x MSE, digit samples from the digit's mean training latent and spread (the original's way).
ORIGINAL = {
    "model.conditional": False,
    "prior.kind": "normal",
    "loss.reconstruction": "mse",
    "loss.recon_weight": 1e5,
    "loss.kl_warmup_epochs": 0,
    "model.latent_dim": 32,
    "sampling.sampler": "prior",
}
VARIANTS: dict[str, dict] = {
    "original": ORIGINAL,
    "expost": {**ORIGINAL, "sampling.sampler": "expost"},
    "conditional": {**ORIGINAL, "model.conditional": True, "sampling.sampler": "expost"},
    "calibrated": {**ORIGINAL, "loss.reconstruction": "gaussian", "sampling.sampler": "expost"},
    "mixture": {**ORIGINAL, "prior.kind": "mixture", "prior.components": 10},
    "tied": {**ORIGINAL, "prior.kind": "tied"},
    "demo": {},  # what `make demo` trains (DemoConfig: demo_overrides below)
    "default": {},  # the project's defaults (RunConfig(); the demo adds speaker augmentation: "augmented")
    # The default with its learning rate annealed (cosine, to 5%) over the time budget.
    "annealed": {"train.lr_schedule": "cosine"},
    # The default at twice its learning rate.
    "faster_lr": {"train.learning_rate": 2e-3},
    # The default without BatchNorm: 1.36x the step's clips/s on 2 cores, so more epochs in the budget.
    "unnormalised": {"model.normalisation": "none"},
    # The default without its pitch head: the decoder's spectrogram alone, no harmonics drawn.
    "no_pitch": {"model.pitch": False},
    # The decoder also predicts each frame's pitch, drawn in as harmonics when decoding.
    "pitch": {"model.pitch": True, "loss.through_harmonics": False},
    # The same, the reconstruction scored with the clip's own harmonics drawn into the decoder's output.
    "through": {"model.pitch": True, "loss.through_harmonics": True},
    # The default at a lower KL weight: a higher-rate code.
    "beta_0.3": {"loss.beta": 0.3},
    "beta_0.1": {"loss.beta": 0.1},
    # The default with a wider code, and with a full-width decoder.
    "latent_128": {"model.latent_dim": 128},
    # A second, local code beside the first (ModelConfig.local_channels): channels at the map of that level.
    "local_4": {"model.local_channels": 4, "model.local_level": 1},
    "local_4_unscored_mean": {"model.local_channels": 4, "model.local_level": 1, "loss.local_prior_weight": 0.0},
    "local_8": {"model.local_channels": 8, "model.local_level": 1},
    "local_4_no_pitch": {"model.local_channels": 4, "model.local_level": 1, "model.pitch": False},
    "local_4_drawn": {"model.local_channels": 4, "model.local_level": 1, "loss.through_harmonics": False},
    "local_8_level2_unscored_mean": {
        "model.local_channels": 8,
        "model.local_level": 2,
        "loss.local_prior_weight": 0.0,
    },
    "local_2_level0": {"model.local_channels": 2, "model.local_level": 0},
    "wide_decoder": {"model.decoder_width": 1.0},
    # The default trained on its clips and two augmented copies of each (more voices: vae/augment.py).
    "augmented": {"train.augment_copies": 2},
    # Twice the copies, each warped up to 1 +- 0.2 (a wider spread of vocal tracts and pitches).
    "augmented_wide": {"train.augment_copies": 4, "train.augment_warp": 0.2},
    # The default with a digit adversary on its code (the digit said by the label alone).
    "adversary": {"loss.digit_adversary": 100.0, "loss.adversary_kind": "reverse"},
    "adversary_1k": {"loss.digit_adversary": 1000.0, "loss.adversary_kind": "reverse"},
    "adversary_10k": {"loss.digit_adversary": 10000.0, "loss.adversary_kind": "reverse"},
    # The same, the encoder pushing the adversary's prediction to uniform instead.
    "confuse_300": {"loss.digit_adversary": 300.0, "loss.adversary_kind": "confuse"},
    "confuse_1k": {"loss.digit_adversary": 1000.0, "loss.adversary_kind": "confuse"},
    # No game: the digits' share of the code's variance descended directly.
    "moments_300": {"loss.digit_adversary": 300.0, "loss.adversary_kind": "moments"},
    "moments_1k": {"loss.digit_adversary": 1000.0, "loss.adversary_kind": "moments"},
    # The confusing adversary on a lower-rate code: a KL weight of 3, 10 and 30 (KL ~140 -> ~95, ~55, ~30 nats).
    "confuse_300_beta3": {"loss.digit_adversary": 300.0, "loss.adversary_kind": "confuse", "loss.beta": 3.0},
    "confuse_300_beta10": {"loss.digit_adversary": 300.0, "loss.adversary_kind": "confuse", "loss.beta": 10.0},
    "confuse_300_beta30": {"loss.digit_adversary": 300.0, "loss.adversary_kind": "confuse", "loss.beta": 30.0},
    "confuse_1k_beta30": {"loss.digit_adversary": 1000.0, "loss.adversary_kind": "confuse", "loss.beta": 30.0},
    # The confusing adversary on the demo's model: more voices for the code to carry.
    "augmented_confuse_300": {
        "train.augment_copies": 2,
        "loss.digit_adversary": 300.0,
        "loss.adversary_kind": "confuse",
    },
    "augmented_confuse_300_beta30": {
        "train.augment_copies": 2,
        "loss.digit_adversary": 300.0,
        "loss.adversary_kind": "confuse",
        "loss.beta": 30.0,
    },
}
METRICS = (
    "digit_accuracy",
    "inception_score",
    "frechet_distance",
    "recon_lsd_db",
    "voicing_samples",
    "voicing_recon",
    "pesq_nb",
    "held_out_lsd_db",
    "held_out_pesq_nb",
    "held_out_voicing",
    "held_out_heard_as_speaker",
)


def score_checkpoint(uri: str, data: str, classifier: str, sampling: dict | None = None) -> dict:
    """``evaluate_run``'s METRICS of the checkpoint at ``uri`` and their floors (``<metric>_floor``), decoded
    with the ``sampling`` overrides given (``vae.checkpoint.with_sampling``)."""
    from vae import checkpoint
    from vae.evaluation.evaluators import REFERENCES
    from vae.evaluation.run import evaluate_run

    metrics = evaluate_run(
        checkpoint.with_sampling(checkpoint.load(uri), sampling or {}), data, classifier_uri=classifier
    )
    return {
        **{k: metrics.get(k) for k in (*METRICS, "sampler")},
        **{f"{m}_floor": metrics.get(f"{REFERENCES.get(m, m)}_floor") for m in METRICS},
    }


def decoding(p: argparse.ArgumentParser, assignments: list[str]) -> dict:
    """The ``sampling.KEY=VALUE`` assignments as ``{KEY: VALUE}``, checked; any other key is a usage error."""
    from vae.checkpoint import check_decoding
    from vae.config import ConfigError
    from vae.overrides import parse_assignment, split

    try:
        parts = split(dict(parse_assignment(a) for a in assignments), ["sampling"])
        if parts[""]:
            raise ConfigError(f"{sorted(parts[''])[0]}: only sampling.* can change how a trained run decodes")
        check_decoding(parts["sampling"])
    except ConfigError as exc:
        p.error(str(exc))
    return parts["sampling"]


def demo_overrides() -> dict:
    """The overrides that make the project's defaults the model ``make demo`` trains (``DemoConfig``),
    less what a benchmark sets itself (length, seed, checkpoints, held-out speaker)."""
    from vae.config import DemoConfig, RunConfig, to_dict
    from vae.overrides import flatten

    base, demo = flatten(to_dict(RunConfig())), flatten(to_dict(DemoConfig().run_config()))
    own = ("train.epochs", "train.time_budget_s", "train.seed", "train.checkpoint_every", "train.held_out_speaker")
    return {k: v for k, v in demo.items() if v != base.get(k) and k not in own}


def train_variant(name: str, overrides: dict, seed: int, args: argparse.Namespace, storage_dir: str):
    """``vae.training.fit`` of the variant for ``args.epochs`` epochs or ``args.budget`` seconds, and the seconds it took."""
    from vae.config import RunConfig
    from vae.search_space import apply_overrides
    from vae.training import fit

    if name == "demo":
        overrides = {**demo_overrides(), **overrides}
    length = (
        {"train.epochs": args.epochs} if args.epochs else {"train.epochs": 1000, "train.time_budget_s": args.budget}
    )
    cfg = apply_overrides(
        RunConfig(), {**overrides, "train.seed": seed, "train.held_out_speaker": args.held_out_speaker, **length}
    )
    t0 = time.perf_counter()
    result = fit(cfg, args.data, storage_dir, f"{name}-seed{seed}")
    return result, time.perf_counter() - t0


def run_variant(name: str, overrides: dict, seed: int, args: argparse.Namespace, storage_dir: str) -> dict:
    result, train_s = train_variant(name, overrides, seed, args, storage_dir)
    return {
        "variant": name,
        "seed": seed,
        "epochs": result.latest_metrics.get("epoch"),
        "best_epoch": result.best_metrics.get("epoch"),
        "train_s": round(train_s, 1),
        **score_checkpoint(result.best_checkpoint, args.data, args.classifier),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="Parquet dataset (jobs.preprocess, default features)")
    p.add_argument("--classifier", required=True, help="recogniser checkpoint (jobs.train_classifier)")
    p.add_argument("--budget", type=float, default=300.0, help="seconds of training per variant and seed")
    p.add_argument("--epochs", type=int, default=0, help="train this many epochs instead of --budget seconds")
    p.add_argument("--held-out-speaker", default="", help="a speaker no variant trains on (default: none)")
    p.add_argument("--out", help="also write the JSON with every row to this file")
    p.add_argument("--keep", help="keep the runs in this folder (default: a temporary one, removed)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()

    from vae.raysetup import init_ray

    init_ray()
    rows = []
    with tempfile.TemporaryDirectory(prefix="quality-bench-") as tmp:
        tmp = args.keep or tmp
        for name in args.variants:
            for seed in args.seeds:
                rows.append(run_variant(name, VARIANTS[name], seed, args, tmp))
                print(json.dumps(rows[-1]), flush=True)

    length = f"{args.epochs} epochs" if args.epochs else f"{args.budget:.0f} s of training"
    print(
        f"\n{length} per run on {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
        f"mean (min-max) over seeds {args.seeds}"
    )
    print(f"{'variant':<12} {'sampler':<7} {'epochs':>6}  " + "  ".join(f"{m:>22}" for m in METRICS))
    for name in args.variants:
        mine = [r for r in rows if r["variant"] == name]
        cells = []
        for m in METRICS:
            v = np.array([r[m] for r in mine if r[m] is not None], float)
            cells.append(f"{v.mean():8.3f} ({v.min():.2f}-{v.max():.2f})" if len(v) else f"{'-':>22}")
        epochs = "/".join(str(r["epochs"]) for r in mine)
        print(f"{name:<12} {mine[0]['sampler']:<7} {epochs:>6}  " + "  ".join(f"{c:>22}" for c in cells))
    floors = [
        float(np.mean([r[f"{m}_floor"] for r in rows if r.get(f"{m}_floor") is not None] or [np.nan])) for m in METRICS
    ]
    print(f"{'floor':<12} {'':<7} {'':>6}  " + "  ".join(f"{f:>22.3f}" for f in floors))
    document = {
        "budget_s": None if args.epochs else args.budget,
        "epochs": args.epochs or None,
        "held_out_speaker": args.held_out_speaker,
        "seeds": args.seeds,
        "rows": rows,
    }
    publish(document, args.out, "benchmarks.quality")


def stamp(document: dict, module: str) -> dict:
    """``document`` with the date, the machine's CPU count and the command (``python -m module`` and this
    process's arguments) first."""
    command = shlex.join(["python", "-m", module, *sys.argv[1:]])
    return {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "command": command, **document}


def publish(document: dict, out: str | None, module: str) -> None:
    """Print ``document`` (:func:`stamp`-ed) as the last stdout line; also write it to ``out``."""
    document = stamp(document, module)
    if out:
        with open(out, "w") as f:
            json.dump(document, f, indent=1)
    print(json.dumps(document))


if __name__ == "__main__":
    main()
