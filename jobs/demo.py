"""The end-to-end demo on a local Ray instance (``make demo``).

    FSDD_DIR=/path/to/recordings python -m jobs.demo [--out runs/demo] [--train-budget S] [--epochs E] [--seed N]

Locates the recordings (``FSDD_DIR``, else downloads the pinned release into
``runs/data``), then runs the pipeline in train-only mode: Ray Data extraction,
the digit recogniser, the default VAE trained with Ray Train for as many
epochs as fit ``--train-budget`` seconds (vae.config.DemoConfig), evaluation,
and the report. On a 2-core laptop it takes about 15 minutes, most of it
training, because training is what makes the digits intelligible. Ends by
printing the path of the report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from jobs._cli import fail
from vae import storage
from vae.config import DemoConfig
from vae.errors import UserError
from vae.fetch import fetch_fsdd

def locate_data(fsdd_dir: str | None, download_to: str) -> str:
    """``fsdd_dir`` when given (it must exist), else the recordings fetched into ``download_to``."""
    if fsdd_dir:
        if not storage.exists(fsdd_dir):
            raise storage.StorageError(f"FSDD_DIR={fsdd_dir} does not exist")
        return storage.resolve(fsdd_dir).uri
    print(f"FSDD_DIR not set: fetching the dataset into {download_to}", flush=True)
    return fetch_fsdd(download_to)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo", help="folder or s3:// prefix for everything the demo makes")
    defaults = DemoConfig()
    p.add_argument("--train-budget", type=float, default=defaults.train_budget_s, help="seconds of training: no epoch starts that would end past them")
    p.add_argument("--epochs", type=int, default=defaults.max_epochs, help="at most this many epochs")
    p.add_argument("--seed", type=int, default=defaults.seed, help="training seed")
    p.add_argument("--download-to", default="runs/data", help="where to fetch FSDD when FSDD_DIR is not set")
    args = p.parse_args(argv)
    started = time.perf_counter()
    try:
        from vae.pipeline import run_pipeline
        from vae.raysetup import finish_ray, init_ray

        data_dir = locate_data(os.environ.get("FSDD_DIR") or None, args.download_to)
        cfg = DemoConfig(max_epochs=args.epochs, train_budget_s=args.train_budget, seed=args.seed).validate().run_config()
        init_ray()
        name = time.strftime("demo-%Y%m%d-%H%M%S")
        result = run_pipeline(data_dir, args.out, name, run_cfg=cfg)
    except (UserError, RuntimeError, ValueError) as exc:  # ConfigError is a ValueError
        return fail("demo", str(exc))
    finish_ray()
    summary = result.summary()
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    m = result.metrics
    print(f"digit accuracy of generated digits {m.get('digit_accuracy')} (vocoder floor {m.get('digit_accuracy_floor')}), "
          f"reconstruction LSD {m.get('recon_lsd_db')} dB (floor {m.get('recon_lsd_db_floor')} dB)")
    print(f"demo finished in {summary['wall_s'] / 60:.1f} min; best checkpoint {result.best_checkpoint}")
    print(f"report: {result.report}")
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
