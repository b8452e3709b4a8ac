"""A training checkpoint is a directory, local or ``s3://``:

- ``model.weights.h5``   Keras weights (encoder, decoder, prior);
- ``optimizer.npz``      optimizer variables, in ``optimizer.variables`` order;
- ``state.json``         ``{"epoch": completed epochs}``;
- ``config.json``        the RunConfig (features + model + prior + train);
- ``metrics.json``       the metrics reported with it;
- ``latent_stats.json``  per-digit latent mean/spread (and mixture occupancy) of the training encodings;
- ``expost.json``        per-digit Gaussian mixtures of the training encodings (vae.generation.fit_expost).

The model is rebuilt from ``config.json`` and the weights loaded into it, so a
checkpoint needs no pickled code.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vae import storage
from vae.config import RunConfig, from_json, to_json

WEIGHTS = "model.weights.h5"
OPTIMIZER = "optimizer.npz"
STATE = "state.json"
CONFIG = "config.json"
METRICS = "metrics.json"
LATENT_STATS = "latent_stats.json"
EXPOST = "expost.json"
REQUIRED = (WEIGHTS, CONFIG)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match its config; the message names it."""


def _dump(path: str, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
        f.write("\n")


def save(
    directory: str, model, optimizer, epoch: int, run_cfg: RunConfig, metrics: dict, latent_stats: dict, expost: dict | None = None
) -> str:
    """Write a complete checkpoint into a local ``directory`` (created if needed)."""
    os.makedirs(directory, exist_ok=True)
    model.save_weights(os.path.join(directory, WEIGHTS))
    if optimizer is not None:
        np.savez(os.path.join(directory, OPTIMIZER), *[np.asarray(v.numpy()) for v in optimizer.variables])
    with open(os.path.join(directory, CONFIG), "w") as f:
        f.write(to_json(run_cfg) + "\n")
    _dump(os.path.join(directory, STATE), {"epoch": int(epoch)})
    _dump(os.path.join(directory, METRICS), metrics)
    _dump(os.path.join(directory, LATENT_STATS), latent_stats)
    if expost is not None:
        _dump(os.path.join(directory, EXPOST), expost)
    return directory


def restore_training_state(directory: str, model, optimizer) -> int:
    """Load weights and optimizer state from a local checkpoint into built objects; return its epoch."""
    _check_complete(directory)
    model.load_weights(os.path.join(directory, WEIGHTS))
    opt_path = os.path.join(directory, OPTIMIZER)
    if optimizer is not None and os.path.exists(opt_path):
        with np.load(opt_path) as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if len(values) != len(optimizer.variables):
            raise CheckpointError(
                f"{opt_path}: holds {len(values)} optimizer variables, the optimizer has {len(optimizer.variables)}"
            )
        for var, value in zip(optimizer.variables, values):
            var.assign(value)
    with open(os.path.join(directory, STATE)) as f:
        return int(json.load(f)["epoch"])


def read_metrics(directory: str) -> dict:
    path = os.path.join(directory, METRICS)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _check_complete(directory: str) -> None:
    missing = [name for name in REQUIRED if not os.path.exists(os.path.join(directory, name))]
    if missing:
        raise CheckpointError(f"checkpoint {directory} is missing {missing}")


@dataclass
class LoadedModel:
    uri: str
    run_config: RunConfig
    model: Any  # vae.models.VAE
    latent_stats: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    epoch: int = 0
    expost: dict = field(default_factory=dict)


def load_local(directory: str, uri: str | None = None) -> LoadedModel:
    from vae.models import build_vae

    _check_complete(directory)

    def read(name: str, default: Any) -> Any:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            return default
        with open(path) as f:
            return json.load(f)

    with open(os.path.join(directory, CONFIG)) as f:
        run_cfg = from_json(RunConfig, f.read()).validate()
    # Inference never needs float16: the weights load into a float32 model either way.
    model = build_vae(run_cfg.features.shape, run_cfg.model, run_cfg.prior, mixed_precision=False)
    try:
        model.load_weights(os.path.join(directory, WEIGHTS))
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{uri or directory}: weights do not fit the model in its config.json: {exc}") from exc
    return LoadedModel(
        uri=uri or directory,
        run_config=run_cfg,
        model=model,
        latent_stats=read(LATENT_STATS, {}),
        metrics=read(METRICS, {}),
        epoch=int(read(STATE, {"epoch": 0})["epoch"]),
        expost=read(EXPOST, {}),
    )


def load(uri: str) -> LoadedModel:
    """Load a checkpoint from a local directory or ``s3://`` (downloaded to a temp dir first).

    A directory made by :func:`vae.storage.publish` (a sweep's ``best/``) resolves to its
    current published version.
    """
    if storage.exists(uri):
        uri = storage.published(uri)
    if not storage.exists(uri):
        raise CheckpointError(f"checkpoint {uri} does not exist")
    if not storage.is_s3(uri):
        return load_local(storage.resolve(uri).path, uri)
    with tempfile.TemporaryDirectory(prefix="fsdd-vae-ckpt-") as tmp:
        storage.copy_tree(uri, tmp)
        return load_local(tmp, uri)
