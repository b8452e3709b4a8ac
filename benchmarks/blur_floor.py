"""How sharp a reconstruction must be to meet the quality targets: the real test clips, blurred.

    python -m benchmarks.blur_floor --data PARQUET --classifier RECOGNISER [--checkpoint CKPT] [--sigmas 0.5 1 1.5 2]

A decoder trained on squared error predicts a conditional mean: a blurred spectrogram. This
measures what blur alone costs, with no model in the way: every test clip's real normalised
spectrogram is smoothed by a Gaussian of ``sigma`` pixels (both axes, then frequency only and
time only), turned into audio by the project's Griffin-Lim, and scored as evaluation scores
reconstructions (log-spectral distance to the recording, MSE of the normalised spectrograms)
and samples (Frechet distance of recogniser embeddings against the real clips, the mean over 3
draws of 100; digit accuracy). ``--checkpoint`` adds the model's own reconstructions of the same
clips, to place it on that scale. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

DRAWS, DRAW_SIZE = 3, 100


def blurred(specs: np.ndarray, sigma: tuple[float, float]) -> np.ndarray:
    """Each spectrogram smoothed by a Gaussian of ``sigma`` = (frequency, time) pixels."""
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(s, sigma, mode="nearest") for s in specs]).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a published dataset (its test split is used)")
    ap.add_argument("--classifier", required=True, help="a recogniser (jobs.train_classifier output)")
    ap.add_argument("--checkpoint", help="also score this model's reconstructions of the same clips")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.5, 2.0])
    args = ap.parse_args(argv)

    from vae import checkpoint, generation
    from vae.dataset import load_split_numpy, read_feature_config
    from vae.evaluation import audio, metrics as M, recogniser
    from vae.evaluation.context import TEST_COLUMNS, read_originals

    feats = read_feature_config(args.data)
    test = load_split_numpy(args.data, "test", TEST_COLUMNS)
    specs, digits = test["spectrogram"].astype(np.float32), test["digit"].astype(np.int64)
    ranges = (test["db_min"], test["db_max"]) if feats.normalisation == "per_clip" else (None, None)
    originals = read_originals(test["source"], feats, test["id"])
    rec = recogniser.load(args.classifier)
    real = rec.listen(originals, feats.sample_rate)
    subsets = [np.random.default_rng([0, k]).permutation(len(specs))[:DRAW_SIZE] for k in range(DRAWS)]

    candidates = {"real (the vocoder floor)": specs}
    if args.checkpoint:
        loaded = checkpoint.load(args.checkpoint)
        candidates["model reconstructions"] = generation.reconstruct(loaded, specs, digits).reshape(specs.shape).astype(np.float32)
    for s in args.sigmas:
        candidates[f"blur {s:g} px"] = blurred(specs, (s, s))
    for s in (1.0, 2.0):
        candidates[f"blur {s:g} px, frequency only"] = blurred(specs, (s, 0.0))
        candidates[f"blur {s:g} px, time only"] = blurred(specs, (0.0, s))

    rows = []
    print("| spectrograms | MSE (normalised) | recon_lsd_db | frechet_distance | digit_accuracy |\n|---|---|---|---|---|")
    for name, s in candidates.items():
        waves = audio.resynthesise(s, feats, *ranges, label=name)
        heard = rec.listen(waves, feats.sample_rate)
        row = {
            "spectrograms": name,
            "mse": float(np.mean((s.astype(np.float64) - specs) ** 2)),
            "recon_lsd_db": M.recon_lsd_db(originals, waves, feats),
            "frechet_distance": float(np.mean([M.frechet_distance(heard.embeddings[i], real.embeddings) for i in subsets])),
            "digit_accuracy": M.digit_accuracy(heard.probs, digits),
        }
        rows.append(row)
        print(f"| {name} | {row['mse']:.5f} | {row['recon_lsd_db']:.2f} | {row['frechet_distance']:.1f} | {row['digit_accuracy']:.3f} |", flush=True)
    print(json.dumps({"data": args.data, "classifier": args.classifier, "checkpoint": args.checkpoint, "clips": len(specs), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
