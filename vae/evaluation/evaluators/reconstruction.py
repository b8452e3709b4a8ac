"""How the test clips sound after the encoder, the decoder and Griffin-Lim, against the vocoder floor."""

from __future__ import annotations

from typing import Any

import numpy as np

from vae.evaluation import metrics as M
from vae.evaluation.context import Context

METRICS: dict[str, tuple[bool, str]] = {
    "recon_lsd_db": (False, "log-spectral distance (dB), test clip vs its reconstruction"),
    "recon_mse": (False, "MSE of normalised spectrograms, test clip vs its reconstruction (as heard)"),
    "recon_mse_decoder": (False, "MSE of the raw decoder output, as training reports it (no vocoder)"),
}


def evaluate(ctx: Context) -> dict[str, Any]:
    """Reconstruction distances of the test clips, and of their vocoder floor."""
    feats, originals = ctx.features, ctx.originals
    return {
        "test_clips": int(len(ctx.digits)),
        "recon_lsd_db": M.recon_lsd_db(originals, ctx.reconstructions, feats),
        "recon_lsd_db_floor": M.recon_lsd_db(originals, ctx.floor, feats),
        "recon_mse": M.recon_mse(originals, ctx.reconstructions, feats),
        "recon_mse_floor": M.recon_mse(originals, ctx.floor, feats),
        "recon_mse_decoder": float(np.mean((ctx.recon_specs.astype(np.float64) - ctx.specs) ** 2)),
    }
