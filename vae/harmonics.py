"""The voice's pitch: track it in a waveform, and draw its harmonics into a smooth spectrogram.

A decoder trained on squared error predicts the mean spectrogram over the pitches it is unsure of,
in which the harmonics cancel: a formant envelope that Griffin-Lim turns into a whisper.
:func:`impose_harmonics` puts them back: each voiced frame's envelope is modulated by the magnitude
response of a harmonic series at that frame's f0, seen through the STFT's Hann window, so the
rendered frame has peaks at multiples of f0 and valleys between them, around the same mean level.
Everything here is numpy on the features' grid (one f0 per STFT frame); nothing imports TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vae.config import FeatureConfig

PITCH_FMIN, PITCH_FMAX = 60.0, 400.0  # Hz: the range of adult and children's speaking voices
# pYIN runs every PITCH_HOPS STFT hops (its cost is per frame), on librosa's pitch grid of 0.1
# semitone: a coarser grid calls far fewer frames voiced.
PITCH_HOPS = 2


# Clips tracked by one pYIN call: its transition matrix and Viterbi pass are shared by the batch.
_PITCH_CLIPS = 16


def pitch_track(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """f0 in Hz of each STFT frame of ``y`` (at ``cfg.sample_rate``, cut to ``clip_seconds``); 0 where unvoiced."""
    return pitch_tracks([y], cfg)[0]


def pitch_tracks(ys, cfg: FeatureConfig) -> np.ndarray:
    """f0 in Hz ``(n, n_frames)`` of each waveform's STFT frames; 0 where unvoiced and past a clip's end.

    pYIN every :data:`PITCH_HOPS` STFT hops over frames of two periods of the lowest pitch (at least
    ``2 n_fft``), centred like the STFT's; each STFT frame takes the voicing of the nearest pYIN frame
    and the log-f0 interpolated between the voiced ones."""
    import librosa

    out = np.zeros((len(ys), cfg.n_frames), np.float32)
    clips = [np.asarray(y, np.float32)[: cfg.n_samples] for y in ys]
    by_length = np.argsort([len(y) for y in clips], kind="stable")  # a batch pads to its longest clip
    for start in range(0, len(clips), _PITCH_CLIPS):
        rows = by_length[start : start + _PITCH_CLIPS]
        batch = np.zeros((len(rows), max(len(clips[r]) for r in rows)), np.float32)
        for i, r in enumerate(rows):
            batch[i, : len(clips[r])] = clips[r]
        f0, voiced, _ = librosa.pyin(
            batch,
            fmin=PITCH_FMIN,
            fmax=min(PITCH_FMAX, cfg.sample_rate / 4),
            sr=cfg.sample_rate,
            frame_length=max(2 * cfg.n_fft, int(2 * cfg.sample_rate / PITCH_FMIN)),
            hop_length=cfg.hop_length * PITCH_HOPS,
            center=True,
        )
        for i, r in enumerate(rows):
            out[r] = _on_stft_frames(f0[i], voiced[i] & np.isfinite(f0[i]), len(clips[r]), cfg)
    return out


def warm_up() -> None:
    """Compile pYIN's numba kernels once in this process, which writes them to numba's cache beside librosa.
    Installs call it, serially: processes that start tracking pitch together on a fresh install (Ray
    workers, test workers) would all compile and write that cache at once, and a process that loads a
    kernel another is still writing can crash."""
    cfg = FeatureConfig()
    t = np.arange(cfg.n_samples // 2) / cfg.sample_rate
    pitch_tracks([np.sin(2 * np.pi * 150.0 * t).astype(np.float32)], cfg)


def _on_stft_frames(f0: np.ndarray, voiced: np.ndarray, n_samples: int, cfg: FeatureConfig) -> np.ndarray:
    """A pYIN track (every :data:`PITCH_HOPS` hops) on the STFT's frames, unvoiced from ``n_samples`` on."""
    at = np.arange(cfg.n_frames) / PITCH_HOPS
    nearest = np.minimum(np.round(at).astype(int), len(voiced) - 1)
    known = np.flatnonzero(voiced)
    if not len(known):
        return np.zeros(cfg.n_frames, np.float32)
    log_f0 = np.interp(at, known, np.log(f0[known]))
    inside = np.arange(cfg.n_frames) * cfg.hop_length < n_samples
    return np.where(inside & voiced[nearest], np.exp(log_f0), 0.0).astype(np.float32)


def comb_db(f0, cfg: FeatureConfig, depth_db: float, xp: Any = np):
    """dB offsets ``(..., n_bins, n_frames)`` of a harmonic series at ``f0`` (Hz, ``(..., n_frames)``; 0: unvoiced,
    offset 0), computed with ``xp`` (numpy, or ``tensorflow.experimental.numpy`` inside a model's loss).

    Per voiced frame: 10 log10 of the summed power response of the harmonics ``h f0`` below Nyquist through
    the STFT's Hann window (|DFT| 1 at a harmonic, 0 two bins away; the three harmonics nearest each bin
    are all that reach it), floored ``depth_db`` below the peaks, minus its mean over the frame's bins, so
    the modulation leaves the frame's mean log level (what a squared-error decoder predicts) where it was."""
    bin_hz = cfg.sample_rate / cfg.n_fft
    f0 = xp.asarray(f0, dtype=xp.float32)
    spacing = xp.maximum(f0[..., None, :] / bin_hz, 1e-3)  # harmonic spacing in bins, (..., 1, n_frames)
    k = xp.arange(cfg.n_bins, dtype=xp.float32)[:, None]
    nearest = xp.floor(k / spacing + 0.5)
    last = xp.floor(cfg.sample_rate / 2 / bin_hz / spacing)
    power = xp.zeros_like(k / spacing)
    for offset in (-1.0, 0.0, 1.0):
        h = nearest + offset
        d = k - h * spacing
        response = xp.sinc(d) + 0.5 * xp.sinc(d - 1.0) + 0.5 * xp.sinc(d + 1.0)
        power = power + xp.where(xp.logical_and(h >= 1, h <= last), response * response, 0.0)
    db = xp.maximum(10.0 * xp.log10(xp.maximum(power, 1e-12)), -depth_db)
    return xp.where(f0[..., None, :] > 0, db - xp.mean(db, axis=-2, keepdims=True), 0.0)


def impose_harmonics(
    specs: np.ndarray, f0: np.ndarray, cfg: FeatureConfig, depth_db: float, db_width: np.ndarray | None = None
) -> np.ndarray:
    """Normalised spectrograms ``(n, n_bins, n_frames)`` with the harmonics of ``f0`` ``(n, n_frames)`` drawn in.

    ``db_width``: the dB span each clip's [0, 1] scale covers (``per_clip`` ranges); default the config's."""
    specs = np.asarray(specs, np.float32)
    width = np.full(len(specs), cfg.db_ceiling - cfg.db_floor) if db_width is None else np.asarray(db_width)
    offsets = comb_db(np.asarray(f0, np.float32), cfg, depth_db) / np.maximum(width, 1e-6)[:, None, None]
    return np.clip(specs + offsets, 0.0, 1.0).astype(np.float32)
