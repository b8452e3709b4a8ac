"""Latents -> spectrograms -> waveforms from a loaded checkpoint.

Digit-conditional sampling uses the per-digit statistics of the training
encodings stored with the checkpoint (``latent_stats.json``):

- ``normal`` prior (the original's approach): the digit's mean latent plus
  Gaussian noise scaled by that digit's per-dimension spread;
- ``mixture`` prior: a component drawn with the digit's occupancy (the share of
  its training clips assigned to each component), then a draw from that component.
"""

from __future__ import annotations

import numpy as np

from vae.checkpoint import LoadedModel
from vae.vocoder import spectrograms_to_waveforms


class GenerationError(ValueError):
    """A generation request the checkpoint cannot serve; the message says why."""


def digits_available(loaded: LoadedModel) -> list[int]:
    return sorted(int(d) for d in loaded.latent_stats.get("digits", {}))


def _digit_stats(loaded: LoadedModel, digit: int) -> dict:
    stats = loaded.latent_stats.get("digits", {}).get(str(int(digit)))
    if stats is None:
        raise GenerationError(
            f"checkpoint {loaded.uri} has no latent statistics for digit {digit}; available: {digits_available(loaded)}"
        )
    return stats


def sample_latents(loaded: LoadedModel, n: int, digit: int | None = None, seed: int = 0) -> np.ndarray:
    """[n, latent_dim] latents from the prior, or from ``digit``'s region of latent space."""
    prior = loaded.model.prior
    if digit is None:
        return prior.sample(n, seed=seed)
    stats = _digit_stats(loaded, digit)
    if loaded.run_config.prior.kind == "mixture":
        return prior.sample(n, seed=seed, weights=np.asarray(stats["occupancy"]))
    rng = np.random.default_rng(seed)
    mean, spread = np.asarray(stats["mean"], np.float32), np.asarray(stats["spread"], np.float32)
    return (mean + spread * rng.standard_normal((n, mean.size))).astype(np.float32)


def decode(loaded: LoadedModel, z: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Spectrograms [n, n_bins, n_frames] in [0, 1]."""
    out = [loaded.model.decode(z[i : i + batch_size], training=False).numpy() for i in range(0, len(z), batch_size)]
    return np.concatenate(out)[..., 0] if out else np.zeros((0, *loaded.run_config.features.shape), np.float32)


def sample(loaded: LoadedModel, n: int, digit: int | None = None, seed: int = 0) -> np.ndarray:
    return decode(loaded, sample_latents(loaded, n, digit, seed))


def encode(loaded: LoadedModel, specs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Posterior means [n, latent_dim] of spectrograms [n, n_bins, n_frames]."""
    specs = np.asarray(specs, np.float32)
    out = [loaded.model.encode(specs[i : i + batch_size], training=False)[0].numpy() for i in range(0, len(specs), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, loaded.run_config.model.latent_dim), np.float32)


def reconstruct(loaded: LoadedModel, specs: np.ndarray) -> np.ndarray:
    """Spectrograms through encoder (posterior mean) and decoder."""
    return decode(loaded, encode(loaded, specs))


def db_range(loaded: LoadedModel, digit: int | None = None) -> tuple[float | None, float | None]:
    """The dB range to undo ``per_clip`` normalisation for generated clips: the training mean
    (of the digit, when given). ``fixed`` features need none."""
    if loaded.run_config.features.normalisation != "per_clip":
        return None, None
    stats = loaded.latent_stats
    if digit is not None and str(int(digit)) in stats.get("digits", {}):
        stats = stats["digits"][str(int(digit))]
    return stats.get("db_min"), stats.get("db_max")


def to_waveforms(
    loaded: LoadedModel,
    specs: np.ndarray,
    db_ranges: list[tuple[float | None, float | None]] | None = None,
    digit: int | None = None,
    seed: int = 0,
) -> list[np.ndarray]:
    """Griffin-Lim waveforms at the feature config's sample rate, one per spectrogram
    (in batches: :func:`vae.vocoder.spectrograms_to_waveforms`; clip ``i`` gets seed ``seed + i``).

    ``db_ranges`` (one per spectrogram) is for reconstructions, whose source range
    is known; otherwise the training mean range is used.
    """
    ranges = db_ranges if db_ranges is not None else [db_range(loaded, digit)] * len(specs)
    known = [lo is not None and hi is not None for lo, hi in ranges]
    if any(known) and not all(known):
        raise GenerationError("db_ranges must give a dB range for every spectrogram or for none")
    lo = hi = None
    if ranges and all(known):
        lo, hi = np.array([r[0] for r in ranges]), np.array([r[1] for r in ranges])
    return list(spectrograms_to_waveforms(specs, loaded.run_config.features, lo, hi, seed=seed))


def check_audio(y: np.ndarray, silence_peak: float) -> str | None:
    """Why a generated waveform is unusable (non-finite or silent), or None."""
    if not np.all(np.isfinite(y)):
        return "non-finite samples"
    if y.size == 0 or float(np.max(np.abs(y))) < silence_peak:
        return "silent"
    return None


def spectrogram_png(spec: np.ndarray, title: str) -> bytes:
    """A PNG of one spectrogram (frequency up, time right)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.imshow(np.asarray(spec), origin="lower", aspect="auto", cmap="magma", vmin=0.0, vmax=1.0)
    ax.set(title=title, xlabel="frame", ylabel="bin")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
