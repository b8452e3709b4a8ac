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
==================  =====================================================  ================
"""

from __future__ import annotations

import numpy as np

from vae.config import FeatureConfig
from vae.evaluation.audio import to_spectrograms
from vae.features import log_spectral_distance


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
