"""Score a trained VAE on the audio it makes and write its report.

    python -m jobs.evaluate --checkpoint CKPT --data PARQUET --out DIR
        [--recogniser DIR] [--n-per-digit N] [--n-unconditional N] [--wavs DIR] [--seed S]
        [--set eval.KEY=VALUE] [--set sampling.KEY=VALUE]

Writes DIR/metrics.json (each metric with its vocoder floor) and DIR/index.html
with its PNG and WAV files beside it, referenced relatively. CKPT, PARQUET, DIR,
the recogniser and the --wavs folder (extra clips, e.g. unseen voices) may be local
or s3://. Without --recogniser the sample metrics (digit accuracy, inception
score, Frechet distance) are skipped. Runs in this process (Griffin-Lim
batched in TensorFlow, vae.vocoder); no Ray cluster is needed. ``--set sampling.KEY=VALUE`` decodes
the checkpoint with another of its decoding choices (``local_temperature``, ``harmonic_depth_db``, ...;
vae.config.SamplingConfig); the report records what was used. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs._cli import (
    add_config_arguments,
    add_out,
    add_recogniser,
    job_config,
    parser,
    root_overrides,
    run,
    show_config_defaults,
)
from vae.config import EvalConfig

# Shorthand flag -> the EvalConfig key it sets (any key: --set eval.KEY=VALUE).
SHORTHANDS = {"n_per_digit": "eval.n_per_digit", "n_unconditional": "eval.n_unconditional", "seed": "eval.seed"}
HEADLINE = ("digit_accuracy", "inception_score", "frechet_distance", "recon_lsd_db", "recon_mse")


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.evaluate", __doc__)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="VAE checkpoint folder (local or s3://)")
    p.add_argument(
        "--data",
        required=True,
        metavar="PARQUET",
        help="Parquet dataset written by jobs.preprocess (its test split is used)",
    )
    add_out(p, "report folder (local or s3://)")
    add_recogniser(p, "recogniser folder written by jobs.train_classifier: without it, no sample metrics")
    p.add_argument("--n-per-digit", type=int, help="digit-conditional samples per digit")
    p.add_argument("--n-unconditional", type=int, help="prior samples for IS and FD")
    p.add_argument(
        "--wavs",
        metavar="DIR_OR_S3",
        help="a folder of other WAVs (e.g. unseen voices) to measure reconstruction on (default none)",
    )
    p.add_argument("--seed", type=int, help="sampling and Griffin-Lim seed")
    add_config_arguments(p, "eval.n_report_per_digit=2")
    show_config_defaults(p, SHORTHANDS, {"eval": EvalConfig()})
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("evaluate", lambda: _main(args), args.verbose)


def _main(args: argparse.Namespace) -> int:
    config = job_config(args, EvalConfig, "eval", SHORTHANDS, others=("sampling",))
    sampling = root_overrides(args, SHORTHANDS, "sampling")
    from vae import storage
    from vae.checkpoint import check, check_decoding, check_recogniser, load, with_sampling

    check_decoding(sampling)  # a bad option fails before anything loads

    storage.check_reachable(args.out)
    check(args.checkpoint)  # before TensorFlow loads: a wrong folder fails in seconds
    if args.recogniser:
        check_recogniser(args.recogniser)
    from vae.reports.run_report import evaluate_and_report

    loaded = with_sampling(load(args.checkpoint), sampling)
    m = evaluate_and_report(loaded, args.data, args.out, args.recogniser, config=config, wavs_uri=args.wavs)
    for name in HEADLINE:
        if name in m:
            refs = {"vocoder floor": m.get(f"{name}_floor"), "real clips": m.get(f"{name}_real")}
            shown = ", ".join(f"{k} {v:.4f}" for k, v in refs.items() if v is not None)
            print(f"{name:18s} {m[name]:10.4f}" + (f"   ({shown})" if shown else ""))
    out = storage.resolve(args.out).uri
    print(f"report: {storage.join(out, 'index.html')}")
    headline = {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
    print(
        json.dumps(
            {
                "out": out,
                "report": storage.join(out, "index.html"),
                "metrics": storage.join(out, "metrics.json"),
                **headline,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
