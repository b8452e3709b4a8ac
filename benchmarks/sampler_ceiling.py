"""How much of the samples' Frechet distance is the sampler's: a checkpoint's ex-post mixtures against one
Gaussian per digit, richer mixtures, and the training clips' own codes, replayed as they are or jittered by a
share of their digit's spread, each decoded and scored as ``jobs.evaluate`` scores samples (digit accuracy,
inception score, Frechet distance against the real test clips, with their floors).

    python -m benchmarks.sampler_ceiling --checkpoint CKPT --data PARQUET --classifier RECOGNISER [--out F]

Replaying the training codes is the decoder's ceiling for any sampler of this code: no density estimate of
the codes can produce samples closer to what the decoder makes of real clips. A model with a local code
decodes every sampled code with its local prior's mean; its last row decodes training clips with their own
local codes as well (their reconstructions), the ceiling for any prior of the local code. The last stdout
line is the JSON; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from benchmarks.quality import publish

JITTERS = (0.0, 0.3, 0.7)
MIXTURES = ((8, "diag"), (8, "full"))  # (most components per digit, covariance) beyond the checkpoint's
METRICS = ("digit_accuracy", "inception_score", "frechet_distance")


def training_codes(loaded, data: str) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and digits of the clips the checkpoint trained on (its augmented copies included)."""
    from benchmarks.adversarial import train_rows
    from vae import generation

    rows = train_rows(data, loaded.run_config)
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


def samplers(loaded, data: str) -> dict[str, dict]:
    from vae.config import SamplingConfig
    from vae.generation import fit_expost

    codes, digits = training_codes(loaded, data)
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


def own_local_codes(ctx, loaded, data: str) -> None:
    """Give ``ctx`` training clips reconstructed (each code and local code its posterior mean) as its
    samples: digit-conditional in digit order, and unconditional at random, as many as it draws."""
    from benchmarks.adversarial import train_rows
    from vae import generation
    from vae.config import N_DIGITS
    from vae.evaluation import audio

    rows, cfg = train_rows(data, loaded.run_config), ctx.config
    rng = np.random.default_rng(cfg.seed)
    by_digit = np.concatenate(
        [rng.choice(np.flatnonzero(rows["digit"] == d), cfg.n_per_digit) for d in range(N_DIGITS)]
    )
    anywhere = rng.choice(len(rows["digit"]), cfg.n_unconditional * cfg.unconditional_draws)

    def waves(picked: np.ndarray, label: str) -> np.ndarray:
        specs = generation.reconstruct(loaded, rows["x"][picked], rows["digit"][picked])
        lo, hi = generation.db_range(loaded)
        n = len(picked)
        known = lo is not None and hi is not None
        ranges = (np.full(n, lo), np.full(n, hi)) if known else (None, None)
        return audio.resynthesise(specs, loaded.run_config.features, *ranges, seed=cfg.seed, label=label)

    ctx.generated = waves(by_digit, "training clips by digit, griffin-lim")
    ctx.unconditional = waves(anywhere, "training clips, griffin-lim")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a model checkpoint with ex-post mixtures (local or s3://)")
    p.add_argument("--data", required=True, help="the Parquet dataset it trained on")
    p.add_argument("--classifier", required=True, help="recogniser checkpoint (jobs.train_classifier)")
    p.add_argument(
        "--local-temperature",
        type=float,
        help="decode sampled codes with the local code drawn at this share of its prior's spread (default: the checkpoint's)",
    )
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()

    from vae import checkpoint
    from vae.evaluation import recogniser
    from vae.evaluation.context import Context
    from vae.evaluation.evaluators import samples

    loaded, rec = checkpoint.load(args.checkpoint), recogniser.load(args.classifier)
    if args.local_temperature is not None:
        sampling = dataclasses.replace(loaded.run_config.sampling, local_temperature=args.local_temperature)
        loaded = dataclasses.replace(loaded, run_config=dataclasses.replace(loaded.run_config, sampling=sampling))
    contexts = {
        name: Context(dataclasses.replace(loaded, expost=expost), args.data, recogniser=rec)
        for name, expost in samplers(loaded, args.data).items()
    }
    if loaded.run_config.model.local_channels:
        contexts["training clips, their own local codes too"] = own = Context(loaded, args.data, recogniser=rec)
        own_local_codes(own, loaded, args.data)
    rows = []
    for name, ctx in contexts.items():
        scored = samples.evaluate(ctx)
        rows.append({"sampler": name, **{m: scored[m] for m in METRICS}})
        print(f"{name}: " + ", ".join(f"{m} {scored[m]:.3g}" for m in METRICS), flush=True)
    floors = {f"{m}_floor": scored[f"{m}_floor"] for m in METRICS}
    temperature = loaded.run_config.sampling.local_temperature if loaded.run_config.model.local_channels else None
    publish(
        {"checkpoint": args.checkpoint, "local_temperature": temperature, "rows": rows, **floors},
        args.out,
        "benchmarks.sampler_ceiling",
    )


if __name__ == "__main__":
    main()
