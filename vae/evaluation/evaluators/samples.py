"""What the recogniser hears in the model's samples, against real test clips and the vocoder floor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vae import generation
from vae.config import N_DIGITS, EvalConfig
from vae.evaluation import metrics as M
from vae.evaluation import recogniser
from vae.evaluation.context import Context
from vae.evaluation.evaluators import held_out

METRICS: dict[str, tuple[bool, str]] = {
    "digit_accuracy": (True, "digit-conditional samples heard as the digit asked for"),
    "inception_score": (True, "exp E KL(p(y|x) || p(y)) over unconditional samples; 10 = confident and balanced"),
    "frechet_distance": (False, "recogniser embeddings of unconditional samples vs real test clips (mean over draws)"),
}
NO_RECOGNISER = "no recogniser given (--recogniser): digit_accuracy, inception_score and frechet_distance not computed"


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


@dataclass
class SampleScorer:
    """What a sweep measures of each checkpoint its trainer writes (:data:`vae.objective.Scorer`): the digit
    accuracy of its samples (with a recogniser), and the measurements of the objective's ``terms``
    (:data:`vae.objective.TERMS`): "voicing", the pYIN voiced share of those samples; "held_out", the
    reconstruction error of the held-out speaker's train-split takes (read from ``data_uri``; its test
    takes stay for the final evaluation). Pickled to the workers with URIs only, the recogniser and the
    takes read on first use."""

    recogniser_uri: str | None
    n_per_digit: int = 3
    terms: tuple[str, ...] = ()
    data_uri: str = ""
    _recogniser: Any = field(default=None, init=False, repr=False, compare=False)
    _held_out: Any = field(default=None, init=False, repr=False, compare=False)

    def __call__(self, loaded) -> dict[str, float]:
        if self.recogniser_uri and self._recogniser is None:
            self._recogniser = recogniser.load(self.recogniser_uri)
        ctx = Context(loaded, None, EvalConfig(n_per_digit=self.n_per_digit).validate(), self._recogniser)
        out = {}
        if self._recogniser is not None:
            out["digit_accuracy"] = digit_accuracy(ctx)
        if "voicing" in self.terms:
            out["voicing_samples"] = M.voicing(ctx.generated, ctx.features.sample_rate)
        if "held_out" in self.terms:
            if self._held_out is None:
                self._held_out = held_out.train_takes(self.data_uri, loaded.run_config.train.held_out_speaker)
            out["held_out_recon_mse"] = held_out.recon_mse(loaded, self._held_out)
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_recogniser": None, "_held_out": None}


def reference_subsets(n_clips: int, config: EvalConfig) -> list[np.ndarray]:
    """The test clips each unconditional draw's floors and references are scored on: ``config.unconditional_draws``
    random subsets of ``config.n_unconditional``, as many clips as the model's draw (the Frechet distance is
    biased upwards for small sets)."""
    return [
        np.random.default_rng([config.seed, k]).permutation(n_clips)[: config.n_unconditional]
        for k in range(config.unconditional_draws)
    ]


def _conditional(ctx: Context) -> dict[str, Any]:
    heard, asked = ctx.heard("generated").predicted, ctx.generated_digits
    accuracy = digit_accuracy(ctx)
    return {
        "digit_accuracy": accuracy,
        "digit_accuracy_se": M.binomial_se(accuracy, len(asked)),
        "digit_accuracy_floor": M.digit_accuracy(ctx.heard("floor").probs, ctx.digits),
        "digit_accuracy_real": M.digit_accuracy(ctx.heard("originals").probs, ctx.digits),
        "digit_accuracy_per_digit": {str(d): float(np.mean(heard[asked == d] == d)) for d in range(N_DIGITS)},
        "conditional_samples": int(len(asked)),
    }


def _unconditional(ctx: Context) -> dict[str, Any]:
    uncond, real, floor = ctx.heard("unconditional"), ctx.heard("originals"), ctx.heard("floor")
    n, draws = ctx.config.n_unconditional, ctx.config.unconditional_draws
    subsets = reference_subsets(len(ctx.digits), ctx.config)
    samples = [slice(k * n, (k + 1) * n) for k in range(draws)]
    fd = [M.frechet_distance(uncond.embeddings[s], real.embeddings) for s in samples]
    return {
        "inception_score": float(np.mean([M.inception_score(uncond.probs[s]) for s in samples])),
        "inception_score_floor": float(np.mean([M.inception_score(floor.probs[s]) for s in subsets])),
        "inception_score_real": float(np.mean([M.inception_score(real.probs[s]) for s in subsets])),
        "frechet_distance": float(np.mean(fd)),
        "frechet_distance_draws": [float(v) for v in fd],
        "frechet_distance_floor": float(
            np.mean([M.frechet_distance(floor.embeddings[s], real.embeddings) for s in subsets])
        ),
        "unconditional_samples": int(len(uncond.probs)),
        **_other_recordings(ctx),
    }


def _other_recordings(ctx: Context) -> dict[str, float]:
    """``frechet_distance_real``: real recordings that are not test clips against the test clips, in draws as
    large as the samples'. The floor's draws are test clips, part of what they are compared with, so they score
    lower than any recordings a model could make; nothing when the dataset has no train split."""
    if not len(ctx.other_recordings):
        return {}
    other, real = ctx.heard("other_recordings").embeddings, ctx.heard("originals").embeddings
    n = len(other) // ctx.config.unconditional_draws
    draws = [other[k * n : (k + 1) * n] for k in range(ctx.config.unconditional_draws)]
    return {"frechet_distance_real": float(np.mean([M.frechet_distance(d, real) for d in draws]))}
