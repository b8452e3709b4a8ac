"""Train the digit recogniser that scores generated audio.

    python -m jobs.train_classifier --data PARQUET --out DIR_OR_S3
        [--epochs N] [--no-gl-augment] [--gl-iters N] [--min-accuracy A]

Trains a small CNN on the ``train`` split of a dataset written by jobs.preprocess,
on the real spectrograms and on their Griffin-Lim resynthesis (so vocoder
artefacts are not mistaken for content), then scores the ``test`` split clean and
resynthesised. Writes OUT/config.json (features + recogniser config),
OUT/model.weights.h5 and OUT/metrics.json. Runs in this process (Griffin-Lim
batched in TensorFlow, vae.vocoder); no Ray cluster is needed. Exits 1, after saving,
when the clean test accuracy is below --min-accuracy. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from jobs._cli import add_config_arguments, add_out, job_config, parser, run, show_config_defaults
from vae.config import RecogniserConfig

# Shorthand flag -> the RecogniserConfig key it sets (any key: --set recogniser.KEY=VALUE).
SHORTHANDS = {
    "epochs": "recogniser.epochs",
    "gl_iters": "recogniser.gl_iters",
    "gl_augment": "recogniser.gl_augment",
    "seed": "recogniser.seed",
}


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.train_classifier", __doc__)
    p.add_argument(
        "--data", required=True, metavar="PARQUET", help="Parquet dataset written by jobs.preprocess (folder or s3://)"
    )
    add_out(p, "recogniser checkpoint folder (local or s3://)")
    p.add_argument("--epochs", type=int, help="training epochs")
    p.add_argument("--gl-iters", type=int, help="Griffin-Lim iterations of the augmentation")
    p.add_argument(
        "--no-gl-augment",
        dest="gl_augment",
        action="store_const",
        const=False,
        default=None,
        help="train on the real spectrograms only",
    )
    p.add_argument("--seed", type=int, help="seed of the weights and the shuffling")
    p.add_argument("--min-accuracy", type=float, default=0.95, help="exit 1 if the test accuracy is below this")
    add_config_arguments(p, "recogniser.learning_rate=1e-3")
    show_config_defaults(p, SHORTHANDS, {"recogniser": RecogniserConfig()})
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("train_classifier", lambda: _main(args), args.verbose)


def _main(args: argparse.Namespace) -> int:
    from vae import storage
    from vae.evaluation import recogniser

    config = job_config(args, RecogniserConfig, "recogniser", SHORTHANDS)
    started = time.perf_counter()
    storage.check_reachable(args.out)
    rec = recogniser.train_from_parquet(args.data, config)
    rec.metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    out = recogniser.save(rec, args.out)
    m = rec.metrics
    print(
        f"recogniser saved to {out}: test accuracy {m['test_accuracy']:.4f} clean, "
        f"{m['test_accuracy_griffin_lim']:.4f} after Griffin-Lim ({m['test_clips']} clips), "
        f"trained on {m['train_clips_with_augmentation']} spectrograms in {m['train_seconds']:.0f} s"
    )
    ok = m["test_accuracy"] >= args.min_accuracy
    if not ok:
        print(
            f"train_classifier: test accuracy {m['test_accuracy']:.4f} is below --min-accuracy {args.min_accuracy}",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "out": out,
                "test_accuracy": m["test_accuracy"],
                "test_accuracy_griffin_lim": m["test_accuracy_griffin_lim"],
                "test_clips": m["test_clips"],
                "train_seconds": m["train_seconds"],
                "passed": ok,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
