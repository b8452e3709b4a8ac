"""A voice never heard: reconstructions of the test clips of the speaker the run held out of training.

Applies to a run trained with ``TrainConfig.held_out_speaker`` (leave-one-speaker-out): none of that
speaker's clips trained or validated it, so this is how the model does on a new voice. Each metric
comes with its floor, the same clips through the features and the vocoder alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vae.evaluation import metrics as M
from vae.evaluation.context import Context

METRICS: dict[str, tuple[bool, str]] = {
    "held_out_lsd_db": (False, "log-spectral distance (dB) of reconstructions of the held-out speaker's test clips"),
    "held_out_pesq_nb": (True, "narrow-band PESQ of reconstructions of the held-out speaker's test clips"),
    "held_out_voicing": (True, "share of the loud frames of those reconstructions pYIN calls voiced"),
}


def evaluate(ctx: Context) -> dict[str, Any]:
    """The held-out speaker's reconstruction metrics and floors; nothing for a run that held none out."""
    speaker = ctx.loaded.run_config.train.held_out_speaker
    if not speaker or ctx.data_uri is None:
        return {}
    rows = np.flatnonzero(ctx.test["speaker"] == speaker)
    if len(rows) == 0:
        ctx.notes.append(f"the test split has no clip of the held-out speaker {speaker!r}: no held-out metrics")
        return {}
    feats, rate = ctx.features, ctx.features.sample_rate
    originals, recon, floor = ctx.originals[rows], ctx.reconstructions[rows], ctx.floor[rows]
    pesq, skipped = M.pesq_nb(originals, recon, rate)
    pesq_floor, _ = M.pesq_nb(originals, floor, rate)
    return {
        "held_out_speaker": speaker,
        "held_out_clips": int(len(rows)),
        "held_out_lsd_db": M.recon_lsd_db(originals, recon, feats),
        "held_out_lsd_db_floor": M.recon_lsd_db(originals, floor, feats),
        "held_out_pesq_nb": pesq,
        "held_out_pesq_nb_skipped": skipped,
        "held_out_pesq_nb_floor": pesq_floor,
        "held_out_voicing": M.voicing(recon, rate),
        "held_out_voicing_floor": M.voicing(floor, rate),
    }
