"""Whether the model's clips sound like a voice: pYIN's voiced share and PESQ, against real clips and the vocoder floor.

Each set is scored on at most ``EvalConfig.voicing_clips`` of its clips, spread evenly over it
(:func:`spread`); the test clips' sets (real, floor, reconstructions) on the same ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vae.config import EvalConfig
from vae.evaluation import audio
from vae.evaluation import metrics as M
from vae.evaluation.context import Context

METRICS: dict[str, tuple[bool, str]] = {
    "voicing_recon": (True, "share of the loud frames of reconstructions pYIN calls voiced"),
    "voicing_samples": (True, "share of the loud frames of digit-conditional samples pYIN calls voiced"),
    "pesq_nb": (True, "ITU-T P.862 narrow-band PESQ (MOS-LQO, 1 to 4.5), test clip vs its reconstruction"),
}
# Metrics whose floor and real-clip values are another name's: voicing_floor and voicing_real.
REFERENCES: dict[str, str] = {"voicing_recon": "voicing", "voicing_samples": "voicing"}


def evaluate(ctx: Context) -> dict[str, Any]:
    """Voicing of reconstructions, samples, real clips and the floor; PESQ of reconstructions and the floor."""
    rate, k = ctx.features.sample_rate, ctx.config.voicing_clips
    test, generated = spread(len(ctx.digits), k), spread(len(ctx.generated), k)
    originals = ctx.originals[test]
    pesq, skipped = M.pesq_nb(originals, ctx.reconstructions[test], rate)
    pesq_floor, skipped_floor = M.pesq_nb(originals, ctx.floor[test], rate)
    return {
        "voice_clips": int(len(test)),
        "voicing_recon": M.voicing(ctx.reconstructions[test], rate),
        "voicing_samples": M.voicing(ctx.generated[generated], rate),
        "voicing_real": M.voicing(originals, rate),
        "voicing_floor": M.voicing(ctx.floor[test], rate),
        "voicing_samples_clips": int(len(generated)),
        "pesq_nb": pesq,
        "pesq_nb_skipped": skipped,
        "pesq_nb_floor": pesq_floor,
        "pesq_nb_floor_skipped": skipped_floor,
    }


def voicing_floor(data_uri: str, config: EvalConfig) -> float:
    """pYIN's voiced share of up to ``config.voicing_clips`` test clips (:func:`spread`) through the features
    and the vocoder alone: the most voicing a model's samples can have here."""
    from vae.dataset import load_split_numpy, read_feature_config

    feats = read_feature_config(data_uri)
    test = load_split_numpy(data_uri, "test", ["spectrogram", "db_min", "db_max"])
    rows = spread(len(test["spectrogram"]), config.voicing_clips)
    per_clip = feats.normalisation == "per_clip"
    waves = audio.resynthesise(
        test["spectrogram"][rows],
        feats,
        db_min=test["db_min"][rows] if per_clip else None,
        db_max=test["db_max"][rows] if per_clip else None,
        label="vocoder floor, griffin-lim",
    )
    return M.voicing(waves, feats.sample_rate)


def spread(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` indices of ``range(n)``, evenly spread, in order (each digit alike in a digit-ordered set)."""
    m = min(n, k)
    return np.arange(m) * n // max(m, 1)
