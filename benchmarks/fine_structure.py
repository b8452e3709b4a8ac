"""Where the decoder's missing detail is lost: on the clips it trained on as on the others, and where the drawn
harmonics match the real ones.

    python -m benchmarks.fine_structure --checkpoint CKPT --data PARQUET [--clips 100] [--speaker theo] [--out F]

The fine structure of a spectrogram is what a 1.5 px blur takes away from it (:mod:`benchmarks.blur_floor`).
For each split and speaker (up to ``--clips`` clips each), the share of the real fine structure that the
decoder's own output holds (the least-squares coefficient) and the RMS error of the undrawn output: if the clips
the checkpoint trained on get no more of it than the others, the detail is not lost to generalisation but to
what the code and the decoder can carry. Then, on the test clips of ``--speaker``, the correlation between the
real fine structure of the voiced frames and the harmonic comb drawn at the clip's own pitch track, per
frequency band, with the track as stored and shifted by one frame either way. The last stdout line is the
JSON; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.blur_floor import fine_structure, rendered_share
from benchmarks.quality import publish

BANDS_HZ = ((0, 1000), (1000, 2000), (2000, 4000))
SHIFTS = (-1, 0, 1)


def comb_correlations(specs: np.ndarray, f0: np.ndarray, feats) -> list[dict]:
    """Per shift of the pitch track (frames) and band: the correlation, on voiced frames, between the real
    fine structure and the fine structure a comb at that track draws into the blurred spectrogram."""
    from vae.config import HARMONIC_DEPTH_DB
    from vae.harmonics import impose_harmonics

    real = fine_structure(specs)
    envelope = specs - real
    voiced = (f0 > 0)[:, None, :]
    real_voiced = real * voiced
    hz = np.arange(specs.shape[1]) * feats.sample_rate / feats.n_fft
    rows = []
    for shift in SHIFTS:
        drawn = impose_harmonics(envelope, np.roll(f0, -shift, axis=1), feats, HARMONIC_DEPTH_DB)
        comb = (fine_structure(drawn) - fine_structure(envelope)) * voiced
        row: dict = {"shift_frames": shift}
        for lo, hi in BANDS_HZ:
            band = (hz >= lo) & (hz < hi)
            x, y = comb[:, band], real_voiced[:, band]
            row[f"{lo}-{hi} Hz"] = float(np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y)))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="the published dataset the checkpoint trained on")
    ap.add_argument("--clips", type=int, default=100, help="clips per split and speaker")
    ap.add_argument("--speaker", default="theo", help="whose test clips the comb is compared on")
    ap.add_argument("--out", help="also write the JSON to this file")
    args = ap.parse_args(argv)

    from vae import checkpoint, generation
    from vae.dataset import load_split_numpy, read_feature_config

    feats = read_feature_config(args.data)
    loaded = checkpoint.load(args.checkpoint)
    shares = []
    print("| split | speaker | clips | share of the real fine structure rendered | RMS error |\n|---|---|---|---|---|")
    for split in ("train", "test"):
        rows = load_split_numpy(args.data, split, ["spectrogram", "digit", "speaker"])
        for speaker in sorted(set(rows["speaker"])):
            chosen = np.flatnonzero(rows["speaker"] == speaker)[: args.clips]
            specs, digits = rows["spectrogram"][chosen].astype(np.float32), rows["digit"][chosen].astype(np.int64)
            raw = generation.reconstruct(loaded, specs, digits, harmonics=False)
            row = {"split": split, "speaker": str(speaker), "clips": len(chosen)}
            row |= {"share": rendered_share(raw, specs), "rms_error": float(np.sqrt(np.mean((raw - specs) ** 2)))}
            shares.append(row)
            print(f"| {split} | {speaker} | {len(chosen)} | {row['share']:.3f} | {row['rms_error']:.4f} |", flush=True)
    test = load_split_numpy(args.data, "test", ["spectrogram", "speaker", "f0"])
    mine = test["speaker"] == args.speaker
    combs = comb_correlations(test["spectrogram"][mine].astype(np.float32), test["f0"][mine], feats)
    for row in combs:
        print(row)
    held_out = loaded.run_config.train.held_out_speaker
    document = {"data": args.data, "checkpoint": args.checkpoint, "held_out_speaker": held_out, "speaker": args.speaker}
    publish({**document, "shares": shares, "comb_correlation": combs}, args.out, "benchmarks.fine_structure")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
