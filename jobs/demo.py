"""The end-to-end demo on a local Ray instance (``make demo``).

    FSDD_DIR=/path/to/recordings python -m jobs.demo [--out runs/demo] [--features default]

Steps so far: locate the recordings (``FSDD_DIR``, else download the pinned
release into ``runs/data``), extract spectrograms with Ray Data into
``OUT/features``. Later stages append to :func:`run_demo`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from vae import dataset, storage
from vae.config import FEATURE_PRESETS, FeatureConfig, preset
from vae.fetch import FetchError, fetch_fsdd
from vae.raysetup import init_ray


def locate_data(fsdd_dir: str | None, download_to: str) -> str:
    """``fsdd_dir`` when given (it must exist), else the recordings fetched into ``download_to``."""
    if fsdd_dir:
        if not storage.exists(fsdd_dir):
            raise storage.StorageError(f"FSDD_DIR={fsdd_dir} does not exist")
        return storage.resolve(fsdd_dir).uri
    print(f"FSDD_DIR not set: fetching the dataset into {download_to}", flush=True)
    return fetch_fsdd(download_to)


def run_demo(data_dir: str, out: str, features: str) -> dict[str, Any]:
    """Each stage prints its own summary; returns the paths and headline numbers for the final JSON line."""
    init_ray()
    cfg = preset(FeatureConfig, features)
    extracted = dataset.extract(data_dir, storage.join(out, "features"), cfg)
    print(f"{extracted.written} clips written, {extracted.rejected} rejected")
    print(f"features: {extracted.output} ({extracted.train} train / {extracted.test} test, {features} {cfg.shape})")
    return {
        "data": data_dir,
        "features": extracted.output,
        "rejected": extracted.rejected_output,
        "clips_written": extracted.written,
        "clips_rejected": extracted.rejected,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo", help="folder or s3:// prefix for everything the demo makes")
    p.add_argument("--features", default="default", choices=sorted(FEATURE_PRESETS))
    p.add_argument("--download-to", default="runs/data", help="where to fetch FSDD when FSDD_DIR is not set")
    args = p.parse_args(argv)
    try:
        data_dir = locate_data(os.environ.get("FSDD_DIR") or None, args.download_to)
        result = run_demo(data_dir, args.out, args.features)
    except (FetchError, storage.StorageError, dataset.ExtractError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0 if result["clips_written"] else 1


if __name__ == "__main__":
    sys.exit(main())
