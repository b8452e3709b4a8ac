"""Waveform <-> normalised spectrogram. Pure functions of (data, FeatureConfig).

Shared by preprocessing (forward), generation and reconstruction (inverse) and
evaluation (both), so a model's output is always read back the same way its
input was made.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np

from vae.config import FeatureConfig


class AudioError(ValueError):
    """A clip cannot be turned into features; ``reason`` says why in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Clip:
    waveform: np.ndarray  # float32, mono, at FeatureConfig.sample_rate, full length
    source_sample_rate: int
    source_channels: int
    duration_s: float  # of the source, before trimming to clip_seconds


def decode_audio(data: bytes, cfg: FeatureConfig) -> Clip:
    """Decode WAV (or any libsndfile format) bytes to mono float32 at ``cfg.sample_rate``.

    Raises :class:`AudioError` for empty, undecodable or silent input. Other
    sample rates are resampled and multi-channel audio is mixed down.
    """
    import soundfile as sf

    if not data:
        raise AudioError("empty file")
    truncated = _wav_truncation(data)
    if truncated:
        raise AudioError(truncated)
    try:
        y, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for corrupt input
        detail = re.sub(r"^Error opening <[^>]*>: ", "", str(exc).strip())  # drop the BytesIO repr
        raise AudioError(f"not decodable audio: {detail or type(exc).__name__}") from None
    channels = y.shape[1]
    duration_s = y.shape[0] / sr
    y = y.mean(axis=1)
    if y.size == 0:
        raise AudioError("no audio samples")
    if not np.all(np.isfinite(y)):
        raise AudioError("non-finite samples")
    if sr != cfg.sample_rate:
        y = resample(y, sr, cfg.sample_rate)
    if float(np.max(np.abs(y))) < cfg.silence_peak:
        raise AudioError(f"silent (peak below {cfg.silence_peak:g} of full scale)")
    return Clip(y.astype(np.float32), int(sr), int(channels), float(duration_s))


def _wav_truncation(data: bytes) -> str | None:
    """Why a RIFF/WAVE file is cut short, or None. libsndfile silently decodes
    whatever part of a truncated data chunk is present, so check the declared size."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None  # not RIFF/WAVE: libsndfile decides
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            if size in (0, 0xFFFFFFFF):  # streaming writers leave the size unknown
                return None
            present = len(data) - pos - 8
            if present < size:
                return f"truncated: WAV data chunk declares {size} bytes, {present} present"
            return None
        pos += 8 + size + (size & 1)
    return None


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    import librosa

    return librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq").astype(np.float32)


def fit_length(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The first ``clip_seconds`` of ``y``, right-padded with zeros."""
    n = cfg.n_samples
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, len(y))] = y[:n]
    return out


def _stft_reference(cfg: FeatureConfig) -> float:
    # Magnitude of a full-scale sine under a Hann window: sum(window) / 2 = n_fft / 4.
    return cfg.n_fft / 4.0


def magnitude(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """|STFT| of a fixed-length clip, Nyquist side trimmed to ``n_bins`` rows: (n_bins, n_frames)."""
    import librosa

    stft = librosa.stft(fit_length(y, cfg), n_fft=cfg.n_fft, hop_length=cfg.hop_length, window="hann", center=True)
    return np.abs(stft[: cfg.n_bins]).astype(np.float32)


def magnitude_to_db(mag: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    if cfg.normalisation == "fixed":
        db = 20.0 * np.log10(np.maximum(mag, 1e-10) / _stft_reference(cfg))
        return np.clip(db, cfg.db_floor, cfg.db_ceiling)
    # per_clip: librosa.amplitude_to_db with its defaults (ref=1, amin=1e-5, top_db=80), as the original.
    db = 20.0 * np.log10(np.maximum(mag, 1e-5))
    return np.maximum(db, db.max() - (cfg.db_ceiling - cfg.db_floor))


def waveform_to_spectrogram(y: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, float, float]:
    """Normalised spectrogram in [0, 1] of shape ``cfg.shape``, and the dB range it was scaled from.

    ``y`` must already be at ``cfg.sample_rate`` (see :func:`decode_audio`).
    """
    y = np.asarray(y, dtype=np.float32)
    if cfg.peak_normalise_input:
        peak = float(np.max(np.abs(y))) if y.size else 0.0
        if peak < cfg.silence_peak:
            raise AudioError(f"silent (peak below {cfg.silence_peak:g} of full scale)")
        y = y / peak
    db = magnitude_to_db(magnitude(y, cfg), cfg)
    if cfg.normalisation == "fixed":
        db_min, db_max = cfg.db_floor, cfg.db_ceiling
    else:
        db_min, db_max = float(db.min()), float(db.max())
        if db_max - db_min < 1e-6:
            raise AudioError("silent (flat spectrogram within the clip window)")
    spec = (db - db_min) / (db_max - db_min)
    return spec.astype(np.float32), float(db_min), float(db_max)


def spectrogram_to_db(spec: np.ndarray, cfg: FeatureConfig, db_min: float | None = None, db_max: float | None = None) -> np.ndarray:
    """Undo the [0, 1] scaling. For ``per_clip`` without a stored range, a range of
    ``db_ceiling - db_floor`` is assumed: a constant dB offset only changes loudness,
    which the inverse's peak normalisation removes anyway."""
    lo = cfg.db_floor if db_min is None else db_min
    hi = cfg.db_ceiling if db_max is None else db_max
    return np.clip(np.asarray(spec, dtype=np.float32), 0.0, 1.0) * (hi - lo) + lo


def db_to_magnitude(db: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    ref = _stft_reference(cfg) if cfg.normalisation == "fixed" else 1.0
    return (10.0 ** (db / 20.0) * ref).astype(np.float32)


def peak_normalise(y: np.ndarray, peak: float = 0.99) -> np.ndarray:
    m = float(np.max(np.abs(y))) if y.size else 0.0
    if not np.isfinite(m) or m == 0.0:
        return np.zeros_like(y, dtype=np.float32)
    return (y * (peak / m)).astype(np.float32)


def spectrogram_to_waveform(
    spec: np.ndarray,
    cfg: FeatureConfig,
    db_min: float | None = None,
    db_max: float | None = None,
    n_iter: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """One normalised spectrogram -> waveform at ``cfg.sample_rate`` by Griffin-Lim, peak-normalised.

    A batch of one for :func:`vae.vocoder.spectrograms_to_waveforms`; give that many clips at once.
    """
    from vae.vocoder import spectrograms_to_waveforms

    spec = np.asarray(spec, dtype=np.float32)
    if spec.ndim == 3:
        spec = spec[..., 0]
    if spec.shape != cfg.shape:
        raise ValueError(f"spectrogram shape {spec.shape} does not match FeatureConfig shape {cfg.shape}")
    ranges = (None, None) if db_min is None and db_max is None else ([db_min], [db_max])
    return spectrograms_to_waveforms(spec[None], cfg, *ranges, n_iter=n_iter, seed=seed)[0]


def log_spectral_distance(a: np.ndarray, b: np.ndarray, cfg: FeatureConfig) -> float:
    """Log-spectral distance in dB between two waveforms, each peak-normalised first.

    RMS over frequency of the dB difference, averaged over frames; dB floored at
    ``cfg.db_floor`` below the louder clip's peak so silence does not dominate.
    """
    ma, mb = magnitude(peak_normalise(a, 1.0), cfg), magnitude(peak_normalise(b, 1.0), cfg)
    da, db_ = 20 * np.log10(np.maximum(ma, 1e-10)), 20 * np.log10(np.maximum(mb, 1e-10))
    floor = max(da.max(), db_.max()) + cfg.db_floor - cfg.db_ceiling
    da, db_ = np.maximum(da, floor), np.maximum(db_, floor)
    return float(np.mean(np.sqrt(np.mean((da - db_) ** 2, axis=0))))


def write_wav(path_or_file, y: np.ndarray, cfg: FeatureConfig) -> None:
    import soundfile as sf

    sf.write(path_or_file, np.asarray(y, dtype=np.float32), cfg.sample_rate, subtype="PCM_16", format="WAV")


def wav_bytes(y: np.ndarray, cfg: FeatureConfig) -> bytes:
    buf = io.BytesIO()
    write_wav(buf, y, cfg)
    return buf.getvalue()
