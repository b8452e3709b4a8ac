"""Many clips through the vocoder and back: what a user hears, as features again.

Griffin-Lim costs tens of milliseconds a clip, so batches run in worker
processes (spawned, so a parent holding TensorFlow or Ray threads is safe).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from vae import features
from vae.config import FeatureConfig

# Below this many clips, starting processes costs more than it saves.
_MIN_CLIPS_PER_PROCESS = 32


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _griffin_lim_chunk(args) -> np.ndarray:
    specs, db_min, db_max, cfg, n_iter, seed = args
    return np.stack(
        [
            features.spectrogram_to_waveform(s, cfg, lo, hi, n_iter=n_iter, seed=seed + i)
            for i, (s, lo, hi) in enumerate(zip(specs, db_min, db_max))
        ]
    )


def resynthesise(
    specs: np.ndarray,
    cfg: FeatureConfig,
    db_min: np.ndarray | None = None,
    db_max: np.ndarray | None = None,
    n_iter: int | None = None,
    workers: int | None = None,
    seed: int = 0,
    label: str = "griffin-lim",
) -> np.ndarray:
    """Normalised spectrograms ``(N, n_bins, n_frames)`` -> waveforms ``(N, cfg.n_samples)``.

    ``db_min``/``db_max`` are per-clip ranges (``per_clip`` features); ``None``
    uses the config's range. Progress goes to stderr.
    """
    specs = np.asarray(specs, dtype=np.float32)
    if specs.ndim == 4:
        specs = specs[..., 0]
    n = len(specs)
    if n == 0:
        return np.zeros((0, cfg.n_samples), dtype=np.float32)
    lo = [None] * n if db_min is None else [float(v) for v in db_min]
    hi = [None] * n if db_max is None else [float(v) for v in db_max]
    workers = min(workers or available_cpus(), max(1, n // _MIN_CLIPS_PER_PROCESS))
    # Several chunks per process, so progress advances and a slow process does not stall the rest.
    n_chunks = min(n, workers * 4)
    bounds = np.linspace(0, n, n_chunks + 1).astype(int)
    jobs = [(specs[a:b], lo[a:b], hi[a:b], cfg, n_iter, int(seed) + int(a)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    out: list[np.ndarray] = []
    done = 0
    if workers == 1:
        results = map(_griffin_lim_chunk, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_griffin_lim_chunk, jobs)
    try:
        for chunk in results:
            out.append(chunk)
            done += len(chunk)
            print(f"{label}: {done}/{n} clips", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return np.concatenate(out).astype(np.float32)


def to_spectrograms(waveforms: np.ndarray | list[np.ndarray], sample_rate: int, cfg: FeatureConfig) -> np.ndarray:
    """Waveforms at ``sample_rate`` -> normalised spectrograms ``(N, *cfg.shape)`` with ``cfg``.

    A silent clip is what a user would hear, not an error: it becomes the all-floor spectrogram.
    """
    out = np.zeros((len(waveforms), *cfg.shape), dtype=np.float32)
    for i, y in enumerate(waveforms):
        y = np.asarray(y, dtype=np.float32)
        if sample_rate != cfg.sample_rate:
            y = features.resample(y, sample_rate, cfg.sample_rate)
        try:
            out[i] = features.waveform_to_spectrogram(y, cfg)[0]
        except features.AudioError:
            pass
    return out
