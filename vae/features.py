"""Waveform <-> normalised spectrogram. Pure functions of (data, FeatureConfig).

Shared by preprocessing (forward), generation and reconstruction (inverse) and
evaluation (both), so a model's output is always read back the same way its
input was made.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vae.config import FeatureConfig
from vae.errors import UserError


class AudioError(UserError, ValueError):
    """A clip cannot be turned into features; ``reason`` says why in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TooLarge(AudioError):
    """A clip refused for its size (duration or decoded bytes), before it is decoded."""


@dataclass(frozen=True)
class Header:
    sample_rate: int
    frames: int
    channels: int


# Sample rates a clip may declare: a rate far outside them (say 1 Hz) makes resampling to
# FeatureConfig.sample_rate produce (and allocate) vastly more samples than the file holds.
MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 192_000
# 10 s of 8-channel audio at 192 kHz as float32 is 61 MB.
MAX_DECODED_BYTES = 64 << 20


def check_header(data: bytes, max_seconds: float, max_decoded_bytes: int = MAX_DECODED_BYTES) -> Header:
    """The declared sample rate, frames and channels of audio bytes, read from the header without
    decoding; raises :class:`TooLarge` for a clip over ``max_seconds`` or over ``max_decoded_bytes``
    decoded (float32), :class:`AudioError` for a sample rate outside
    ``MIN_SAMPLE_RATE``-``MAX_SAMPLE_RATE`` or an unreadable header. Decoding reads no more frames
    than the header declares, so a clip that passes costs at most ``max_decoded_bytes`` to decode."""
    import soundfile as sf

    if not data:
        raise AudioError("empty file")
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:  # libsndfile raises several types for corrupt input
        raise AudioError(f"not decodable audio: {_libsndfile_detail(exc)}") from None
    header = Header(int(info.samplerate), int(info.frames), int(info.channels))
    if header.sample_rate <= 0:
        raise AudioError(f"sample rate {header.sample_rate} Hz in the header")
    seconds = header.frames / header.sample_rate
    if seconds > max_seconds:
        raise TooLarge(
            f"clip is {seconds:.1f} s long ({header.frames} frames at {header.sample_rate} Hz); "
            f"the most accepted is {max_seconds:g} s"
        )
    if not MIN_SAMPLE_RATE <= header.sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"sample rate {header.sample_rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    decoded = header.frames * header.channels * 4
    if decoded > max_decoded_bytes:
        raise TooLarge(
            f"clip decodes to {decoded} bytes ({header.frames} frames x {header.channels} channels, float32); "
            f"the most accepted is {max_decoded_bytes}"
        )
    return header


@dataclass(frozen=True)
class Clip:
    waveform: np.ndarray  # float32, mono, at FeatureConfig.sample_rate, full length
    source_sample_rate: int
    source_channels: int
    duration_s: float  # of the source, before trimming to clip_seconds


def decode_audios(datas: Sequence[bytes], cfg: FeatureConfig) -> list[Clip | AudioError]:
    """Decode WAV (or any libsndfile format) bytes to mono float32 at ``cfg.sample_rate``, clip by clip:
    a :class:`Clip`, or the :class:`AudioError` saying why it has none (empty, undecodable or silent
    input). Multi-channel audio is mixed down; clips at another rate are resampled together
    (see :func:`resample_many`).
    """
    out: dict[int, Clip | AudioError] = {}  # by the clip's index in datas: every one gets one
    by_rate: dict[int, list[tuple[int, np.ndarray, int, float]]] = {}
    for i, data in enumerate(datas):
        try:
            y, sr, channels, duration_s = _decode_source(data)
        except AudioError as exc:
            out[i] = exc
            continue
        by_rate.setdefault(sr, []).append((i, y, channels, duration_s))
    for sr, clips in by_rate.items():
        ys = [y for _, y, _, _ in clips]
        if sr != cfg.sample_rate:
            ys = resample_many(ys, sr, cfg.sample_rate)
        for (i, _, channels, duration_s), y in zip(clips, ys):
            if float(np.max(np.abs(y))) < cfg.silence_peak:
                out[i] = AudioError(f"silent (peak below {cfg.silence_peak:g} of full scale)")
            else:
                out[i] = Clip(y.astype(np.float32, copy=False), int(sr), int(channels), float(duration_s))
    return [out[i] for i in range(len(datas))]


def decode_audio(data: bytes, cfg: FeatureConfig) -> Clip:
    """One clip of :func:`decode_audios`; raises its :class:`AudioError`."""
    clip = decode_audios([data], cfg)[0]
    if isinstance(clip, AudioError):
        raise clip
    return clip


def _decode_source(data: bytes) -> tuple[np.ndarray, int, int, float]:
    """(mono float32 at the source rate, that rate, channels, seconds), or AudioError."""
    import soundfile as sf

    if not data:
        raise AudioError("empty file")
    truncated = _wav_truncation(data)
    if truncated:
        raise AudioError(truncated)
    try:
        y, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for corrupt input
        raise AudioError(f"not decodable audio: {_libsndfile_detail(exc)}") from None
    channels = y.shape[1]
    duration_s = y.shape[0] / sr
    y = y.mean(axis=1)
    if y.size == 0:
        raise AudioError("no audio samples")
    if not np.all(np.isfinite(y)):
        raise AudioError("non-finite samples")
    return y, int(sr), int(channels), float(duration_s)


def _libsndfile_detail(exc: Exception) -> str:
    detail = re.sub(r"^Error opening <[^>]*>: ", "", str(exc).strip())  # drop the BytesIO repr
    return detail or type(exc).__name__


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


# Clips per soxr call in :func:`resample_many`, of similar lengths: designing soxr's filter
# costs more than resampling a short clip, so it is shared; more channels than this pad
# more (docs/benchmarks.md has the figures).
_RESAMPLE_CLIPS = 16


def resample_many(ys: Sequence[np.ndarray], orig_sr: int, target_sr: int) -> list[np.ndarray]:
    """Mono waveforms at ``orig_sr`` -> float32 at ``target_sr``, each exactly as
    ``librosa.resample(y, res_type="soxr_hq")`` gives it, with one soxr call per group of
    clips of similar length, as the zero-padded channels of one signal: soxr flushes the
    end of a clip with zeros anyway, so only its output length has to be applied, then
    librosa's (``ceil(len * ratio)`` samples, zero-padded)."""
    import soxr

    ys = [np.asarray(y, dtype=np.float32) for y in ys]
    if orig_sr == target_sr:
        return ys
    ratio = float(target_sr) / orig_sr
    out: list[np.ndarray] = [np.empty(0, np.float32)] * len(ys)
    order = sorted(range(len(ys)), key=lambda i: len(ys[i]))
    for start in range(0, len(order), _RESAMPLE_CLIPS):
        group = order[start : start + _RESAMPLE_CLIPS]
        channels = np.zeros((max(len(ys[i]) for i in group), len(group)), dtype=np.float32)
        for c, i in enumerate(group):
            channels[: len(ys[i]), c] = ys[i]
        resampled = soxr.resample(channels, orig_sr, target_sr, quality="soxr_hq")
        for c, i in enumerate(group):
            own = int(len(ys[i]) * float(target_sr) / orig_sr + 0.5)  # what soxr returns for this clip alone
            n = int(math.ceil(len(ys[i]) * ratio))
            y = resampled[: min(own, n), c]
            out[i] = np.pad(y, (0, n - len(y)))
    return out


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    return resample_many([y], orig_sr, target_sr)[0]


def fit_lengths(ys: Sequence[np.ndarray], cfg: FeatureConfig) -> np.ndarray:
    """The first ``clip_seconds`` of each waveform, right-padded with zeros: ``(len(ys), n_samples)`` float32."""
    n = cfg.n_samples
    out = np.zeros((len(ys), n), dtype=np.float32)
    for row, y in zip(out, ys):
        y = np.asarray(y)[:n]
        row[: len(y)] = y
    return out


def fit_length(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The first ``clip_seconds`` of ``y``, right-padded with zeros."""
    return fit_lengths([y], cfg)[0]


def _stft_reference(cfg: FeatureConfig) -> float:
    # Magnitude of a full-scale sine under a Hann window: sum(window) / 2 = n_fft / 4.
    return cfg.n_fft / 4.0


# Clips featurised at once by :func:`waveforms_to_spectrograms`: big enough for numpy to
# amortise its per-call cost, small enough that the float64 STFT temporaries (~16 MB for
# ``seed``) stay in cache-friendly sizes whatever the block size.
_FEATURE_CLIPS = 64


def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (float64), as ``scipy.signal.get_window("hann", n_fft, fftbins=True)``."""
    return 0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, n_fft + 1)[:-1])


def magnitudes(ys: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """|STFT| of fixed-length clips ``(n, n_samples)``, Nyquist side trimmed: ``(n, n_bins, n_frames)`` float32.

    What ``librosa.stft(y, n_fft, hop_length, window="hann", center=True)`` gives in
    librosa 0.11 (zero padding of ``n_fft // 2`` both sides, its default ``pad_mode="constant"``;
    float64 FFT stored as complex64), for all clips in one FFT call.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    pad = cfg.n_fft // 2
    padded = np.pad(np.asarray(ys, dtype=np.float32), ((0, 0), (pad, pad)))
    frames = sliding_window_view(padded, cfg.n_fft, axis=-1)[:, :: cfg.hop_length]  # (n, n_frames, n_fft)
    stft = np.fft.rfft(frames * hann_window(cfg.n_fft), axis=-1)[..., : cfg.n_bins]
    return np.ascontiguousarray(np.abs(stft.astype(np.complex64)).transpose(0, 2, 1))


def magnitude(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """|STFT| of one clip, fitted to ``clip_seconds``, Nyquist side trimmed: ``(n_bins, n_frames)``."""
    return magnitudes(fit_length(y, cfg)[None], cfg)[0]


def magnitude_to_db(mag: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """dB of one magnitude ``(n_bins, n_frames)`` or of a batch ``(n, n_bins, n_frames)``, clip by clip."""
    if cfg.normalisation == "fixed":
        db = 20.0 * np.log10(np.maximum(mag, 1e-10) / _stft_reference(cfg))
        return np.clip(db, cfg.db_floor, cfg.db_ceiling)
    # per_clip: librosa.amplitude_to_db with its defaults (ref=1, amin=1e-5, top_db=80), as the original.
    db = 20.0 * np.log10(np.maximum(mag, 1e-5))
    return np.maximum(db, db.max(axis=(-2, -1), keepdims=True) - (cfg.db_ceiling - cfg.db_floor))


LOUD_DB = 20.0  # a frame is loud within this many dB of its clip's loudest (by mean level here; by RMS in voicing)


def frame_levels(specs: np.ndarray) -> np.ndarray:
    """Each frame's mean normalised level over the bins of spectrograms ``(..., n_bins, n_frames)``: a clip's
    loudness contour, ``(..., n_frames)``."""
    return np.asarray(specs).mean(axis=-2)


def loud_frames(specs: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Which frames of normalised spectrograms ``(..., n_bins, n_frames)`` are within :data:`LOUD_DB` of their
    clip's loudest, by :func:`frame_levels`: ``(..., n_frames)``."""
    level = frame_levels(specs)
    return level >= level.max(axis=-1, keepdims=True) - LOUD_DB / (cfg.db_ceiling - cfg.db_floor)


def long_term_spectrum(specs: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Each bin's mean normalised level over the loud frames (:func:`loud_frames`) of spectrograms
    ``(..., n_bins, n_frames)``: ``(..., n_bins)``, the colour of a voice and its microphone, not its words."""
    weights = loud_frames(specs, cfg)[..., None, :]
    return (np.asarray(specs) * weights).sum(axis=-1) / weights.sum(axis=-1)


def long_term_spread(specs: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Each bin's standard deviation about its long-term level (:func:`long_term_spectrum`) over the loud
    frames of spectrograms ``(..., n_bins, n_frames)``: ``(..., n_bins)``, how far a voice's level moves at
    each frequency."""
    weights = loud_frames(specs, cfg)[..., None, :]
    deviation = np.asarray(specs) - long_term_spectrum(specs, cfg)[..., None]
    return np.sqrt((deviation**2 * weights).sum(axis=-1) / weights.sum(axis=-1))


@dataclass(frozen=True)
class Spectrograms:
    """Features of a batch of clips. ``errors[i]`` is None, or why clip ``i`` has none (its row is then meaningless)."""

    spec: np.ndarray  # (n, n_bins, n_frames) float32 in [0, 1]
    db_min: np.ndarray  # (n,) the dB range each clip was scaled from
    db_max: np.ndarray
    errors: tuple[AudioError | None, ...]


def waveforms_to_spectrograms(ys: Sequence[np.ndarray], cfg: FeatureConfig) -> Spectrograms:
    """Normalised spectrograms in [0, 1] of shape ``cfg.shape`` for waveforms of any length at
    ``cfg.sample_rate`` (see :func:`decode_audio`), with the dB range each was scaled from."""
    n = len(ys)
    spec = np.empty((n, *cfg.shape), dtype=np.float32)
    db_min, db_max = np.full(n, cfg.db_floor), np.full(n, cfg.db_ceiling)
    errors: list[AudioError | None] = [None] * n
    for start in range(0, n, _FEATURE_CLIPS):
        chunk = [np.asarray(y, dtype=np.float32) for y in ys[start : start + _FEATURE_CLIPS]]
        if cfg.peak_normalise_input:  # by the peak of the whole clip, before fitting it to clip_seconds
            for k, y in enumerate(chunk):
                peak = float(np.max(np.abs(y))) if y.size else 0.0
                if peak < cfg.silence_peak:
                    errors[start + k] = AudioError(f"silent (peak below {cfg.silence_peak:g} of full scale)")
                else:
                    chunk[k] = y / peak
        db = magnitude_to_db(magnitudes(fit_lengths(chunk, cfg), cfg), cfg)
        rows = slice(start, start + len(chunk))
        if cfg.normalisation == "per_clip":
            db_min[rows], db_max[rows] = db.min(axis=(1, 2)), db.max(axis=(1, 2))
        # float32 arithmetic, the range's width in float64 first: as one clip's float scalars would give.
        width = np.where(db_max[rows] > db_min[rows], db_max[rows] - db_min[rows], 1.0).astype(np.float32)
        spec[rows] = (db - db_min[rows].astype(np.float32)[:, None, None]) / width[:, None, None]
    for i in np.flatnonzero(db_max - db_min < 1e-6):
        errors[i] = errors[i] or AudioError("silent (flat spectrogram within the clip window)")
    return Spectrograms(spec, db_min, db_max, tuple(errors))


def waveform_to_spectrogram(y: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, float, float]:
    """Normalised spectrogram in [0, 1] of shape ``cfg.shape``, and the dB range it was scaled from.

    ``y`` must already be at ``cfg.sample_rate`` (see :func:`decode_audio`). Raises
    :class:`AudioError` for a silent clip.
    """
    out = waveforms_to_spectrograms([y], cfg)
    if out.errors[0] is not None:
        raise out.errors[0]
    return out.spec[0], float(out.db_min[0]), float(out.db_max[0])


def spectrogram_to_db(
    spec: np.ndarray,
    cfg: FeatureConfig,
    db_min: float | np.ndarray | None = None,
    db_max: float | np.ndarray | None = None,
) -> np.ndarray:
    """Undo the [0, 1] scaling. For ``per_clip`` without a stored range, a range of
    ``db_ceiling - db_floor`` is assumed: a constant dB offset only changes loudness,
    which the inverse's peak normalisation removes anyway. ``db_min``/``db_max``: one range, or
    arrays that broadcast against ``spec`` (one per clip of a batch)."""
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
