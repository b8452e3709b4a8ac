"""How sharp a reconstruction must be to meet the quality targets: the real test clips, blurred.

    python -m benchmarks.blur_floor --data PARQUET --classifier RECOGNISER [--checkpoint CKPT] [--sigmas 0.5 0.75 1 1.5 2]
        [--speaker theo] [--out benchmarks/results/blur_theo.json]

A decoder trained on squared error predicts a conditional mean: a blurred spectrogram. This
measures what blur alone costs, with no model in the way: every test clip's real normalised
spectrogram is smoothed by a Gaussian of ``sigma`` pixels (both axes, then frequency only and
time only), turned into audio by the project's Griffin-Lim, and scored as evaluation scores
reconstructions (log-spectral distance to the recording; ``recon_mse_decoder``, the MSE of the
normalised spectrograms before the vocoder) and samples (Frechet distance of recogniser embeddings
against the real clips, the mean over :class:`EvalConfig`'s draws; the share heard as their digit),
and as a voice (narrow-band PESQ against the recording; pYIN's voiced share of loud frames).
Rows "+ harmonics" draw each clip's own pitch track into the spectrogram
(:func:`vae.harmonics.impose_harmonics`): the round-trip floor of that renderer, and what it gives
back to a blurred envelope. ``--checkpoint`` adds the model's own reconstructions of the same clips (for a model with a pitch head:
also undrawn), those with each clip's own harmonics drawn in, and the model's undrawn output with the
real clips' fine structure (what a 1.5 px blur takes away) added, whole, below 2 kHz only, above only, on
voiced frames only, with its harmonics smoothed away and at half its amplitude; and it prints how much of
that fine structure the decoder's own output holds.
Rows "through sinusoids" skip Griffin-Lim: a harmonic-plus-noise synthesiser (:func:`sinusoidal`) plays
the clip's own pitch track with the spectrogram as its envelope. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse

import numpy as np

# Besides --sigmas (both axes): blur along one axis only, to see which axis costs more.
ONE_AXIS_SIGMAS = (1.0, 2.0)
# A real spectrogram's fine structure: what a blur of this many pixels takes away from it. With a
# checkpoint, rows add it to the model's undrawn output, whole and split at FINE_SPLIT_HZ.
FINE_SIGMA, FINE_SPLIT_HZ = 1.5, 2000.0


def fine_structure(specs: np.ndarray) -> np.ndarray:
    """What a blur of :data:`FINE_SIGMA` pixels takes away from each spectrogram."""
    return specs - blurred(specs, (FINE_SIGMA, FINE_SIGMA))


def with_real_fine_structure(
    raw: np.ndarray, specs: np.ndarray, hz: np.ndarray, voiced: np.ndarray
) -> dict[str, np.ndarray]:
    """The decoder's envelope ``raw`` with the real clips' fine structure added: all of it, only below
    :data:`FINE_SPLIT_HZ` and only above (``hz``: each bin's frequency), only on the ``voiced`` frames
    ([clips, frames]), with its harmonics smoothed away (1 px along frequency) and at half its amplitude."""
    fine = fine_structure(specs)
    low = (hz < FINE_SPLIT_HZ)[:, None]
    rows = {
        "the model's reconstructions, no harmonics, + the real fine structure": raw + fine,
        f"... + the real fine structure below {FINE_SPLIT_HZ:g} Hz only": raw + fine * low,
        f"... + the real fine structure above {FINE_SPLIT_HZ:g} Hz only": raw + fine * ~low,
        "... + the real fine structure on voiced frames only": raw + fine * voiced[:, None, :],
        "... + the real fine structure, its harmonics smoothed away": raw + blurred(fine, (1.0, 0.0)),
        "... + half the real fine structure": raw + 0.5 * fine,
    }
    return {name: np.clip(spectrograms, 0, 1) for name, spectrograms in rows.items()}


def rendered_share(raw: np.ndarray, specs: np.ndarray) -> float:
    """How much of the real fine structure the decoder's own renders: the least-squares coefficient of the
    real clips' fine structure in the decoder's (1: all of it, 0: none, or none in step with it)."""
    real, model = fine_structure(specs), fine_structure(raw)
    return float(np.sum(model * real) / np.sum(real * real))


def sinusoidal(spec: np.ndarray, f0: np.ndarray, cfg, seed: int, noise_db: float = -20.0) -> np.ndarray:
    """A waveform with the envelope of one normalised spectrogram and the pitch track ``f0`` (Hz per frame, 0
    unvoiced): in voiced frames a sum of sinusoids at multiples of f0, each as loud as the envelope at its
    frequency (corrected twice so that the result's spectrogram, blurred by :data:`FINE_SIGMA`, matches the
    envelope's), plus noise ``noise_db`` below the envelope; in unvoiced frames the envelope's noise alone."""
    import librosa
    from scipy.ndimage import map_coordinates

    from vae.features import magnitude, magnitude_to_db, peak_normalise, spectrogram_to_db

    env = spectrogram_to_db(spec, cfg).astype(np.float64)
    target = gaussian(env, FINE_SIGMA)
    at = np.arange(cfg.n_samples) / cfg.hop_length  # each sample's position in frames
    voiced = (f0 > 0).astype(np.float64)
    known = np.flatnonzero(voiced) if voiced.any() else np.arange(len(f0))
    pitch = np.exp(np.interp(at, known, np.log(np.where(voiced.any(), f0, 100.0)[known])))
    phase = 2 * np.pi * np.cumsum(pitch / cfg.sample_rate)
    h = np.arange(1, int(cfg.sample_rate / 2 / pitch.min()) + 1)[:, None]
    where = h * pitch / (cfg.sample_rate / cfg.n_fft)  # each harmonic's bin at each sample
    gate = np.interp(at, np.arange(cfg.n_frames), voiced)

    coords = [np.minimum(where, cfg.n_bins - 1).ravel(), np.tile(at, len(h))]

    def harmonics(db: np.ndarray) -> np.ndarray:
        level = map_coordinates(db, coords, order=1, mode="nearest").reshape(where.shape)
        return gate * (np.where(where < cfg.n_bins - 1, 10 ** (level / 20), 0.0) * np.sin(h * phase)).sum(0)

    def spectrogram_db(y: np.ndarray) -> np.ndarray:
        return magnitude_to_db(magnitude(y, cfg), cfg)

    level = env
    for _ in range(2):
        level = level + voiced * (target - gaussian(spectrogram_db(harmonics(level)), FINE_SIGMA))
    noise_mag = np.zeros((cfg.n_fft // 2 + 1, cfg.n_frames))
    noise_mag[: cfg.n_bins] = 10 ** (env / 20) * cfg.n_fft / 4 * np.where(voiced > 0, 10 ** (noise_db / 20), 1.0)
    noise_phase = np.exp(2j * np.pi * np.random.default_rng(seed).random(noise_mag.shape))
    noise = librosa.istft(noise_mag * noise_phase, hop_length=cfg.hop_length, n_fft=cfg.n_fft, length=cfg.n_samples)
    return peak_normalise((harmonics(level) + noise).astype(np.float32))


def gaussian(image: np.ndarray, sigma: float | tuple[float, float]) -> np.ndarray:
    """``image`` smoothed by a Gaussian of ``sigma`` pixels (per axis), edges extended."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(image, sigma, mode="nearest")


def blurred(specs: np.ndarray, sigma: tuple[float, float]) -> np.ndarray:
    """Each spectrogram smoothed by a Gaussian of ``sigma`` = (frequency, time) pixels."""
    return np.stack([gaussian(s, sigma) for s in specs]).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a published dataset (its test split is used)")
    ap.add_argument("--classifier", required=True, help="a recogniser (jobs.train_classifier output)")
    ap.add_argument("--checkpoint", help="also score this model's reconstructions of the same clips")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.5, 2.0])
    ap.add_argument("--speaker", help="score only this speaker's test clips (e.g. one a checkpoint never heard)")
    ap.add_argument("--out", help="also write the JSON to this file")
    args = ap.parse_args(argv)

    from vae import checkpoint, generation
    from vae.config import HARMONIC_DEPTH_DB, ConfigError, EvalConfig, to_dict
    from vae.dataset import has_column, load_split_numpy, read_feature_config
    from vae.evaluation import audio, recogniser
    from vae.evaluation import metrics as M
    from vae.evaluation.context import TEST_COLUMNS, read_originals
    from vae.evaluation.evaluators.samples import reference_subsets
    from vae.harmonics import impose_harmonics, pitch_tracks

    feats = read_feature_config(args.data)
    columns = TEST_COLUMNS + (["f0"] if has_column(args.data, "f0") else [])
    test = load_split_numpy(args.data, "test", columns)
    if args.speaker:
        test = {k: v[test["speaker"] == args.speaker] for k, v in test.items()}
    specs, digits = test["spectrogram"].astype(np.float32), test["digit"].astype(np.int64)
    ranges = (test["db_min"], test["db_max"]) if feats.normalisation == "per_clip" else (None, None)
    originals = read_originals(test["source"], feats, test["id"])
    rec = recogniser.load(args.classifier)
    real = rec.listen(originals, feats.sample_rate)
    subsets = reference_subsets(len(specs), EvalConfig())

    candidates = {"real (the vocoder floor)": specs}
    if args.checkpoint:
        loaded = checkpoint.load(args.checkpoint)
        if to_dict(loaded.run_config.features) != to_dict(feats):
            raise ConfigError(f"checkpoint {args.checkpoint} was trained on other features than {args.data}")
        z = generation.encode(loaded, specs, digits)
        raw = generation.reconstruct(loaded, specs, digits, harmonics=False)
        candidates["the model's reconstructions"] = generation.render(loaded, raw, z, digits)
        if loaded.run_config.model.pitch:
            candidates["the model's reconstructions, no harmonics drawn"] = raw
    f0 = test["f0"] if "f0" in test else pitch_tracks(originals, feats)
    if args.checkpoint:
        candidates["the model's reconstructions, their true harmonics drawn in"] = impose_harmonics(
            raw, f0, feats, HARMONIC_DEPTH_DB
        )
        hz = np.arange(feats.n_bins) * feats.sample_rate / feats.n_fft
        candidates.update(with_real_fine_structure(raw, specs, hz, np.asarray(f0) > 0))
        share = rendered_share(raw, specs)
        print(f"the decoder renders {share:.2f} of the real fine structure (least-squares coefficient)")
    candidates["real + harmonics"] = impose_harmonics(specs, f0, feats, HARMONIC_DEPTH_DB)
    for sigma in args.sigmas:
        candidates[f"blurred {sigma:g} px"] = blurred(specs, (sigma, sigma))
        candidates[f"blurred {sigma:g} px + harmonics"] = impose_harmonics(
            candidates[f"blurred {sigma:g} px"], f0, feats, HARMONIC_DEPTH_DB
        )
    for sigma in ONE_AXIS_SIGMAS:
        candidates[f"blurred {sigma:g} px along frequency only"] = blurred(specs, (sigma, 0.0))
        candidates[f"blurred {sigma:g} px along time only"] = blurred(specs, (0.0, sigma))
    # Rows played by the sinusoidal synthesiser instead of Griffin-Lim: name -> (spectrograms, waves).
    played: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    if feats.normalisation == "fixed":
        sources = {"real": specs, f"blurred {FINE_SIGMA:g} px": blurred(specs, (FINE_SIGMA, FINE_SIGMA))}
        if args.checkpoint:
            sources["the model's reconstructions, no harmonics"] = raw
        for name, spectrograms in sources.items():
            waves = np.stack([sinusoidal(s, f, feats, seed=i) for i, (s, f) in enumerate(zip(spectrograms, f0))])
            played[f"{name}, through sinusoids at their own pitch"] = (spectrograms, waves)

    rows = []
    print(
        "| test spectrograms | recon_mse_decoder | recon_lsd_db | frechet_distance | heard as their digit | pesq_nb | voicing |"
        "\n|---|---|---|---|---|---|---|"
    )
    rendered = {name: (spectrograms, None) for name, spectrograms in candidates.items()} | played
    for name, (spectrograms, played_waves) in rendered.items():
        waves = audio.resynthesise(spectrograms, feats, *ranges, label=name) if played_waves is None else played_waves
        heard = rec.listen(waves, feats.sample_rate)
        row = {
            "spectrograms": name,
            "recon_mse_decoder": float(
                np.mean((np.asarray(spectrograms, np.float64).reshape(specs.shape) - specs) ** 2)
            ),
            "recon_lsd_db": M.recon_lsd_db(originals, waves, feats),
            "frechet_distance": float(
                np.mean([M.frechet_distance(heard.embeddings[i], real.embeddings) for i in subsets])
            ),
            "heard_as_their_digit": M.digit_accuracy(heard.probs, digits),
            "pesq_nb": M.pesq_nb(originals, waves, feats.sample_rate)[0],
            "voicing": M.voicing(waves, feats.sample_rate),
        }
        rows.append(row)
        print(
            f"| {name} | {row['recon_mse_decoder']:.5f} | {row['recon_lsd_db']:.2f} | {row['frechet_distance']:.1f} "
            f"| {row['heard_as_their_digit']:.3f} | {row['pesq_nb']:.2f} | {row['voicing']:.2f} |",
            flush=True,
        )
    from benchmarks.quality import publish

    document = {"data": args.data, "classifier": args.classifier, "checkpoint": args.checkpoint}
    if args.checkpoint:
        document["rendered_fine_structure"] = share
    publish({**document, "speaker": args.speaker, "clips": len(specs), "rows": rows}, args.out, "benchmarks.blur_floor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
