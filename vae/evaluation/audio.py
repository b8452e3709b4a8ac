"""Many clips through the vocoder and back: what a user hears, as features again.

Griffin-Lim runs batched in this process (:mod:`vae.vocoder`, TensorFlow on its
own thread pool, CPU or GPU).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from vae import features
from vae.config import FeatureConfig
from vae.vocoder import spectrograms_to_waveforms

log = logging.getLogger(__name__)

# Seconds between progress lines.
_PROGRESS_EVERY_S = 5.0


def resynthesise(
    specs: np.ndarray,
    cfg: FeatureConfig,
    db_min: np.ndarray | None = None,
    db_max: np.ndarray | None = None,
    n_iter: int | None = None,
    seed: int = 0,
    label: str = "griffin-lim",
) -> np.ndarray:
    """Normalised spectrograms ``(N, n_bins, n_frames)`` -> waveforms ``(N, cfg.n_samples)``.

    ``db_min``/``db_max`` are per-clip ranges (``per_clip`` features); ``None``
    uses the config's range. Clip ``i`` gets the Griffin-Lim seed ``seed + i``.
    Progress goes to the log: a line when done, and (at DEBUG, ``--verbose``) every few seconds.
    """
    last = [time.monotonic()]

    def progress(done: int, n: int) -> None:
        if done == n or time.monotonic() - last[0] >= _PROGRESS_EVERY_S:
            last[0] = time.monotonic()
            (log.info if done == n else log.debug)("%s: %d/%d clips", label, done, n)

    return spectrograms_to_waveforms(specs, cfg, db_min, db_max, n_iter=n_iter, seed=seed, progress=progress)


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
