"""Per-digit statistics of a model's posterior means: summed batch by batch (and all-reduced over
workers), then turned into the mean, spread, dB range and mixture occupancy of each digit that a
checkpoint's ``latent_stats.json`` holds."""

from __future__ import annotations

from typing import Any

import numpy as np

from vae.config import N_DIGITS


def empty_latent_sums(latent_dim: int, components: int) -> dict[str, np.ndarray]:
    return {
        "count": np.zeros(N_DIGITS),
        "mu": np.zeros((N_DIGITS, latent_dim)),
        "mu_sq": np.zeros((N_DIGITS, latent_dim)),
        "db_min": np.zeros(N_DIGITS),
        "db_max": np.zeros(N_DIGITS),
        "components": np.zeros((N_DIGITS, components)),
    }


def add_latent_sums(
    sums: dict[str, np.ndarray], mu: np.ndarray, batch: dict[str, np.ndarray], components: np.ndarray | None
) -> None:
    """Accumulate one batch of posterior means (and mixture assignments) into ``sums`` by digit."""
    mu = np.asarray(mu, dtype=np.float64)
    digits = np.asarray(batch["digit"], dtype=np.int64)
    np.add.at(sums["count"], digits, 1)
    np.add.at(sums["mu"], digits, mu)
    np.add.at(sums["mu_sq"], digits, mu**2)
    np.add.at(sums["db_min"], digits, batch["db_min"])
    np.add.at(sums["db_max"], digits, batch["db_max"])
    if components is not None:
        np.add.at(sums["components"], (digits, components), 1)


def latent_stats(model, prior_kind: str, batches) -> dict[str, Any]:
    """Latent statistics of a model over an iterable of numpy batches, in one process (no Ray)."""
    sums = empty_latent_sums(model.model_cfg.latent_dim, model.prior.components)
    for batch in batches:
        digits = batch["digit"] if model.model_cfg.conditional else None
        mu = model.encode(np.asarray(batch["spectrogram"], np.float32), digits, training=False)[0].numpy()
        add_latent_sums(sums, mu, batch, model.prior.assign(mu))
    return latent_stats_from_sums(sums, prior_kind)


def latent_stats_from_sums(sums: dict[str, np.ndarray], prior_kind: str) -> dict[str, Any]:
    """Per-digit latent mean and spread (std of the posterior means) from all-reduced sums."""
    count = sums["count"]
    out: dict[str, Any] = {"prior": prior_kind, "digits": {}}
    for d in range(N_DIGITS):
        n = float(count[d])
        if n == 0:
            continue
        mean = sums["mu"][d] / n
        var = np.maximum(sums["mu_sq"][d] / n - mean**2, 0.0)
        entry = {"count": int(n), "mean": mean.tolist(), "spread": np.sqrt(var).tolist()}
        entry["db_min"], entry["db_max"] = float(sums["db_min"][d] / n), float(sums["db_max"][d] / n)
        if sums["components"].any():  # a prior with components assigned every clip to one
            entry["occupancy"] = (sums["components"][d] / n).tolist()
        out["digits"][str(d)] = entry
    total = float(count.sum())
    if total:
        out["db_min"], out["db_max"] = float(sums["db_min"].sum() / total), float(sums["db_max"].sum() / total)
    return out
