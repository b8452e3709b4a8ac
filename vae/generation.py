"""Latents -> spectrograms -> waveforms from a loaded checkpoint.

Where latents come from (``SamplingConfig.sampler``, reported with every metric):

- ``expost``: per-digit Gaussian mixtures fitted to the training posterior means and stored
  with the checkpoint (``expost.json``; ex-post density estimation, Ghosh et al. 2020). A digit's
  samples come from its own mixture; unconditional samples first draw a digit with the
  training frequencies.
- ``prior``: the model's prior. A conditional model's p(z) with the digit given to the decoder;
  otherwise the prior's own draws for a digit (``Prior.sample_digit``: the ``tied`` prior's
  component of that digit; a ``mixture`` prior's components weighted by the digit's occupancy;
  for ``normal`` the original research approach, the digit's mean training latent plus Gaussian
  noise of that digit's spread).

A conditional model always decodes with the digit asked for (drawn with the training
frequencies when none is asked for).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vae.checkpoint import LoadedModel
from vae.config import DIGIT_RANGE, N_DIGITS, SamplingConfig, check_code_scale
from vae.errors import UserError
from vae.features import long_term_spectrum
from vae.harmonics import impose_harmonics
from vae.vocoder import spectrograms_to_waveforms


class GenerationError(UserError, ValueError):
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


# --------------------------------------------------------------------------- ex-post mixtures


def fit_expost(latents: np.ndarray, digits: np.ndarray, cfg: SamplingConfig, seed: int = 0) -> dict:
    """Per-digit Gaussian mixtures of posterior means ``latents`` [n, D], as JSON-able data.

    For each digit, 1 to ``cfg.expost_components`` components, the count chosen by the
    Bayesian information criterion (never more than a tenth of the digit's clips)."""
    from threadpoolctl import threadpool_limits

    latents, digits = np.asarray(latents, np.float64), np.asarray(digits, np.int64)
    mixtures: dict[str, dict] = {}
    # Small problems: BLAS threads only add overhead here, and fight the trainer's threads.
    with threadpool_limits(1):
        for d in range(N_DIGITS):
            z = latents[digits == d]
            if len(z) >= 2:
                mixtures[str(d)] = _fit_mixture(z, cfg, seed)
    return {"covariance": cfg.expost_covariance, "digits": mixtures}


def _fit_mixture(z: np.ndarray, cfg: SamplingConfig, seed: int) -> dict:
    from sklearn.mixture import GaussianMixture

    fits = [
        GaussianMixture(k, covariance_type=cfg.expost_covariance, reg_covar=1e-4, random_state=seed).fit(z)
        for k in range(1, max(1, min(cfg.expost_components, len(z) // 10)) + 1)
    ]
    gm = min(fits, key=lambda fit: fit.bic(z))
    return {
        "count": int(len(z)),
        "weights": gm.weights_.tolist(),
        "means": gm.means_.tolist(),
        "covariances": gm.covariances_.tolist(),
    }


def _expost_draw(mixture: dict, covariance: str, n: int, rng: np.random.Generator) -> np.ndarray:
    weights = np.asarray(mixture["weights"], np.float64)
    means, covs = np.asarray(mixture["means"]), np.asarray(mixture["covariances"])
    ks = rng.choice(len(weights), size=n, p=weights / weights.sum())
    noise = rng.standard_normal((n, means.shape[1]))
    if covariance == "diag":
        return means[ks] + np.sqrt(covs[ks]) * noise
    chol = np.linalg.cholesky(covs)
    return means[ks] + np.einsum("nij,nj->ni", chol[ks], noise)


# --------------------------------------------------------------------------- sampling


def sampler(loaded: LoadedModel) -> str:
    """The sampler this checkpoint's samples come from: its configured one, or ``prior`` when an
    ``expost`` checkpoint carries no fitted mixtures."""
    wanted = loaded.run_config.sampling.sampler
    return "expost" if wanted == "expost" and loaded.expost.get("digits") else "prior"


def sample_digits(loaded: LoadedModel, n: int, seed: int = 0) -> np.ndarray:
    """``n`` digits drawn with the training frequencies (from the latent statistics)."""
    counts = np.zeros(N_DIGITS)
    for d, stats in loaded.latent_stats.get("digits", {}).items():
        counts[int(d)] = stats.get("count", 0)
    if counts.sum() == 0:
        counts[:] = 1.0
    return np.random.default_rng([seed, 1]).choice(N_DIGITS, size=n, p=counts / counts.sum())


def sample_latents(
    loaded: LoadedModel, n: int, digit: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` latents [n, latent_dim] and the digit each stands for: ``digit``'s own, or digits
    drawn with the training frequencies when ``digit`` is None."""
    if digit is not None:
        _digit_stats(loaded, digit)  # a digit the model never saw is an error, whatever the sampler
        digits = np.full(n, int(digit), np.int64)
    else:
        digits = sample_digits(loaded, n, seed)
    prior = loaded.model.prior
    if sampler(loaded) == "expost":
        rng = np.random.default_rng(seed)
        z = np.zeros((n, loaded.run_config.model.latent_dim), np.float32)
        for d in np.unique(digits):
            rows = digits == d
            mixture = loaded.expost["digits"].get(str(int(d)))
            if mixture is None:
                raise GenerationError(f"checkpoint {loaded.uri} has no ex-post mixture for digit {d}")
            z[rows] = _expost_draw(mixture, loaded.expost["covariance"], int(rows.sum()), rng)
        return z, digits
    if not prior.uses_digits and (digit is None or loaded.run_config.model.conditional):
        return prior.sample(n, seed=seed), digits  # p(z); a conditional decoder is given the digit
    z = np.zeros((n, loaded.run_config.model.latent_dim), np.float32)
    for i, d in enumerate(np.unique(digits)):
        rows = digits == d
        stats = loaded.latent_stats.get("digits", {}).get(str(int(d)), {})  # checked above when a digit is asked for
        z[rows] = prior.sample_digit(int(rows.sum()), int(d), stats, seed=seed + 7919 * i)
    return z, digits


def _batches(n: int, batch_size: int):
    return [slice(i, i + batch_size) for i in range(0, n, batch_size)]


def _digits_or_none(loaded: LoadedModel, digits, n: int):
    if not loaded.run_config.model.conditional:
        return None
    if digits is None:
        raise GenerationError(f"checkpoint {loaded.uri} is a conditional model: every clip needs its digit")
    return np.broadcast_to(np.asarray(digits, np.int64), (n,))


def decode(
    loaded: LoadedModel, z: np.ndarray, digits=None, batch_size: int = 64, harmonics: bool = True, seed: int = 0
) -> np.ndarray:
    """Spectrograms [n, n_bins, n_frames] in [0, 1]; ``digits`` (one per latent, or one for all)
    are needed by a conditional model and ignored otherwise. A model with ``pitch`` draws the
    harmonics of its predicted f0 in (:func:`render`) unless ``harmonics`` is False (the raw output).
    A model with a local code draws it from its prior (``seed``, :attr:`SamplingConfig.local_temperature`)."""
    digits = _digits_or_none(loaded, digits, len(z))
    model, temperature = loaded.model, loaded.run_config.sampling.local_temperature
    noise = None
    if model.model_cfg.local_channels and temperature > 0:
        noise = np.random.default_rng(seed).standard_normal((len(z), *model.model_cfg.local_shape(model.input_hw)))
    out = [
        model.decode(
            z[b],
            None if digits is None else digits[b],
            training=False,
            local_noise=None if noise is None else noise[b].astype(np.float32),
            temperature=temperature,
        ).numpy()
        for b in _batches(len(z), batch_size)
    ]
    specs = np.concatenate(out)[..., 0] if out else np.zeros((0, *loaded.run_config.features.shape), np.float32)
    return render(loaded, specs, z, digits) if harmonics else specs


def decode_pitch(loaded: LoadedModel, z: np.ndarray, digits=None, batch_size: int = 64) -> np.ndarray:
    """f0 in Hz [n, n_frames] that a model with ``pitch`` predicts for latents ``z``; 0 on frames it
    more likely than not calls unvoiced."""
    digits = _digits_or_none(loaded, digits, len(z))
    out = []
    for b in _batches(len(z), batch_size):
        f0, voiced = loaded.model.decode_pitch(z[b], None if digits is None else digits[b], training=False)
        out.append(np.where(voiced.numpy() > 0.5, f0.numpy(), 0.0))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, loaded.run_config.features.n_frames))


def render(loaded: LoadedModel, specs: np.ndarray, z: np.ndarray, digits=None) -> np.ndarray:
    """The decoder's spectrograms of latents ``z`` with the harmonics of their predicted pitch drawn in
    (:func:`vae.harmonics.impose_harmonics`, ``SamplingConfig.harmonic_depth_db`` deep); unchanged for a
    model without ``pitch`` or at depth 0."""
    if not loaded.run_config.model.pitch or len(specs) == 0:
        return specs
    feats = loaded.run_config.features
    depth = loaded.run_config.sampling.harmonic_depth_db
    return impose_harmonics(specs, decode_pitch(loaded, z, digits), feats, depth) if depth > 0 else specs


def sample(loaded: LoadedModel, n: int, digit: int | None = None, seed: int = 0) -> np.ndarray:
    z, digits = sample_latents(loaded, n, digit, seed)
    return decode(loaded, z, digits, seed=seed)


def posterior(
    loaded: LoadedModel, specs: np.ndarray, digits=None, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances, each [n, latent_dim], of spectrograms [n, n_bins, n_frames]."""
    specs = np.asarray(specs, np.float32)
    digits = _digits_or_none(loaded, digits, len(specs))
    out = [
        loaded.model.encode(specs[b], None if digits is None else digits[b], training=False)
        for b in _batches(len(specs), batch_size)
    ]
    if not out:
        empty = np.zeros((0, loaded.run_config.model.latent_dim), np.float32)
        return empty, empty
    return np.concatenate([m.numpy() for m, _ in out]), np.concatenate([v.numpy() for _, v in out])


def encode(loaded: LoadedModel, specs: np.ndarray, digits=None, batch_size: int = 64) -> np.ndarray:
    """Posterior means [n, latent_dim] of spectrograms [n, n_bins, n_frames]."""
    return posterior(loaded, specs, digits, batch_size)[0]


def reconstruct(
    loaded: LoadedModel, specs: np.ndarray, digits=None, batch_size: int = 64, harmonics: bool = True
) -> np.ndarray:
    """Spectrograms through encoder and decoder, each code its posterior mean (a model with a local code
    decodes the local code's too); a conditional model needs each clip's digit. Drawn as :func:`decode` draws."""
    specs = np.asarray(specs, np.float32)
    digits = _digits_or_none(loaded, digits, len(specs))
    out = [
        loaded.model.reconstruct_with_code(specs[b], None if digits is None else digits[b], training=False)
        for b in _batches(len(specs), batch_size)
    ]
    if not out:
        return np.zeros((0, *loaded.run_config.features.shape), np.float32)
    raw = np.concatenate([x.numpy() for x, _ in out])[..., 0]
    return render(loaded, raw, np.concatenate([z.numpy() for _, z in out]), digits) if harmonics else raw


def check_digits(digits) -> list[int]:
    """``digits`` as ints, each a digit and none twice; :class:`GenerationError` otherwise."""
    out = [int(d) for d in digits]
    bad = [d for d in out if not 0 <= d < N_DIGITS]
    if bad:
        raise GenerationError(f"{DIGIT_RANGE}, not {bad[0]}")
    if len(set(out)) < len(out):
        raise GenerationError(f"digits {out} name a digit twice")
    return out


def check_conditional(loaded: LoadedModel, name: str | None = None) -> None:
    """Raise :class:`GenerationError` unless the checkpoint (``name``, else its URI) is digit-conditional,
    as :func:`transfer` needs."""
    if not loaded.run_config.model.conditional:
        raise GenerationError(
            f"checkpoint {name or loaded.uri} is not digit-conditional: transfer needs a digit-conditional "
            "model (model.conditional=true: the default, or jobs.train --conditional)"
        )


# The width (a Gaussian's sigma) a transfer's colour offset is smoothed over: a voice's colour is smooth in
# frequency, and the offset's detail is what one clip's digit left in it (docs/own-voice.md, "Matched to the
# voice": 2 bins of the default features kept 0.88 of transfers heard as the target against 0.85 unsmoothed).
COLOUR_SMOOTHING_HZ = 62.5
# The most a transfer's spread of level about its colour is stretched or squeezed, at any frequency.
SPREAD_RATIO_LIMIT = 2.0


def transfer(
    loaded: LoadedModel,
    specs: np.ndarray,
    source_digits,
    target_digits,
    harmonics: bool = True,
    match_voice: bool = True,
    source_f0: np.ndarray | None = None,
    code_scale: float | None = None,
    adapt_steps: int = 0,
    adapt_rate: float = 1e-4,
) -> np.ndarray:
    """Spectrograms [n, len(target_digits), n_bins, n_frames]: each of spectrograms ``specs`` [n, n_bins,
    n_frames] encoded (posterior mean) with its digit of ``source_digits`` (one per clip, or one for all),
    decoded with every digit of ``target_digits`` (a model with ``pitch`` draws its harmonics in, as
    :func:`decode` does, unless ``harmonics`` is False). The voice stays, the digit changes: a conditional
    model only.

    ``code_scale`` (default: the checkpoint's ``sampling.transfer_code_scale``): each code is moved towards
    the training codes' centre (:func:`code_centre`), keeping this share of its distance, before it is
    decoded: what of the digit the code still holds, the label outweighs; 1 decodes the code as it is.

    ``match_voice``: the decoder gives a voice it never heard the colour and pitch of voices it did, so
    every clip's outputs are moved by what its code, decoded with its own digit, misses of it: its colour
    (:func:`match_colour`) and, given ``source_f0`` (Hz [n, n_frames], the clips' pitch tracks,
    :func:`vae.harmonics.pitch_tracks`) to a model with ``pitch``, its median pitch.

    ``adapt_steps``: before each clip's outputs are decoded, the decoder's renderer is fine-tuned that many steps
    (``adapt_rate``) to decode the clip's code with its own digit as the clip (:mod:`vae.adaptation`)."""
    check_conditional(loaded)
    if source_digits is None:
        raise GenerationError("transfer needs the digit each clip says (source_digits)")
    targets = np.asarray(check_digits(target_digits), np.int64)
    sources = np.broadcast_to(np.asarray(source_digits, np.int64), (len(specs),))
    check_digits(np.unique(sources))
    if not (float(adapt_steps).is_integer() and adapt_steps >= 0 and adapt_rate > 0):
        raise GenerationError(
            f"adapt_steps={adapt_steps!r} must be a whole number >= 0 and adapt_rate={adapt_rate!r} > 0"
        )
    if code_scale is None:
        code_scale = loaded.run_config.sampling.transfer_code_scale
    centre = code_centre(loaded)
    z = centre + check_code_scale(code_scale, "code_scale") * (encode(loaded, specs, sources) - centre)
    options = (harmonics, match_voice)
    if not adapt_steps:
        return _transferred(loaded, z, specs, sources, targets, source_f0, *options)
    return _adapted(loaded, z, specs, sources, targets, source_f0, options, adapt_steps, adapt_rate)


def _adapted(loaded, z, specs, sources, targets, source_f0, options, steps: int, rate: float) -> np.ndarray:
    """:func:`transfer`'s outputs, each clip's decoded by a renderer fitted to it first."""
    from vae.adaptation import adapting

    f0 = source_f0
    if f0 is None:
        f0 = decode_pitch(loaded, z, sources) if loaded.run_config.model.pitch else np.zeros(specs.shape[::2])
    outs = []
    with adapting(loaded, steps, rate) as adapter:
        for i in range(len(z)):
            clip = slice(i, i + 1)
            adapter.fit(z[clip], sources[clip], specs[clip], f0[clip])
            given_f0 = None if source_f0 is None else source_f0[clip]
            outs.append(_transferred(loaded, z[clip], specs[clip], sources[clip], targets, given_f0, *options))
    return np.concatenate(outs)


def _transferred(loaded, z, specs, sources, targets, source_f0, harmonics: bool, match_voice: bool) -> np.ndarray:
    """:func:`transfer`'s outputs of codes ``z`` of clips ``specs``."""
    zz, tt = np.repeat(z, len(targets), axis=0), np.tile(targets, len(z))
    out = decode(loaded, zz, tt, harmonics=False)
    depth = loaded.run_config.sampling.harmonic_depth_db
    if harmonics and loaded.run_config.model.pitch and depth > 0 and len(out):
        f0 = decode_pitch(loaded, zz, tt)
        if match_voice and source_f0 is not None:
            f0 = f0 * np.repeat(pitch_ratio(source_f0, decode_pitch(loaded, z, sources)), len(targets))[:, None]
        out = impose_harmonics(out, f0, loaded.run_config.features, depth)
    out = out.reshape(len(z), len(targets), *out.shape[1:])
    if match_voice and len(out):
        out = match_colour(out, specs, decode(loaded, z, sources, harmonics=harmonics), loaded.run_config.features)
    return out


def match_colour(out: np.ndarray, specs: np.ndarray, own: np.ndarray, feats) -> np.ndarray:
    """Outputs ``out`` [n, k, n_bins, n_frames] of clips ``specs`` [n, n_bins, n_frames] moved to each clip's
    colour by what ``own`` [n, n_bins, n_frames] (the clip's code decoded with its digit) misses of it: each
    bin's long-term level (:func:`vae.features.long_term_spectrum`) is raised by the difference, and over the
    loud frames each bin's spread about it (:func:`vae.features.long_term_spread`) scaled by the ratio, at
    most :data:`SPREAD_RATIO_LIMIT` either way (as AdaIN-VC moves each channel's mean and deviation, Chou et
    al. 2019); both smoothed over :data:`COLOUR_SMOOTHING_HZ`."""
    from functools import partial

    from scipy.ndimage import gaussian_filter1d

    from vae.features import long_term_spread, loud_frames

    specs = np.asarray(specs, np.float32)
    sigma = COLOUR_SMOOTHING_HZ * feats.n_fft / feats.sample_rate
    smooth = partial(gaussian_filter1d, sigma=sigma, axis=-1, mode="nearest")
    offset = smooth(long_term_spectrum(specs, feats) - long_term_spectrum(own, feats))
    moved = np.clip(own + offset[..., None], 0.0, 1.0)
    ratio = np.log(np.maximum(long_term_spread(specs, feats), 1e-3) / np.maximum(long_term_spread(moved, feats), 1e-3))
    limit = np.log(SPREAD_RATIO_LIMIT)
    ratio = np.exp(np.clip(smooth(ratio), -limit, limit))
    out = out + offset[:, None, :, None]
    loud = loud_frames(np.clip(out, 0.0, 1.0), feats)[..., None, :]
    level = (out * loud).sum(axis=-1, keepdims=True) / loud.sum(axis=-1, keepdims=True)
    out = np.where(loud, level + ratio[:, None, :, None] * (out - level), out)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def code_centre(loaded: LoadedModel) -> np.ndarray:
    """The mean of the training codes [latent_dim] (the per-digit means of ``latent_stats.json``, weighted by
    their counts); 0 where the checkpoint has none."""
    stats = loaded.latent_stats.get("digits", {}).values()
    counts = np.array([d.get("count", 0) for d in stats], np.float64)
    if not len(counts) or counts.sum() <= 0:
        return np.zeros(loaded.run_config.model.latent_dim, np.float32)
    means = np.array([d["mean"] for d in stats], np.float64)
    return (counts @ means / counts.sum()).astype(np.float32)


def pitch_ratio(f0: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per row, the ratio of the median pitch of ``f0``'s voiced frames (> 0) to ``reference``'s; 1 where
    either has none."""
    ratios = []
    for a, b in zip(np.asarray(f0), np.asarray(reference)):
        a, b = a[a > 0], b[b > 0]
        ratios.append(np.exp(np.median(np.log(a)) - np.median(np.log(b))) if len(a) and len(b) else 1.0)
    return np.asarray(ratios, np.float32)


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
    seed: int | Sequence[int] = 0,
) -> list[np.ndarray]:
    """Griffin-Lim waveforms at the feature config's sample rate, one per spectrogram
    (in batches: :func:`vae.vocoder.spectrograms_to_waveforms`; clip ``i`` gets seed ``seed + i``,
    or ``seed[i]`` given one per clip).

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
