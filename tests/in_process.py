"""Training in the test's own process with the same steps as the Ray Train workers (no Ray, the default strategy)."""

from __future__ import annotations

import numpy as np

from vae.config import RunConfig
from vae.worker import make_optimizer, norm_metrics, shard_rows, train_epoch


def train_in_process(run_cfg: RunConfig, train: dict[str, np.ndarray], epochs: int | None = None):
    """Train a model on ``train`` (numpy columns id, digit, spectrogram) for ``epochs`` (default: the
    config's). Returns (model, optimizer, per-epoch mean loss terms)."""
    import keras

    from vae.models import TERMS, DistributedSteps, build_vae

    tcfg = run_cfg.train
    keras.utils.set_random_seed(tcfg.seed)
    steps_per_epoch = shard_rows(train) // tcfg.batch_size
    model = build_vae(
        run_cfg.features.shape, run_cfg.model, run_cfg.prior, run_cfg.loss, seed=tcfg.seed, features=run_cfg.features
    )
    optimizer = make_optimizer(tcfg, model.trainable_variables)
    steps = DistributedSteps(
        model,
        optimizer,
        tcfg.batch_size,
        jit_compile=tcfg.jit_compile,
        clip_norm=tcfg.clip_norm,
        fused_norm=tcfg.fused_batch_norm,
    )
    history = []
    for epoch in range(1, (epochs or tcfg.epochs) + 1):
        optimizer.learning_rate = tcfg.learning_rate_at(epoch)
        sums, norms = train_epoch(steps, train, run_cfg, epoch, 0, steps_per_epoch, progress=False)
        history.append(
            {**dict(zip(TERMS, (sums / max(len(norms) * tcfg.batch_size, 1)).tolist())), **norm_metrics(steps, norms)}
        )
    return model, optimizer, history
