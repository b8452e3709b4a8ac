"""Griffin-Lim in TensorFlow: many normalised spectrograms to waveforms at once, on CPU or GPU.

The project's one vocoder. It computes what ``librosa.griffinlim`` computes for one
clip (its "fast" variant: momentum 0.99, random initial phase, periodic Hann window,
``center=True`` zero padding, ``length=cfg.n_samples``), for a batch of clips per
call of one compiled TensorFlow function. Clip ``i`` of a call with ``seed=s``
starts from the phase ``librosa.griffinlim(..., random_state=s + i)`` would draw,
so a clip sounds the same whichever batch it is in.

TensorFlow is imported inside functions: feature extraction imports
:mod:`vae.features`, which stays light.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from vae.config import FeatureConfig
from vae.features import db_to_magnitude, peak_normalise, spectrogram_to_db

# librosa.griffinlim's default: Perraudin, Balazs & Soendergaard's fast Griffin-Lim.
MOMENTUM = 0.99


def spectrograms_to_waveforms(
    specs: np.ndarray,
    cfg: FeatureConfig,
    db_min: np.ndarray | None = None,
    db_max: np.ndarray | None = None,
    n_iter: int | None = None,
    seed: int | Sequence[int] = 0,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    jit_compile: bool = True,
) -> np.ndarray:
    """Normalised spectrograms ``[N, n_bins, n_frames]`` -> peak-normalised waveforms ``[N, cfg.n_samples]``.

    ``db_min``/``db_max``: one dB range per clip to undo ``per_clip`` normalisation
    (see :func:`vae.features.spectrogram_to_db`), or ``None`` for the config's range.
    ``seed``: clip ``i`` starts from seed ``seed + i``, or from ``seed[i]`` given one per clip
    (a clip then sounds the same whatever else shares its batch).
    ``n_iter`` defaults to ``cfg.griffin_lim_iters``. ``progress(done, n)`` is called
    after each batch of ``batch_size`` clips. ``jit_compile=False`` runs the same
    graph without XLA (slower on CPU, see ``benchmarks/griffin_lim.py``).
    """
    specs = np.asarray(specs, dtype=np.float32)
    if specs.ndim >= 1 and specs.shape[0] == 0:
        return np.zeros((0, cfg.n_samples), dtype=np.float32)
    if specs.ndim == 4 and specs.shape[-1] == 1:
        specs = specs[..., 0]
    if specs.ndim != 3 or specs.shape[1:] != cfg.shape:
        raise ValueError(
            f"spectrograms of shape {specs.shape} do not match [N, *FeatureConfig shape] = [N, *{cfg.shape}]"
        )
    n = len(specs)
    if (db_min is None) != (db_max is None):
        raise ValueError("db_min and db_max go together: give both or neither")
    ranges: tuple[np.ndarray, np.ndarray] | None = None  # [N, 1, 1] each, broadcast over a spectrogram
    if db_min is not None and db_max is not None:
        lows, highs = np.asarray(db_min, np.float32), np.asarray(db_max, np.float32)
        if lows.shape != (n,) or highs.shape != (n,):
            raise ValueError(
                f"db_min and db_max need one value per spectrogram ({n}), got {lows.shape} and {highs.shape}"
            )
        ranges = lows[:, None, None], highs[:, None, None]
    n_iter = cfg.griffin_lim_iters if n_iter is None else int(n_iter)
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    seeds = seed + np.arange(n) if np.ndim(seed) == 0 else np.asarray(seed, np.int64)
    if seeds.shape != (n,):
        raise ValueError(f"seed needs one value per spectrogram ({n}) or one for all, got shape {seeds.shape}")

    out = np.zeros((n, cfg.n_samples), dtype=np.float32)
    for a in range(0, n, batch_size):
        b = min(a + batch_size, n)
        lo, hi = (None, None) if ranges is None else (ranges[0][a:b], ranges[1][a:b])
        mag = db_to_magnitude(spectrogram_to_db(specs[a:b], cfg, lo, hi), cfg)
        out[a:b] = _invert(mag, cfg, n_iter, seeds[a:b], jit_compile)
        if progress is not None:
            progress(b, n)
    return out


def spectrogram_to_waveform(
    spec: np.ndarray,
    cfg: FeatureConfig,
    db_min: float | None = None,
    db_max: float | None = None,
    n_iter: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """One normalised spectrogram -> waveform at ``cfg.sample_rate`` by Griffin-Lim, peak-normalised.

    A batch of one for :func:`spectrograms_to_waveforms`; give that many clips at once.
    """
    spec = np.asarray(spec, dtype=np.float32)
    if spec.ndim == 3:
        spec = spec[..., 0]
    if spec.shape != cfg.shape:
        raise ValueError(f"spectrogram shape {spec.shape} does not match FeatureConfig shape {cfg.shape}")
    return spectrograms_to_waveforms(
        spec[None],
        cfg,
        db_min=None if db_min is None else np.array([db_min]),
        db_max=None if db_max is None else np.array([db_max]),
        n_iter=n_iter,
        seed=seed,
    )[0]


def _invert(mag: np.ndarray, cfg: FeatureConfig, n_iter: int, seeds: np.ndarray, jit_compile: bool) -> np.ndarray:
    """One batch of linear STFT magnitudes ``[B, n_bins, n_frames]`` (Nyquist side trimmed
    as in the features) -> peak-normalised waveforms ``[B, cfg.n_samples]``."""
    import tensorflow as tf

    n_full = cfg.n_fft // 2 + 1
    frames_major = np.zeros((len(mag), cfg.n_frames, n_full), dtype=np.float32)
    frames_major[:, :, : cfg.n_bins] = np.swapaxes(mag, 1, 2)
    run = _griffin_lim_fn(cfg.n_fft, cfg.hop_length, cfg.n_samples, cfg.n_frames, jit_compile)
    y = run(tf.constant(frames_major), tf.constant(_initial_phase(seeds, cfg)), tf.constant(n_iter, tf.int32))
    return np.stack([peak_normalise(v) for v in y.numpy()])


def _initial_phase(seeds: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """``[n, n_frames, n_fft // 2 + 1]`` phases in [0, 2 pi): clip ``i`` draws what
    ``librosa.griffinlim(random_state=seeds[i])`` draws for its initial phase."""
    shape = (cfg.n_fft // 2 + 1, cfg.n_frames)
    out = np.zeros((len(seeds), cfg.n_frames, shape[0]), dtype=np.float32)
    for i, seed in enumerate(seeds):
        out[i] = 2 * np.pi * np.random.RandomState(int(seed)).random(size=shape).T
    return out


@functools.lru_cache(maxsize=8)
def _griffin_lim_fn(n_fft: int, hop: int, n_samples: int, n_frames: int, jit_compile: bool):
    """A compiled ``(magnitude, phase, n_iter) -> waveform`` for one STFT geometry, on
    ``[B, n_frames, n_fft // 2 + 1]`` tensors (any B). Cached, as tracing takes about a second
    and XLA compiles once more for each new batch size (a fraction of a second)."""
    import scipy.signal
    import tensorflow as tf

    window = scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)  # librosa's "hann"
    pad = n_fft // 2  # center=True
    q = -(-n_fft // hop)  # hop-long segments a frame spans
    n_segments = n_frames + q - 1
    # Overlap-added squared window: istft divides by it where it is not ~0, as librosa does.
    envelope = np.zeros(n_segments * hop, np.float64)
    for k in range(n_frames):
        envelope[k * hop : k * hop + n_fft] += window.astype(np.float64) ** 2
    tiny = np.finfo(np.float32).tiny
    inverse_envelope = np.where(envelope > tiny, 1.0 / np.maximum(envelope, tiny), 1.0)
    inverse_envelope = np.pad(inverse_envelope, (0, max(0, pad + n_samples - len(envelope))), constant_values=1.0)
    inverse_envelope = inverse_envelope[pad : pad + n_samples].astype(np.float32)

    def istft(spectrum):  # [B, F, K] complex -> [B, n_samples]
        frames = tf.signal.irfft(spectrum, fft_length=[n_fft]) * window
        frames = tf.pad(frames, [[0, 0], [0, 0], [0, q * hop - n_fft]])
        parts = tf.reshape(frames, [-1, n_frames, q, hop])
        # Overlap-add as q shifted sums of hop-long segments: faster under XLA on CPU than tf.signal.overlap_and_add.
        summed = tf.add_n([tf.pad(parts[:, :, r], [[0, 0], [r, q - 1 - r], [0, 0]]) for r in range(q)])
        y = tf.reshape(summed, [-1, n_segments * hop])
        y = tf.pad(y, [[0, 0], [0, max(0, pad + n_samples - n_segments * hop)]])
        return y[:, pad : pad + n_samples] * inverse_envelope

    def stft(y):  # [B, n_samples] -> [B, F, K] complex
        padded = tf.pad(y, [[0, 0], [pad, pad]])
        return tf.signal.rfft(tf.signal.frame(padded, n_fft, hop) * window, fft_length=[n_fft])

    spec = tf.TensorSpec([None, n_frames, n_fft // 2 + 1], tf.float32)

    @tf.function(input_signature=[spec, spec, tf.TensorSpec([], tf.int32)], jit_compile=jit_compile)
    def griffin_lim(magnitude, phase, n_iter):
        angles = tf.complex(magnitude * tf.cos(phase), magnitude * tf.sin(phase))
        eps = tf.constant(tiny, tf.float32)

        def step(i, angles, previous):
            rebuilt = stft(istft(angles))
            update = rebuilt - (MOMENTUM / (1 + MOMENTUM)) * previous
            angles = update * tf.cast(magnitude / (tf.abs(update) + eps), tf.complex64)
            return i + 1, angles, rebuilt

        _, angles, _ = tf.while_loop(lambda i, *_: i < n_iter, step, (tf.constant(0), angles, tf.zeros_like(angles)))
        return istft(angles)

    return griffin_lim
