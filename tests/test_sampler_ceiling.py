"""The sampler ceiling's floor for a run that held a speaker out: drawn from the other speakers' clips only."""

import types

import numpy as np

from benchmarks.sampler_ceiling import trained_speakers_floor
from vae.config import EvalConfig
from vae.evaluation import metrics as M


def _context(embeddings: np.ndarray, speakers: list[str]):
    n = len(speakers)
    digits = np.arange(n) % 10
    probs = np.full((n, 10), 0.01)
    probs[np.arange(n), digits] = 0.91
    heard = types.SimpleNamespace(embeddings=embeddings, probs=probs)
    return types.SimpleNamespace(
        test={"speaker": np.asarray(speakers)},
        digits=digits,
        config=EvalConfig(n_unconditional=20, unconditional_draws=2),
        heard=lambda name: heard,
    )


def test_the_held_out_voice_is_what_the_floor_of_the_others_misses():
    rng = np.random.default_rng(0)
    speakers = ["a"] * 40 + ["theo"] * 40
    embeddings = rng.normal(size=(80, 3))
    embeddings[40:] += 6.0  # theo's clips lie far from everyone else's
    ctx = _context(embeddings, speakers)
    row = trained_speakers_floor(ctx, "theo")
    alone = M.frechet_distance(embeddings[:40], embeddings)
    assert row["frechet_distance"] > 0.5 * alone > 5.0  # only the others' clips: theo's share is missed
    assert row["digit_accuracy"] == 1.0
    assert row["frechet_distance"] > trained_speakers_floor(ctx, "nobody")["frechet_distance"]
