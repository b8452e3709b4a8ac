"""How much of the samples' Frechet distance is the sampler's: a checkpoint's ex-post mixtures against one
Gaussian per digit, richer mixtures, and the training clips' own codes, replayed as they are or jittered by a
share of their digit's spread, each decoded and scored as ``jobs.evaluate`` scores samples (digit accuracy,
inception score, Frechet distance against the real test clips, with their floors).

    python -m benchmarks.sampler_ceiling --checkpoint CKPT --data PARQUET --classifier RECOGNISER
        [--set sampling.KEY=VALUE ...] [--out F]

Replaying the training codes is the decoder's ceiling for any sampler of this code: no density estimate of
the codes can produce samples closer to what the decoder makes of real clips. A model with a local code
decodes every sampled code with its local prior's mean (``--set sampling.local_temperature=T`` draws it). The last rows
score training clips themselves: reconstructed (each code, and a local code, its posterior mean: the ceiling
for any prior of the local code), the same without the predicted pitch's harmonics drawn in, and through
the vocoder alone, what real clips of the speakers trained on score against the test clips. A checkpoint that
held a speaker out of training adds the test clips of the other speakers through the vocoder alone, drawn as
the floor is drawn: the floor of any model that never heard that voice. The last stdout line is the JSON;
``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from benchmarks.quality import decoding, publish

JITTERS = (0.0, 0.3, 0.7)
MIXTURES = ((8, "diag"), (8, "full"))  # (most components per digit, covariance) beyond the checkpoint's
METRICS = ("digit_accuracy", "inception_score", "frechet_distance")


def training_codes(loaded, rows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and digits of the clips the checkpoint trained on (``benchmarks.adversarial.train_rows``:
    its augmented copies included)."""
    from vae import generation

    digits = rows["digit"].astype(np.int64)
    return generation.encode(loaded, rows["x"], digits), digits


def replay(codes: np.ndarray, digits: np.ndarray, jitter: float) -> dict:
    """An ex-post table with one component per training code, of covariance ``jitter``^2 x its digit's."""
    dim = codes.shape[1]
    table = {}
    for d in np.unique(digits):
        z = codes[digits == d]
        cov = jitter**2 * np.cov(z.T) + 1e-8 * np.eye(dim)
        table[str(d)] = {
            "count": len(z),
            "weights": np.full(len(z), 1.0 / len(z)),
            "means": z,
            "covariances": np.broadcast_to(cov, (len(z), dim, dim)),
        }
    return {"covariance": "full", "digits": table}


def samplers(loaded, rows: dict[str, np.ndarray]) -> dict[str, dict]:
    from vae.config import SamplingConfig
    from vae.generation import fit_expost

    codes, digits = training_codes(loaded, rows)
    return {
        "ex-post mixtures (the checkpoint's)": loaded.expost,
        "one Gaussian per digit": fit_expost(codes, digits, SamplingConfig(expost_components=1)),
        **{
            f"ex-post mixtures, up to {k} {cov}": fit_expost(
                codes, digits, SamplingConfig(expost_components=k, expost_covariance=cov)
            )
            for k, cov in MIXTURES
        },
        **{f"training codes, jitter {j:g}": replay(codes, digits, j) for j in JITTERS},
    }


# How the training clips are made audio: through the model (each code and local code its posterior mean)
# with the predicted pitch's harmonics drawn in as decoding draws them, or without them, or through the
# vocoder alone (the data's own ceiling).
THROUGH = ("the model", "the model without its comb", "the vocoder alone")


def training_clips(ctx, loaded, rows: dict[str, np.ndarray], through: str) -> None:
    """Give ``ctx`` training clips made audio ``through`` one of :data:`THROUGH` as its samples:
    digit-conditional in digit order, and unconditional at random, as many as it draws."""
    from vae import generation
    from vae.config import N_DIGITS
    from vae.evaluation import audio

    cfg = ctx.config
    rng = np.random.default_rng(cfg.seed)
    by_digit = np.concatenate(
        [rng.choice(np.flatnonzero(rows["digit"] == d), cfg.n_per_digit) for d in range(N_DIGITS)]
    )
    anywhere = rng.choice(len(rows["digit"]), cfg.n_unconditional * cfg.unconditional_draws)

    def waves(picked: np.ndarray, label: str) -> np.ndarray:
        specs = rows["x"][picked]
        if through != THROUGH[2]:
            specs = generation.reconstruct(loaded, specs, rows["digit"][picked], harmonics=through == THROUGH[0])
        lo, hi = generation.db_range(loaded)
        n = len(picked)
        known = lo is not None and hi is not None
        ranges = (np.full(n, lo), np.full(n, hi)) if known else (None, None)
        return audio.resynthesise(specs, loaded.run_config.features, *ranges, seed=cfg.seed, label=label)

    ctx.generated = waves(by_digit, "training clips by digit, griffin-lim")
    ctx.unconditional = waves(anywhere, "training clips, griffin-lim")


def trained_speakers_floor(ctx, held_out: str) -> dict[str, float]:
    """The sample metrics of the test clips of every speaker but ``held_out`` through the vocoder alone, in
    subsets as large as the floor's (which draws from every speaker's)."""
    from vae.evaluation import metrics as M
    from vae.evaluation.evaluators.samples import reference_subsets

    keep = np.flatnonzero(ctx.test["speaker"] != held_out)
    floor, real = ctx.heard("floor"), ctx.heard("originals")
    subsets = [keep[s] for s in reference_subsets(len(keep), ctx.config)]
    return {
        "digit_accuracy": M.digit_accuracy(floor.probs[keep], ctx.digits[keep]),
        "inception_score": float(np.mean([M.inception_score(floor.probs[s]) for s in subsets])),
        "frechet_distance": float(np.mean([M.frechet_distance(floor.embeddings[s], real.embeddings) for s in subsets])),
    }


def _shown(row: dict) -> dict:
    print(f"{row['sampler']}: " + ", ".join(f"{m} {row[m]:.3g}" for m in METRICS), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a model checkpoint with ex-post mixtures (local or s3://)")
    p.add_argument("--data", required=True, help="the Parquet dataset it trained on")
    p.add_argument("--classifier", required=True, help="recogniser checkpoint (jobs.train_classifier)")
    p.add_argument(
        "--set", action="append", default=[], metavar="sampling.KEY=VALUE", help="decode with these sampling choices"
    )
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    sampling = decoding(p, args.set)

    from benchmarks.adversarial import train_rows
    from vae import checkpoint
    from vae.config import to_dict
    from vae.evaluation import recogniser
    from vae.evaluation.context import Context
    from vae.evaluation.evaluators import samples

    loaded, rec = checkpoint.load(args.checkpoint), recogniser.load(args.classifier)
    loaded = checkpoint.with_sampling(loaded, sampling)
    rows = train_rows(args.data, loaded.run_config)  # the clips the checkpoint trained on, read once
    contexts = {
        name: Context(dataclasses.replace(loaded, expost=expost), args.data, recogniser=rec)
        for name, expost in samplers(loaded, rows).items()
    }
    for through in THROUGH if loaded.run_config.model.pitch else (THROUGH[0], THROUGH[2]):
        contexts[f"training clips through {through}"] = ctx = Context(loaded, args.data, recogniser=rec)
        training_clips(ctx, loaded, rows, through)
    rows = []
    for name, ctx in contexts.items():
        scored = samples.evaluate(ctx)
        rows.append(_shown({"sampler": name, **{m: scored[m] for m in METRICS}}))
    held_out = loaded.run_config.train.held_out_speaker
    if held_out:  # every context scores the same test clips: the last one's are heard already
        name = f"test clips of the speakers trained on (not {held_out}) through the vocoder alone"
        rows.append(_shown({"sampler": name, **trained_speakers_floor(ctx, held_out)}))
    floors = {f"{m}_floor": scored[f"{m}_floor"] for m in METRICS}
    publish(
        {"checkpoint": args.checkpoint, "sampling": to_dict(loaded.run_config.sampling), "rows": rows, **floors},
        args.out,
        "benchmarks.sampler_ceiling",
    )


if __name__ == "__main__":
    main()
