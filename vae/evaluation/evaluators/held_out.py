"""A voice never heard: reconstructions of the test clips of the speaker the run held out of training.

Applies to a run trained with ``TrainConfig.held_out_speaker`` (leave-one-speaker-out): none of that
speaker's clips trained or validated it, so this is how the model does on a new voice. Each metric
comes with its floor, the same clips through the features and the vocoder alone. Whether the
reconstructions still sound like that speaker is asked of a voice-print recogniser
(:mod:`vae.evaluation.speakers`) fit on the dataset's train split, that speaker's takes included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vae import generation
from vae.dataset import load_split_numpy
from vae.evaluation import metrics as M
from vae.evaluation.context import Context
from vae.evaluation.speakers import SpeakerRecogniser

METRICS: dict[str, tuple[bool, str]] = {
    "held_out_lsd_db": (False, "log-spectral distance (dB) of reconstructions of the held-out speaker's test clips"),
    "held_out_pesq_nb": (True, "narrow-band PESQ of reconstructions of the held-out speaker's test clips"),
    "held_out_voicing": (True, "share of the loud frames of those reconstructions pYIN calls voiced"),
    "held_out_heard_as_speaker": (
        True,
        "share of those reconstructions a speaker recogniser (fit on the train split's clips of every speaker) "
        "names as the held-out speaker",
    ),
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
        **heard_as_speaker(ctx, ctx.data_uri, speaker, recon, floor),
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


def heard_as_speaker(ctx: Context, data_uri: str, speaker: str, recon: np.ndarray, floor: np.ndarray) -> dict[str, Any]:
    """The share of ``recon`` (and of its ``floor``) the voice-print recogniser names as ``speaker``; nothing
    when the train split has no clip of that speaker to know the voice from."""
    train = load_split_numpy(data_uri, "train", ["speaker", "spectrogram"])
    if not np.any(train["speaker"] == speaker) or len(np.unique(train["speaker"])) < 2:
        ctx.notes.append(f"the train split has no clip of {speaker!r} or no other speaker: no speaker recogniser")
        return {}
    recogniser = SpeakerRecogniser(train["spectrogram"], train["speaker"], ctx.features)
    return {
        "held_out_heard_as_speaker": float(np.mean(recogniser.listen(recon) == speaker)),
        "held_out_heard_as_speaker_floor": float(np.mean(recogniser.listen(floor) == speaker)),
    }


def train_takes(data_uri: str, speaker: str) -> dict[str, np.ndarray]:
    """``speaker``'s train-split clips (``digit``, ``spectrogram``): what a sweep scores a voice never
    heard on, the test split's takes kept for the final evaluation."""
    if not speaker:
        raise ValueError("no held-out speaker: the run trained on every speaker (TrainConfig.held_out_speaker)")
    train = load_split_numpy(data_uri, "train", ["speaker", "digit", "spectrogram"])
    rows = train["speaker"] == speaker
    if not rows.any():
        raise ValueError(f"{data_uri}: the train split has no clip of the held-out speaker {speaker!r}")
    return {"digit": train["digit"][rows].astype(np.int64), "spectrogram": train["spectrogram"][rows]}


def recon_mse(loaded, clips: dict[str, np.ndarray]) -> float:
    """Mean squared error of the model's reconstructions of ``clips`` (:func:`train_takes`), as heard: a
    model with ``pitch`` has its predicted harmonics drawn in."""
    recon = generation.reconstruct(loaded, clips["spectrogram"], clips["digit"])
    return float(np.mean(np.square(recon - clips["spectrogram"])))
