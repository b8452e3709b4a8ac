"""What runs are ranked by: the validation reconstruction error, or a sweep's objective.

A sweep's ranking needs measurements of a checkpoint the trainer does not know how to make (the digit
accuracy of its samples, their voicing, its reconstruction of a voice it never trained on); it is
handed a :data:`Scorer` that makes them (``vae.evaluation.evaluators.samples.SampleScorer``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SCORE_METRIC = "val_recon_mse"
OBJECTIVE = "objective"
# The terms a sweep may add to its objective (SweepConfig.objective), beyond reconstruction and digits.
TERMS = ("voicing", "held_out")

# Measurements of a checkpoint a worker has just written, given as a LoadedModel around the model in
# memory (vae.checkpoint.in_memory): any of digit_accuracy, voicing_samples and held_out_recon_mse.
# Pickled to the Ray Train workers with the loop config.
Scorer = Callable[[Any], dict[str, float]]


def objective(
    val_recon_mse: float, val_variance: float, measured: Mapping[str, float] | None = None, voicing_floor: float = 0.0
) -> float:
    """What a sweep ranks by, the smaller the better: a sum of shares, each 0 at its best and about 1 at
    its worst. Always the share of the validation spectrograms' variance the model fails to reconstruct;
    with the ``measured`` values a scorer made (the terms the sweep asked for):

    - ``1 - digit_accuracy``: the share of digit-conditional samples not heard as the digit asked for;
    - ``max(0, 1 - voicing_samples / voicing_floor)``: the share of the vocoder floor's voiced frames
      the samples lack (a whisper scores about 0.7, a voice 0);
    - ``held_out_recon_mse / val_variance``: the first term for a speaker the run never trained on.
    """
    measured = measured or {}
    value = val_recon_mse / val_variance
    if "digit_accuracy" in measured:
        value += 1.0 - measured["digit_accuracy"]
    if "voicing_samples" in measured:
        value += max(0.0, 1.0 - measured["voicing_samples"] / voicing_floor)
    if "held_out_recon_mse" in measured:
        value += measured["held_out_recon_mse"] / val_variance
    return float(value)


def describe(terms: tuple[str, ...], recogniser: bool) -> str:
    """:func:`objective` as a formula, with the terms a sweep of ``terms`` (and a recogniser or not) sums."""
    parts = ["val_recon_mse / val_variance"]
    if recogniser:
        parts.append("(1 - digit_accuracy)")
    if "voicing" in terms:
        parts.append("max(0, 1 - voicing_samples / voicing_floor)")
    if "held_out" in terms:
        parts.append("held_out_recon_mse / val_variance")
    return " + ".join(parts)


@dataclass(frozen=True)
class Ranking:
    """What a run's checkpoints are ranked and kept by, so the ones kept are the best by what the run
    is judged on. By default the validation reconstruction error; a sweep passes ``val_variance``
    (a ``scorer``, and the vocoder's ``voicing_floor`` when it scores voicing) to rank by
    :func:`objective`, whose measurements rank 0 makes on each checkpoint with the scorer."""

    val_variance: float = 0.0
    scorer: Scorer | None = None
    voicing_floor: float = 0.0

    @property
    def metric(self) -> str:
        return OBJECTIVE if self.val_variance > 0 else SCORE_METRIC
