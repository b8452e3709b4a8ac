"""Feature presets compared: round-trip quality, storage and inversion cost (the README's `default` vs `seed`).

    python -m benchmarks.features [--takes 0] [--presets seed default]

For each clip of a fixed set (every digit and speaker, the given test-split takes):
waveform -> spectrogram (preset) -> Griffin-Lim waveform -> back at 8 kHz, then the
log-spectral distance (``features.log_spectral_distance``, 8 kHz, ``default``
analysis) against the original 8 kHz recording cut to the preset's clip length.
Reports mean LSD (dB), bytes per clip (float32 tensor, and in Parquet as the
extraction job writes it), and Griffin-Lim milliseconds per clip.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

import numpy as np
import pyarrow.parquet as pq

from vae import features as F
from vae.config import FEATURE_PRESETS, FeatureConfig, preset
from vae.dataset import clips_table, extract_clip


def measure(files: list[str], name: str) -> dict:
    cfg, at8k = preset(FeatureConfig, name), preset(FeatureConfig, "default")
    lsd, gl_s, rows = [], 0.0, []
    for path in files:
        data = open(path, "rb").read()
        row = extract_clip(path, data, cfg)
        rows.append(row)
        t = time.perf_counter()
        y = F.spectrogram_to_waveform(row["spectrogram"], cfg, row["db_min"], row["db_max"])
        gl_s += time.perf_counter() - t
        if cfg.sample_rate != at8k.sample_rate:
            y = F.resample(y, cfg.sample_rate, at8k.sample_rate)
        original = F.decode_audio(data, at8k).waveform[: int(round(cfg.clip_seconds * at8k.sample_rate))]
        lsd.append(F.log_spectral_distance(original, y, at8k))
    buf = io.BytesIO()
    pq.write_table(clips_table(rows, cfg), buf)
    return dict(
        preset=name,
        shape=list(cfg.shape),
        clips=len(files),
        lsd_db=round(float(np.mean(lsd)), 3),
        lsd_db_median=round(float(np.median(lsd)), 3),
        tensor_kib_per_clip=round(rows[0]["spectrogram"].nbytes / 1024, 1),
        parquet_kib_per_clip=round(buf.tell() / len(files) / 1024, 1),
        griffin_lim_ms_per_clip=round(1e3 * gl_s / len(files), 1),
        griffin_lim_iters=cfg.griffin_lim_iters,
    )


def main(argv: list[str] | None = None) -> None:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", default=os.environ.get("FSDD_DIR") or os.path.join(repo, "..", "shared", "fsdd", "recordings"))
    p.add_argument("--takes", type=int, nargs="+", default=[0], help="test-split takes (0-4) to use")
    p.add_argument("--presets", nargs="+", default=["seed", "default"], choices=sorted(FEATURE_PRESETS))
    args = p.parse_args(argv)
    files = sorted(
        os.path.join(args.src, f) for f in os.listdir(args.src)
        if f.endswith(".wav") and int(f[:-4].rsplit("_", 1)[1]) in args.takes
    )
    results = [measure(files, name) for name in args.presets]
    print(f"{len(files)} clips (takes {args.takes}); LSD vs the original 8 kHz clip")
    print(f"{'preset':8} {'shape':>10} {'LSD dB':>7} {'KiB/clip':>9} {'Parquet KiB':>12} {'GL ms':>7}")
    for r in results:
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['preset']:8} {shape:>10} {r['lsd_db']:7.2f} {r['tensor_kib_per_clip']:9.1f} "
              f"{r['parquet_kib_per_clip']:12.1f} {r['griffin_lim_ms_per_clip']:7.1f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
