"""The end-to-end demo on a local Ray instance (``make demo``).

    FSDD_DIR=/path/to/recordings python -m jobs.demo [--out runs/demo] [--time-budget S] [--epochs E] [--seed N]
        [--config FILE] [--set KEY=VALUE ...]

Locates the recordings (``FSDD_DIR``, else downloads the pinned release into
``runs/data``), then runs the pipeline in train-only mode: Ray Data extraction,
the digit recogniser, the default VAE trained with Ray Train for as many
epochs as fit ``--time-budget`` seconds (vae.config.DemoConfig), evaluation,
and the report. Most of its time is training, which is what makes the digits
intelligible (docs/benchmarks.md has its timings). Ends by printing the path of
the report. --set demo.KEY=VALUE sets the DemoConfig (the flags are shorthands
for its keys), any other key the RunConfig it trains.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from jobs._cli import add_config_arguments, add_option, add_out, config_overrides, parser, run, show_config_defaults
from vae import storage
from vae.config import DemoConfig, RunConfig
from vae.fetch import fetch_fsdd

SHORTHANDS = {"time_budget": "demo.train_budget_s", "epochs": "demo.max_epochs", "seed": "demo.seed"}


def locate_data(fsdd_dir: str | None, download_to: str) -> str:
    """``fsdd_dir`` when given (it must exist), else the recordings fetched into ``download_to``."""
    if fsdd_dir:
        if not storage.exists(fsdd_dir):
            raise storage.StorageError(f"FSDD_DIR={fsdd_dir} does not exist")
        return storage.resolve(fsdd_dir).uri
    print(f"FSDD_DIR not set: fetching the dataset into {download_to}", flush=True)
    return fetch_fsdd(download_to)


def _figure(value: Any, digits: int) -> str:
    """A metric rounded to ``digits`` decimals, or "n/a" when it was not measured."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def headline(m: dict[str, Any]) -> str:
    """The demo's numbers in one line, each beside the vocoder's floor: the digit accuracy of its samples,
    their voicing, and the reconstruction error and PESQ of the test clips and of the voice it never heard."""
    se = f" +- {m['digit_accuracy_se']:.3f}" if "digit_accuracy_se" in m else ""
    line = (
        f"digit accuracy of generated digits {_figure(m.get('digit_accuracy'), 3)}{se} "
        f"(vocoder floor {_figure(m.get('digit_accuracy_floor'), 3)}), voicing of samples "
        f"{_figure(m.get('voicing_samples'), 2)} (real {_figure(m.get('voicing_real'), 2)}), reconstruction LSD "
        f"{_figure(m.get('recon_lsd_db'), 1)} dB (floor {_figure(m.get('recon_lsd_db_floor'), 1)} dB), "
        f"PESQ {_figure(m.get('pesq_nb'), 2)} (floor {_figure(m.get('pesq_nb_floor'), 2)})"
    )
    if m.get("held_out_speaker"):
        line += (
            f"; the voice it never heard ({m['held_out_speaker']}): LSD {_figure(m.get('held_out_lsd_db'), 1)} dB, "
            f"PESQ {_figure(m.get('held_out_pesq_nb'), 2)} (floor {_figure(m.get('held_out_pesq_nb_floor'), 2)})"
        )
    return line


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.demo", __doc__)
    add_out(p, "folder or s3:// prefix for everything the demo makes", required=False, default="runs/demo")
    add_option(
        p,
        "--time-budget",
        "--train-budget",
        type=float,
        help="seconds of training: no epoch starts that would end past them",
    )
    p.add_argument("--epochs", type=int, help="at most this many epochs")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument(
        "--download-to", metavar="DIR", default="runs/data", help="where to fetch FSDD when FSDD_DIR is not set"
    )
    add_config_arguments(p)
    show_config_defaults(p, SHORTHANDS, {"demo": DemoConfig()})
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def run_config(args: argparse.Namespace) -> RunConfig:
    """The DemoConfig's RunConfig, both changed by the options given."""
    from vae.overrides import apply_overrides, apply_run_overrides, split

    parts = split(config_overrides(args, SHORTHANDS), ["demo"])
    return apply_run_overrides(apply_overrides(DemoConfig(), parts["demo"]).run_config(), parts[""])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("demo", lambda: _main(args), args.verbose)


def _main(args: argparse.Namespace) -> int:
    """The job's body: locate the data, run the pipeline, summarise."""
    from vae.pipeline import run_pipeline
    from vae.raysetup import finish_ray, init_ray

    started = time.perf_counter()
    cfg = run_config(args)  # a bad value is named before any download
    data_dir = locate_data(os.environ.get("FSDD_DIR") or None, args.download_to)
    init_ray()
    name = time.strftime("demo-%Y%m%d-%H%M%S")
    result = run_pipeline(data_dir, args.out, name, run_cfg=cfg)
    finish_ray()
    summary = result.summary()
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    print(headline(result.metrics))
    print(f"demo finished in {summary['wall_s'] / 60:.1f} min; best checkpoint {result.best_checkpoint}")
    print(f"report: {result.report}")
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
