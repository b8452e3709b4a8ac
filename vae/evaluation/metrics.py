"""Sample-quality metrics, one small function each, all on what the user hears.

Every input here comes from audio: the recogniser's reading of waveforms
(:meth:`vae.evaluation.recogniser.Recogniser.listen`, whose ``Heard`` carries
``probs`` and ``embeddings``) or the waveforms themselves. Nothing reads a
decoder's raw output.

==================  =====================================================  ================
metric              meaning                                                best / worst
==================  =====================================================  ================
digit_accuracy      share of clips the recogniser reads as the digit asked  1 / 0.1 (chance)
inception_score     exp(E_x KL(p(y|x) || p(y)))                             10 / 1
frechet_distance    Frechet distance of penultimate-layer embeddings        0 / large
recon_lsd_db        log-spectral distance, clip vs its reconstruction, dB   0 / large
recon_mse           MSE of the normalised spectrograms of the two clips     0 / large
voicing             share of a clip's loud frames pYIN calls voiced         1 / 0
pesq_nb             ITU-T P.862 narrow-band PESQ (MOS-LQO), clip vs ref     4.5 / 1
==================  =====================================================  ================

The voice metrics (voicing, pesq_nb) score clips at :data:`VOICE_RATE`, resampling others first.
"""

from __future__ import annotations

import numpy as np

from vae.config import FeatureConfig
from vae.evaluation.audio import to_spectrograms
from vae.features import LOUD_DB, log_spectral_distance, resample_many

# The voice metrics' sample rate: pYIN's framing below and PESQ's narrow band are set for it (FSDD's own).
VOICE_RATE = 8000
# pYIN's pitch range (Hz) and its and the RMS's framing at VOICE_RATE (64 ms frames every 16 ms).
PITCH_HZ = (60.0, 400.0)
VOICE_FRAME, VOICE_HOP = 512, 128
# Clips per pYIN call: one vectorised call is ~2.5x faster than a call per clip; this bounds its memory.
_PYIN_CLIPS = 64


def digit_accuracy(probs: np.ndarray, digits: np.ndarray) -> float:
    """Share of clips whose most likely digit is the one asked for (or spoken)."""
    probs, digits = np.asarray(probs), np.asarray(digits)
    _check_rows(probs, digits)
    return float(np.mean(np.argmax(probs, axis=1) == digits))


def binomial_se(share: float, n: int) -> float:
    """Standard error of a share measured on ``n`` independent clips: sqrt(p (1 - p) / n)."""
    if n <= 0:
        raise ValueError(f"a share needs at least one clip, got n={n}")
    return float(np.sqrt(share * (1.0 - share) / n))


def inception_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """exp(mean KL(p(y|x) || p(y))) with p(y) the mean of p(y|x): confident and varied -> number of classes."""
    p = np.asarray(probs, dtype=np.float64)
    _check_rows(p)
    p = p / p.sum(axis=1, keepdims=True)
    marginal = p.mean(axis=0, keepdims=True)
    kl = np.sum(p * (np.log(p + eps) - np.log(marginal + eps)), axis=1)
    return float(np.exp(kl.mean()))


def frechet_distance(embeddings: np.ndarray, reference: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between two sets of embeddings (the FID formula)."""
    a, b = np.asarray(embeddings, np.float64), np.asarray(reference, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings must be (n, d) with the same d, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the Frechet distance needs at least 2 clips per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr (S_a S_b)^1/2 = Tr (S_a^1/2 S_b S_a^1/2)^1/2: a symmetric PSD matrix, so eigvalsh is exact
    # and stable even when there are fewer clips than dimensions.
    root_a = _psd_sqrt(cov_a)
    eig = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_covmean = np.sum(np.sqrt(np.clip(eig, 0.0, None)))
    value = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_covmean
    return float(max(value, 0.0))


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def recon_lsd_db(originals, reconstructions, cfg: FeatureConfig) -> float:
    """Mean log-spectral distance (dB) between waveforms and their reconstructions, both at ``cfg.sample_rate``."""
    _check_pairs(originals, reconstructions)
    return float(np.mean([log_spectral_distance(a, b, cfg) for a, b in zip(originals, reconstructions)]))


def recon_mse(originals, reconstructions, cfg: FeatureConfig) -> float:
    """MSE between the normalised spectrograms (made with ``cfg``) of waveforms and of their reconstructions."""
    _check_pairs(originals, reconstructions)
    a = to_spectrograms(originals, cfg.sample_rate, cfg)
    b = to_spectrograms(reconstructions, cfg.sample_rate, cfg)
    return float(np.mean((a.astype(np.float64) - b) ** 2))


def voicing(waveforms, sample_rate: int) -> float:
    """Mean over clips of :func:`voicing_per_clip`."""
    return float(np.mean(voicing_per_clip(waveforms, sample_rate)))


def voicing_per_clip(waveforms, sample_rate: int) -> np.ndarray:
    """Per clip of ``waveforms`` ``(N, n_samples)`` at ``sample_rate``: the share of its loud frames that pYIN
    (``librosa.pyin``) calls voiced, at :data:`VOICE_RATE` (:func:`loud_voiced_share`)."""
    import librosa

    clips, (fmin, fmax) = _at_voice_rate(waveforms, sample_rate), PITCH_HZ
    out = np.zeros(len(clips))
    for start in range(0, len(clips), _PYIN_CLIPS):
        chunk = clips[start : start + _PYIN_CLIPS]
        voiced = librosa.pyin(
            chunk, fmin=fmin, fmax=fmax, sr=VOICE_RATE, frame_length=VOICE_FRAME, hop_length=VOICE_HOP
        )[1]
        rms = librosa.feature.rms(y=chunk, frame_length=VOICE_FRAME, hop_length=VOICE_HOP)[:, 0]
        out[start : start + len(chunk)] = [loud_voiced_share(v, r) for v, r in zip(voiced, rms)]
    return out


def loud_voiced_share(voiced: np.ndarray, rms: np.ndarray) -> float:
    """Share of the loud frames (``rms`` within :data:`LOUD_DB` of its largest) that are ``voiced``; 0 for silence."""
    peak = float(np.max(rms))
    if peak <= 0:
        return 0.0
    return float(np.mean(voiced[rms >= peak * 10 ** (-LOUD_DB / 20)]))


def pesq_nb(references, degraded, sample_rate: int) -> tuple[float | None, int]:
    """(mean, clips skipped) of :func:`pesq_nb_per_clip`; the mean is None when no clip could be scored."""
    scores = pesq_nb_per_clip(references, degraded, sample_rate)
    scored = scores[np.isfinite(scores)]
    return (float(np.mean(scored)) if len(scored) else None), int(len(scores) - len(scored))


def pesq_nb_per_clip(references, degraded, sample_rate: int) -> np.ndarray:
    """ITU-T P.862 narrow-band PESQ (MOS-LQO, about 1 to 4.5) of each degraded clip against its reference, both
    ``(N, n_samples)`` at ``sample_rate``, scored at :data:`VOICE_RATE`. NaN for a clip PESQ cannot score: it
    raises (e.g. no utterance found), or either clip is silent (on which it fails)."""
    from pesq import PesqError, pesq

    _check_pairs(references, degraded)
    refs, degs = _at_voice_rate(references, sample_rate), _at_voice_rate(degraded, sample_rate)
    out = np.full(len(refs), np.nan)
    for i, (ref, deg) in enumerate(zip(refs, degs)):
        if ref.any() and deg.any():
            try:
                out[i] = pesq(VOICE_RATE, ref, deg, "nb")
            except PesqError:
                pass
    return out


def _at_voice_rate(waveforms, sample_rate: int) -> np.ndarray:
    """Waveforms ``(N, n_samples)`` at ``sample_rate`` -> float32 ``(N, m)`` at :data:`VOICE_RATE`."""
    clips = np.asarray(waveforms, np.float32)
    if clips.ndim != 2 or len(clips) == 0:
        raise ValueError(f"waveforms must be a non-empty (clips, samples) array, got shape {clips.shape}")
    return clips if sample_rate == VOICE_RATE else np.stack(resample_many(list(clips), sample_rate, VOICE_RATE))


def _check_rows(probs: np.ndarray, digits: np.ndarray | None = None) -> None:
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError(f"probs must be a non-empty (clips, classes) array, got shape {probs.shape}")
    if digits is not None and len(digits) != len(probs):
        raise ValueError(f"{len(probs)} predictions but {len(digits)} digits")


def _check_pairs(originals, reconstructions) -> None:
    if len(originals) != len(reconstructions) or len(originals) == 0:
        raise ValueError(
            f"need as many reconstructions as originals (> 0), got {len(originals)} and {len(reconstructions)}"
        )
