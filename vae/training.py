"""Multi-worker VAE training on Ray Train with ``MultiWorkerMirroredStrategy``.

``train_loop_per_worker`` is the per-worker loop shared by ``jobs.train`` and the
Tune trials; ``build_trainer`` wires it to a ``TensorflowTrainer``; ``fit`` is the
whole run (checks, datasets, trainer, best checkpoint).

What makes N workers x batch B take the same step as 1 worker x batch N*B:
per-example losses summed and divided by the GLOBAL batch size, gradients
all-reduced by the optimizer inside ``strategy.run``, BatchNorm synchronised
across replicas, and the sampling noise of each clip a function of
(seed, epoch, clip id) rather than of which worker happens to see it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from vae import storage
from vae.config import ConfigError, RunConfig, from_dict, to_dict

TRAIN, VAL = "train", "val"
COLUMNS = ["id", "digit", "spectrogram", "db_min", "db_max"]
N_DIGITS = 10
SCORE_METRIC = "val_recon_mse"
RUN_CONFIG_FILE = "run_config.json"
SHUFFLE_BUFFER = 256


class TrainingError(RuntimeError):
    """A run cannot start or did not finish; the message names the run and what to do."""


class NothingToTrain(TrainingError):
    """A resumed run has already trained the epochs asked for."""


# --------------------------------------------------------------------------- pure helpers


def example_noise(ids, epoch: int, seed: int, samples: int, dim: int) -> np.ndarray:
    """Standard-normal noise [samples, batch, dim], a function of (seed, epoch, clip id) only."""
    keys = [zlib.crc32(str(i).encode()) for i in ids]
    eps = [np.random.default_rng([seed, epoch, k]).standard_normal((samples, dim)) for k in keys]
    return np.stack(eps, axis=1).astype(np.float32)


def make_optimizer(train_cfg):
    import keras

    opt = keras.optimizers.Adam(train_cfg.learning_rate)
    return keras.optimizers.LossScaleOptimizer(opt) if train_cfg.mixed_precision else opt


def empty_latent_sums(latent_dim: int, components: int) -> dict[str, np.ndarray]:
    return {
        "count": np.zeros(N_DIGITS),
        "mu": np.zeros((N_DIGITS, latent_dim)),
        "mu_sq": np.zeros((N_DIGITS, latent_dim)),
        "db_min": np.zeros(N_DIGITS),
        "db_max": np.zeros(N_DIGITS),
        "components": np.zeros((N_DIGITS, components)),
    }


def add_latent_sums(sums: dict[str, np.ndarray], mu: np.ndarray, batch: dict[str, np.ndarray], components: np.ndarray | None) -> None:
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
    sums = empty_latent_sums(model.model_cfg.latent_dim, model.prior_cfg.components)
    for batch in batches:
        mu = model.encode(np.asarray(batch["spectrogram"], np.float32), training=False)[0].numpy()
        add_latent_sums(sums, mu, batch, model.prior.assign(mu) if prior_kind == "mixture" else None)
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
        if prior_kind == "mixture":
            entry["occupancy"] = (sums["components"][d] / n).tolist()
        out["digits"][str(d)] = entry
    total = float(count.sum())
    if total:
        out["db_min"], out["db_max"] = float(sums["db_min"].sum() / total), float(sums["db_max"].sum() / total)
    return out


# --------------------------------------------------------------------------- worker loop


def loop_config(run_cfg: RunConfig, run_dir: str, num_train_rows: int) -> dict[str, Any]:
    """The ``train_loop_config`` of :func:`train_loop_per_worker`: plain data only."""
    return {"run_config": to_dict(run_cfg), "run_dir": run_dir, "num_train_rows": int(num_train_rows)}


def _say(message: str) -> None:
    """One progress line from a Train worker. Not print(): Ray Train 2.60 patches it in workers to
    log *and* echo, so every line reached the driver twice."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _maybe_fault(train_cfg, epoch: int, rank: int, run_dir: str) -> None:
    """The test-only fault switch: exit hard once, leaving a marker so the retry runs on."""
    if train_cfg.fault_epoch != epoch or train_cfg.fault_rank != rank:
        return
    marker = storage.join(run_dir, f"fault_fired_epoch{epoch}_rank{rank}")
    if storage.exists(marker):
        return
    import ray.train

    # Die only once the controller has registered the last checkpoint, so the test is deterministic:
    # a crash in the gap would (correctly) restart from the checkpoint before it.
    ray.train.get_all_reported_checkpoints(timeout_s=120)
    storage.write_text(marker, f"worker rank {rank} exited on purpose at the start of epoch {epoch}\n")
    _say(f"[fault switch] rank {rank} exiting at the start of epoch {epoch}")
    os._exit(1)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: resume if Ray hands over a checkpoint, then per epoch train on this
    worker's 'train' shard, validate on its 'val' shard, collect latent statistics, all-reduce
    everything, and report metrics (plus a checkpoint from rank 0). ``config``: :func:`loop_config`."""
    import keras
    import ray.train
    import tensorflow as tf

    from vae import checkpoint as ckpt_lib
    from vae.models import build_vae

    run_cfg = from_dict(RunConfig, config["run_config"]).validate()
    run_dir, tcfg, pcfg = config["run_dir"], run_cfg.train, run_cfg.prior
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = max(1, (os.cpu_count() or 1) // max(1, ctx.get_local_world_size()))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # TensorFlow already initialised in this process: keep its setting
    keras.utils.set_random_seed(tcfg.seed)

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    global_batch = tcfg.batch_size * world
    steps_per_epoch = (config["num_train_rows"] // world) // tcfg.batch_size
    latent_dim, samples, k = run_cfg.model.latent_dim, pcfg.kl_samples, pcfg.components
    h, w = run_cfg.features.shape
    with strategy.scope():
        model = build_vae((h, w), run_cfg.model, pcfg, mixed_precision=tcfg.mixed_precision, seed=tcfg.seed)
        optimizer = make_optimizer(tcfg)
        optimizer.build(model.trainable_variables)

    start_epoch, restored_metrics = 0, {}
    if ray.train.get_checkpoint() is not None:
        # Ray hands over its latest checkpoint; go on from the newest one that verifies (that one, unless damaged).
        start_epoch, restored_metrics, restored = ckpt_lib.restore_newest_intact(run_dir, model, optimizer, _say if rank == 0 else None)
        optimizer.learning_rate = tcfg.learning_rate  # config, not state: a resumed run may change it
        if rank == 0:
            _say(f"resuming from {restored} after epoch {start_epoch}")

    x_spec = tf.TensorSpec([None, h, w], tf.float32)
    eps_spec = tf.TensorSpec([samples, None, latent_dim], tf.float32)
    term_keys = ("loss", "recon", "kl", "recon_mse")

    @tf.function(input_signature=[x_spec, eps_spec])
    def train_step(x, eps):
        def replica_step(x, eps):
            with tf.GradientTape() as tape:
                terms = model.per_example_losses(x, eps, training=True)
                loss = tf.reduce_sum(terms["loss"]) / global_batch
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return tf.stack([tf.reduce_sum(terms[key]) for key in term_keys])

        return strategy.experimental_local_results(strategy.run(replica_step, args=(x, eps)))[0]

    @tf.function(input_signature=[x_spec, eps_spec])
    def eval_step(x, eps):
        terms = model.per_example_losses(x, eps, training=False)
        return tf.stack([tf.reduce_sum(terms[key]) for key in term_keys])

    @tf.function(input_signature=[x_spec])
    def encode_step(x):
        mu, _ = model.encode(x, training=False)
        return mu

    @tf.function
    def all_reduce(v):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(v,)), axis=None)

    train_shard, val_shard = ray.train.get_dataset_shard(TRAIN), ray.train.get_dataset_shard(VAL)

    def validate() -> np.ndarray:
        """Summed loss terms and clip count over this worker's validation shard."""
        sums = np.zeros(len(term_keys) + 1)
        for batch in val_shard.iter_batches(batch_size=tcfg.batch_size, batch_format="numpy"):
            eps = example_noise(batch["id"], 0, tcfg.seed, samples, latent_dim)
            sums[:-1] += eval_step(tf.constant(batch["spectrogram"], tf.float32), tf.constant(eps)).numpy()
            sums[-1] += len(batch["id"])
        return sums

    if start_epoch == 0:
        # The untrained model's validation loss: the baseline every later epoch is compared with.
        initial = all_reduce(tf.constant(validate(), tf.float64)).numpy()
        initial_val_loss = float(initial[0] / max(initial[-1], 1))
    else:
        initial_val_loss = restored_metrics.get("initial_val_loss")
    # Every epoch's metrics, carried by each checkpoint: curves survive keeping only the best few.
    history = list(restored_metrics.get("history", []))
    for epoch in range(start_epoch + 1, tcfg.epochs + 1):
        _maybe_fault(tcfg, epoch, rank, run_dir)
        t0 = time.perf_counter()
        train_sums, steps = np.zeros(len(term_keys)), 0
        batches = train_shard.iter_batches(
            batch_size=tcfg.batch_size,
            batch_format="numpy",
            drop_last=True,
            local_shuffle_buffer_size=SHUFFLE_BUFFER,
            local_shuffle_seed=tcfg.seed * 100003 + epoch * 7919 + rank,
        )
        for batch in batches:
            # Equal shards give every worker the same number of full batches; the cap is a guard
            # (a worker stepping alone would wait forever in the gradient all-reduce).
            if steps >= steps_per_epoch:
                continue
            eps = example_noise(batch["id"], epoch, tcfg.seed, samples, latent_dim)
            train_sums += train_step(tf.constant(batch["spectrogram"], tf.float32), tf.constant(eps)).numpy()
            steps += 1
            if rank == 0 and steps % 20 == 0:
                _say(f"epoch {epoch}: step {steps}/{steps_per_epoch}")
        train_time = time.perf_counter() - t0

        val_sums = validate()

        lat = empty_latent_sums(latent_dim, k)
        for batch in train_shard.iter_batches(batch_size=max(tcfg.batch_size, 64), batch_format="numpy"):
            mu = encode_step(tf.constant(batch["spectrogram"], tf.float32)).numpy()
            add_latent_sums(lat, mu, batch, model.prior.assign(mu) if pcfg.kind == "mixture" else None)

        local = np.concatenate([train_sums, [steps * tcfg.batch_size], val_sums] + [v.ravel() for v in lat.values()])
        total = all_reduce(tf.constant(local, tf.float64)).numpy()
        n_train, n_term = total[len(term_keys)], len(term_keys)
        train_mean = total[:n_term] / n_train
        val_part = total[n_term + 1 : 2 * n_term + 2]
        val_mean = val_part[:-1] / max(val_part[-1], 1)
        offset, reduced = 2 * n_term + 2, {}
        for key, value in lat.items():
            reduced[key] = total[offset : offset + value.size].reshape(value.shape)
            offset += value.size

        metrics = {"epoch": epoch, "resumed_from_epoch": start_epoch, "steps": steps, "train_clips": int(n_train), "val_clips": int(val_part[-1])}
        metrics.update({f"train_{key}": float(v) for key, v in zip(term_keys, train_mean)})
        # A diverged epoch must rank last among checkpoints, not poison the ordering with NaN.
        metrics.update({f"val_{key}": float(v) if np.isfinite(v) else float("inf") for key, v in zip(term_keys, val_mean)})
        metrics["initial_val_loss"] = initial_val_loss
        metrics["train_clips_per_s"] = float(n_train / train_time)
        metrics["epoch_time_s"] = float(time.perf_counter() - t0)
        stats = latent_stats_from_sums(reduced, pcfg.kind)
        history.append(metrics)

        name = f"checkpoint_{epoch:04d}"
        if rank == 0:
            name = ckpt_lib.dir_name(run_dir, epoch)  # never the folder of a damaged checkpoint gone back past
            _say(
                f"epoch {epoch}/{tcfg.epochs}: train loss {metrics['train_loss']:.4g} (recon_mse "
                f"{metrics['train_recon_mse']:.4g}, kl {metrics['train_kl']:.4g}) | val loss {metrics['val_loss']:.4g} "
                f"(recon_mse {metrics['val_recon_mse']:.4g}, kl {metrics['val_kl']:.4g}) | "
                f"{metrics['train_clips_per_s']:.1f} clips/s, {metrics['epoch_time_s']:.1f} s"
            )
            with tempfile.TemporaryDirectory(prefix="fsdd-vae-") as tmp:
                ckpt_lib.save(tmp, model, optimizer, epoch, run_cfg, {**metrics, "history": history}, stats)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)
        else:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)


# --------------------------------------------------------------------------- driver side


def _ray_storage(storage_uri: str) -> tuple[str, Any]:
    loc = storage.resolve(storage_uri)
    return loc.path, (loc.fs if storage.is_s3(loc.uri) else None)


def checkpoint_uri(checkpoint, storage_uri: str) -> str:
    """A Ray ``Checkpoint`` as a URI of the same kind as the storage it lives in."""
    return "s3://" + checkpoint.path.lstrip("/") if storage.is_s3(storage_uri) else checkpoint.path


def build_trainer(
    run_cfg: RunConfig,
    datasets: dict[str, Any],
    storage_uri: str,
    name: str,
    num_train_rows: int,
    train_loop: Callable[[dict], None] = train_loop_per_worker,
    callbacks: list | None = None,
):
    """A ``TensorflowTrainer`` for ``run_cfg`` writing to ``storage_uri/name`` (datasets: 'train' and 'val')."""
    import ray.train
    from ray.train.tensorflow import TensorflowTrainer

    tcfg = run_cfg.train
    storage_path, fs = _ray_storage(storage_uri)
    return TensorflowTrainer(
        train_loop,
        train_loop_config=loop_config(run_cfg, storage.join(storage_uri, name), num_train_rows),
        scaling_config=ray.train.ScalingConfig(
            num_workers=tcfg.num_workers, use_gpu=tcfg.use_gpu, placement_strategy=tcfg.placement_strategy
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=tcfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=tcfg.checkpoints_to_keep, checkpoint_score_attribute=SCORE_METRIC, checkpoint_score_order="min"
            ),
            callbacks=callbacks,
        ),
        datasets=datasets,
    )


@dataclass
class FitResult:
    run_dir: str
    best_checkpoint: str
    best_metrics: dict
    latest_checkpoint: str
    latest_metrics: dict
    run_config: RunConfig


def stored_run_config(storage_uri: str, name: str) -> RunConfig | None:
    path = storage.join(storage_uri, name, RUN_CONFIG_FILE)
    if not storage.exists(path):
        return None
    return from_dict(RunConfig, storage.read_json(path))


def _check_same_architecture(stored: RunConfig, new: RunConfig, run_dir: str) -> None:
    a, b = to_dict(stored), to_dict(new)
    diffs = [
        f"{section}.{key}: {a[section][key]!r} -> {b[section][key]!r}"
        for section in ("features", "model", "prior")
        for key in a[section]
        if a[section][key] != b[section][key]
    ]
    if diffs:
        raise ConfigError(f"--resume of {run_dir}: the checkpoints were made with a different config ({'; '.join(diffs)})")


def check_run(storage_uri: str, name: str, resume: bool) -> str:
    """The run's URI, after checking that it exists exactly when resuming."""
    storage.check_reachable(storage_uri)
    run_dir = storage.join(storage_uri, name)
    exists = storage.exists(run_dir)
    if exists and not resume:
        raise TrainingError(f"run {run_dir} already exists: pass --resume to continue it, or choose another --name")
    if resume and not exists:
        raise TrainingError(f"nothing to resume: {run_dir} does not exist (drop --resume to start it)")
    return run_dir


def check_resume(run_dir: str, epochs: int) -> None:
    """Before a resumed run starts: say which damaged checkpoints it goes back past, and refuse
    when no checkpoint is intact or nothing is left to train."""
    from vae.checkpoint import CheckpointError, newest_intact

    try:
        point = newest_intact(run_dir)
    except CheckpointError as exc:
        raise TrainingError(f"--resume of {run_dir}: {exc}") from None
    if point is None:
        return
    for name, why in point.skipped:
        print(f"--resume: {name} fails verification ({why}); going on from {point.uri} (epoch {point.epoch})", flush=True)
    if epochs <= point.epoch:
        raise NothingToTrain(
            f"run {run_dir} has trained {point.epoch} epochs ({point.uri}): nothing left to train with "
            f"{epochs} epochs in all; give more epochs (--epochs) to train on"
        )


def load_datasets(data_uri: str) -> dict[str, Any]:
    """The train and validation (``test`` split) Ray Datasets of a Parquet dataset, materialised once."""
    from vae.dataset import read_split

    return {
        TRAIN: read_split(data_uri, "train").select_columns(COLUMNS).materialize(),
        VAL: read_split(data_uri, "test").select_columns(COLUMNS).materialize(),
    }


def fit(
    run_cfg: RunConfig,
    data_uri: str,
    storage_uri: str,
    name: str,
    resume: bool = False,
    callbacks: list | None = None,
    datasets: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``run_cfg`` on the Parquet at ``data_uri`` into ``storage_uri/name``; Ray must be initialised.

    The features of ``run_cfg`` are replaced by the ones stored with the data.
    Without ``resume`` an existing run is an error; with it, training continues
    from the run's latest checkpoint (epoch count and optimizer state included).
    ``datasets`` (from :func:`load_datasets`) lets many runs share one read of the data:
    a sweep reads it once in its driver, outside the trials' placement groups.
    """
    from vae.dataset import read_feature_config

    run_dir = check_run(storage_uri, name, resume)
    run_cfg = replace(run_cfg, features=read_feature_config(data_uri)).validate()
    tcfg = run_cfg.train
    if tcfg.fault_epoch > 0 and not 0 <= tcfg.fault_rank < tcfg.num_workers:
        raise ConfigError(f"TrainConfig.fault_rank={tcfg.fault_rank} is not a worker rank (num_workers={tcfg.num_workers})")
    if resume:
        stored = stored_run_config(storage_uri, name)
        if stored is not None:
            _check_same_architecture(stored, run_cfg, run_dir)
        check_resume(run_dir, tcfg.epochs)
    storage.write_json(storage.join(run_dir, RUN_CONFIG_FILE), to_dict(run_cfg))

    datasets = datasets or load_datasets(data_uri)
    n_train = datasets[TRAIN].count()
    if n_train // tcfg.num_workers < tcfg.batch_size:
        raise ConfigError(
            f"TrainConfig.batch_size={tcfg.batch_size} x num_workers={tcfg.num_workers} exceeds the "
            f"{n_train} train clips in {data_uri}: no full batch per worker"
        )
    trainer = build_trainer(run_cfg, datasets, storage_uri, name, n_train, callbacks=callbacks)
    import ray.train

    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise TrainingError(f"run {run_dir} failed; its checkpoints so far are kept, continue with --resume: {exc}") from exc
    if result.error is not None:
        raise TrainingError(f"run {run_dir} failed: {result.error}") from result.error
    if not result.best_checkpoints:
        raise TrainingError(f"run {run_dir} finished without a checkpoint")
    best, best_metrics = min(result.best_checkpoints, key=lambda cm: cm[1][SCORE_METRIC])
    return FitResult(
        run_dir=run_dir,
        best_checkpoint=checkpoint_uri(best, storage_uri),
        best_metrics=dict(best_metrics),
        latest_checkpoint=checkpoint_uri(result.checkpoint, storage_uri) if result.checkpoint else "",
        latest_metrics=dict(result.metrics or {}),
        run_config=run_cfg,
    )
