"""A tiny VAE checkpoint in seconds, without Ray or training, for tests that serve or load one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vae.config import FeatureConfig, ModelConfig, PriorConfig, RunConfig, TrainConfig, preset

# Digit 9 is left out, so a service of this checkpoint has a digit it cannot generate.
DIGITS = tuple(range(9))


def make_checkpoint(
    directory: Path,
    fsdd_dir: Path,
    digits=DIGITS,
    takes=(10, 11),
    conditional: bool = False,
    pitch: bool = False,
    local_channels: int = 0,
) -> str:
    """An untrained ``tiny`` VAE (``conditional``, with a ``pitch`` head, with a local code of ``local_channels``)
    with the latent statistics and ex-post mixtures of real clips of ``digits`` (no Ray, seconds)."""
    from dataclasses import replace

    from vae import checkpoint, generation
    from vae.dataset import extract_clip
    from vae.latent_stats import latent_stats
    from vae.models import build_vae

    features = preset(FeatureConfig, "default")
    rows = [
        extract_clip(str(path), path.read_bytes(), features)
        for d in digits
        for t in takes
        for path in [fsdd_dir / f"{d}_jackson_{t}.wav"]
    ]
    batch = {k: np.stack([r[k] for r in rows]) for k in ("spectrogram", "digit", "db_min", "db_max")}
    model_cfg = replace(
        preset(ModelConfig, "tiny"), conditional=conditional, pitch=pitch, local_channels=local_channels, local_level=0
    )
    run_cfg = RunConfig(features, model_cfg, PriorConfig(), TrainConfig(epochs=1)).validate()
    model = build_vae(features.shape, run_cfg.model, run_cfg.prior)
    stats = latent_stats(model, "normal", [batch])
    mu = generation.encode(checkpoint.LoadedModel("mem", run_cfg, model), batch["spectrogram"], batch["digit"])
    expost = generation.fit_expost(mu, batch["digit"], run_cfg.sampling)
    return checkpoint.save(str(directory), model, None, 0, run_cfg, {"epoch": 0, "val_recon_mse": 0.1}, stats, expost)
