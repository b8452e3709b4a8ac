"""What runs are ranked by: the validation reconstruction error, or a sweep's objective.

A sweep's ranking needs the digit accuracy of a checkpoint's samples; the trainer does not know how to
measure it and is handed a :data:`Scorer` that does (``vae.evaluation.evaluators.samples.SampleScorer``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SCORE_METRIC = "val_recon_mse"
OBJECTIVE = "objective"

# The digit accuracy of a checkpoint a worker has just written, given as a LoadedModel around the
# model in memory (vae.checkpoint.in_memory). Pickled to the Ray Train workers with the loop config.
Scorer = Callable[[Any], float]


def objective(val_recon_mse: float, val_variance: float, digit_accuracy: float | None) -> float:
    """What a sweep ranks by, the smaller the better: the share of the validation spectrograms'
    variance the model fails to reconstruct, plus the share of digit-conditional samples the
    recogniser does not hear as the digit asked for (when there is a recogniser)."""
    value = val_recon_mse / val_variance
    if digit_accuracy is not None:
        value += 1.0 - digit_accuracy
    return float(value)


@dataclass(frozen=True)
class Ranking:
    """What a run's checkpoints are ranked and kept by, so the ones kept are the best by what the run
    is judged on. By default the validation reconstruction error; a sweep passes ``val_variance``
    (and a ``scorer``) to rank by :func:`objective`, whose digit accuracy rank 0 measures on each
    checkpoint with the scorer."""

    val_variance: float = 0.0
    scorer: Scorer | None = None

    @property
    def metric(self) -> str:
        return OBJECTIVE if self.val_variance > 0 else SCORE_METRIC
