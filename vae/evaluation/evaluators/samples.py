"""What the recogniser hears in the model's samples, against real test clips and the vocoder floor."""

from __future__ import annotations

from typing import Any

import numpy as np

from vae import generation
from vae.config import N_DIGITS, EvalConfig
from vae.evaluation import metrics as M
from vae.evaluation.context import Context

METRICS: dict[str, tuple[bool, str]] = {
    "digit_accuracy": (True, "digit-conditional samples heard as the digit asked for"),
    "inception_score": (True, "exp E KL(p(y|x) || p(y)) over unconditional samples; 10 = confident and balanced"),
    "frechet_distance": (False, "recogniser embeddings of unconditional samples vs real test clips"),
}
NO_RECOGNISER = "no recogniser given (--classifier): digit_accuracy, inception_score and frechet_distance not computed"


def evaluate(ctx: Context) -> dict[str, Any]:
    """Sample metrics with their floors and real-clip references; only the sampler without a recogniser."""
    # Where every generated latent came from (vae.generation): "expost" or "prior".
    out: dict[str, Any] = {"sampler": generation.sampler(ctx.loaded)}
    if ctx.recogniser is None:
        ctx.notes.append(NO_RECOGNISER)
        return out
    return {**out, **_conditional(ctx), **_unconditional(ctx)}


def digit_accuracy(ctx: Context) -> float:
    """Share of the digit-conditional samples heard as the digit asked for (the sweep's objective uses it too)."""
    return M.digit_accuracy(ctx.heard("generated").probs, ctx.generated_digits)


def sample_accuracy(loaded, recogniser, n_per_digit: int) -> float:
    """:func:`digit_accuracy` of a loaded checkpoint alone (no test data), with :class:`EvalConfig`'s
    seed: what a sweep ranks its checkpoints by, so a sweep and the run report agree on one."""
    return digit_accuracy(Context(loaded, None, EvalConfig(n_per_digit=n_per_digit).validate(), recogniser))


def _conditional(ctx: Context) -> dict[str, Any]:
    heard, asked = ctx.heard("generated").predicted, ctx.generated_digits
    return {
        "digit_accuracy": digit_accuracy(ctx),
        "digit_accuracy_floor": M.digit_accuracy(ctx.heard("floor").probs, ctx.digits),
        "digit_accuracy_real": M.digit_accuracy(ctx.heard("originals").probs, ctx.digits),
        "digit_accuracy_per_digit": {str(d): float(np.mean(heard[asked == d] == d)) for d in range(N_DIGITS)},
        "conditional_samples": int(len(asked)),
    }


def _unconditional(ctx: Context) -> dict[str, Any]:
    uncond, real, floor = ctx.heard("unconditional"), ctx.heard("originals"), ctx.heard("floor")
    # The references get as many clips as the model: the Frechet distance is biased upwards for small sets.
    subset = np.random.default_rng(ctx.config.seed).permutation(len(ctx.digits))[: ctx.config.n_unconditional]
    return {
        "inception_score": M.inception_score(uncond.probs),
        "inception_score_floor": M.inception_score(floor.probs[subset]),
        "inception_score_real": M.inception_score(real.probs[subset]),
        "frechet_distance": M.frechet_distance(uncond.embeddings, real.embeddings),
        "frechet_distance_floor": M.frechet_distance(floor.embeddings[subset], real.embeddings),
        "unconditional_samples": int(len(uncond.probs)),
    }
