"""How deep to draw the predicted pitch's harmonics into what a model decodes: the same checkpoints scored
as ``jobs.evaluate`` scores them at each comb depth (``SamplingConfig.harmonic_depth_db``; 0 draws none).

    python -m benchmarks.comb_depth --data PARQUET --classifier RECOGNISER --checkpoints CKPT [CKPT ...]
        [--depths 0 10 15 20 30] [--set sampling.KEY=VALUE ...] [--out benchmarks/results/comb_depth.json]

Decoding only: the checkpoints are not trained again. Training draws its own comb (at
``vae.config.HARMONIC_DEPTH_DB``) where ``loss.through_harmonics`` asks for it; a decoder trained without
it, whose local code renders the clip's own harmonics, may want a shallower one at decoding. Prints a line
per checkpoint and depth; the last stdout line is JSON with every row, also written to ``--out``.
"""

from __future__ import annotations

import argparse
import json

from benchmarks.quality import decoding, publish, score_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="Parquet dataset the checkpoints trained on")
    p.add_argument("--classifier", required=True, help="recogniser checkpoint (jobs.train_classifier)")
    p.add_argument("--checkpoints", nargs="+", required=True, help="model checkpoints with a pitch head")
    p.add_argument("--depths", type=float, nargs="+", default=[0, 10, 15, 20, 30], help="comb depths (dB)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="sampling.KEY=VALUE",
        help="decode with these sampling choices too",
    )
    p.add_argument("--out", help="also write the JSON with every row to this file")
    args = p.parse_args()
    sampling = decoding(p, args.set)
    for depth in args.depths:
        decoding(p, [f"sampling.harmonic_depth_db={depth}"])

    from vae import checkpoint

    rows = []
    for k, uri in enumerate(args.checkpoints):
        seed = checkpoint.check(uri)[1].train.seed
        for depth in args.depths:
            scored = score_checkpoint(uri, args.data, args.classifier, {**sampling, "harmonic_depth_db": depth})
            rows.append({"checkpoint": k, "seed": seed, "depth_db": depth, **scored})
            print(json.dumps(rows[-1]), flush=True)
    publish({"checkpoints": args.checkpoints, "sampling": sampling, "rows": rows}, args.out, "benchmarks.comb_depth")


if __name__ == "__main__":
    main()
