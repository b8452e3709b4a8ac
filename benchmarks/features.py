"""Feature presets compared: round-trip quality, storage and inversion cost (`default` vs `seed`, docs/data.md).

    python -m benchmarks.features [--takes 0] [--presets seed default]

For each clip of a fixed set (every digit and speaker, the given test-split takes):
waveform -> spectrogram (preset) -> Griffin-Lim waveform -> back at 8 kHz, then the
log-spectral distance (``features.log_spectral_distance``, 8 kHz, ``default``
analysis) against the original 8 kHz recording cut to the preset's clip length.
Reports mean LSD (dB), bytes per clip (float32 tensor, and in Parquet as the
extraction job writes it), and Griffin-Lim milliseconds per clip (the batched
``vae.vocoder`` over all clips, after one untimed compiling call;
``benchmarks/griffin_lim.py`` compares it with the per-clip librosa path).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

import numpy as np

from vae import features as F
from vae.config import FEATURE_PRESETS, FeatureConfig, preset
from vae.dataset import clips_table, extract_clip, write_parquet
from vae.vocoder import spectrograms_to_waveforms


def clip_files(src: str, takes: list[int]) -> list[str]:
    """Every clip of the given test-split takes (each digit and speaker), sorted."""
    return sorted(
        os.path.join(src, f) for f in os.listdir(src) if f.endswith(".wav") and int(f[:-4].rsplit("_", 1)[1]) in takes
    )


def clip_rows(files: list[str], cfg: FeatureConfig) -> tuple[list[bytes], list[dict]]:
    """The files' bytes and their extracted rows (spectrogram, dB range, ...) with ``cfg``."""
    data = [open(path, "rb").read() for path in files]
    return data, [extract_clip(path, d, cfg) for path, d in zip(files, data)]


def round_trip_lsd(data: bytes, y: np.ndarray, cfg: FeatureConfig) -> float:
    """LSD (dB, 8 kHz, ``default`` analysis) of ``y`` (made with ``cfg``) against the original
    recording ``data`` cut to ``cfg``'s clip length."""
    at8k = preset(FeatureConfig, "default")
    if cfg.sample_rate != at8k.sample_rate:
        y = F.resample(y, cfg.sample_rate, at8k.sample_rate)
    original = F.decode_audio(data, at8k).waveform[: int(round(cfg.clip_seconds * at8k.sample_rate))]
    return F.log_spectral_distance(original, y, at8k)


def measure(files: list[str], name: str) -> dict:
    cfg = preset(FeatureConfig, name)
    data, rows = clip_rows(files, cfg)
    specs = np.stack([r["spectrogram"] for r in rows])
    lo, hi = np.array([r["db_min"] for r in rows]), np.array([r["db_max"] for r in rows])
    spectrograms_to_waveforms(specs[:1], cfg, lo[:1], hi[:1], n_iter=1)  # trace and compile, untimed
    t = time.perf_counter()
    waves = spectrograms_to_waveforms(specs, cfg, lo, hi)
    gl_s = time.perf_counter() - t
    lsd = [round_trip_lsd(d, y, cfg) for d, y in zip(data, waves)]
    buf = io.BytesIO()
    write_parquet(clips_table(rows, cfg), buf)
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
    p.add_argument(
        "--src", default=os.environ.get("FSDD_DIR") or os.path.join(repo, "..", "shared", "fsdd", "recordings")
    )
    p.add_argument("--takes", type=int, nargs="+", default=[0], help="test-split takes (0-4) to use")
    p.add_argument("--presets", nargs="+", default=["seed", "default"], choices=sorted(FEATURE_PRESETS))
    args = p.parse_args(argv)
    files = clip_files(args.src, args.takes)
    results = [measure(files, name) for name in args.presets]
    print(f"{len(files)} clips (takes {args.takes}); LSD vs the original 8 kHz clip")
    print(f"{'preset':8} {'shape':>10} {'LSD dB':>7} {'KiB/clip':>9} {'Parquet KiB':>12} {'GL ms':>7}")
    for r in results:
        shape = "x".join(map(str, r["shape"]))
        print(
            f"{r['preset']:8} {shape:>10} {r['lsd_db']:7.2f} {r['tensor_kib_per_clip']:9.1f} "
            f"{r['parquet_kib_per_clip']:12.1f} {r['griffin_lim_ms_per_clip']:7.1f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
