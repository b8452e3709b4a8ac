"""A training run on Ray Train: checks, datasets, the trainer, the best checkpoint.

``fit`` is the whole run, the training job's and every sweep trial's; ``build_trainer`` wires the
per-worker loop (:mod:`vae.worker`) to a Ray Train trainer with TensorFlow's cluster set-up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from vae import compat, console, storage
from vae.config import ConfigError, FaultConfig, RunConfig, to_dict
from vae.objective import Ranking
from vae.runlock import RunLock
from vae.worker import TRAIN, VAL, TrainingError, loop_config, train_loop_per_worker

COLUMNS = ["id", "digit", "spectrogram", "db_min", "db_max"]
RUN_CONFIG_FILE = "run_config.json"
# How often Ray Train's controller polls its workers (Ray's default: 2 s): each step of a run's start
# and end waits for a poll (docs/benchmarks.md, benchmarks/run_startup.py). A value set in the environment wins.
CONTROLLER_POLL_ENV, CONTROLLER_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"


class NothingToTrain(TrainingError):
    """A resumed run has already trained the epochs asked for."""


def _ray_storage(storage_uri: str) -> tuple[str, Any]:
    loc = storage.resolve(storage_uri)
    return loc.path, (loc.fs if storage.is_s3(loc.uri) else None)


def build_trainer(
    run_cfg: RunConfig,
    datasets: dict[str, Any],
    storage_uri: str,
    name: str,
    num_train_rows: int,
    train_loop: Callable[[dict], None] = train_loop_per_worker,
    callbacks: list | None = None,
    ranking: Ranking = Ranking(),
    fault: FaultConfig | None = None,
):
    """A ``DataParallelTrainer`` with TensorFlow's cluster set-up (:mod:`vae.tf_backend`) for ``run_cfg``,
    writing to ``storage_uri/name`` (datasets: 'train' and 'val'), keeping the checkpoints best by ``ranking``."""
    import ray.train
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from vae.tf_backend import TFConfig

    tcfg = run_cfg.train
    storage_path, fs = _ray_storage(storage_uri)
    # Read by the controller from the environment the trainer hands it when it starts.
    os.environ.setdefault(CONTROLLER_POLL_ENV, CONTROLLER_POLL_S)
    return DataParallelTrainer(
        train_loop,
        backend_config=TFConfig(),
        train_loop_config=loop_config(
            run_cfg, storage.join(storage_uri, name), num_train_rows, ranking=ranking, fault=fault
        ),
        scaling_config=ray.train.ScalingConfig(
            num_workers=tcfg.num_workers,
            use_gpu=tcfg.use_gpu,
            resources_per_worker={"CPU": tcfg.cpus_per_worker, **({"GPU": 1} if tcfg.use_gpu else {})},
            placement_strategy=tcfg.placement_strategy,
        ),
        run_config=ray.train.RunConfig(  # type: ignore[call-arg]  # Train V2's at run time, V1's to mypy
            name=name,
            storage_path=storage_path,
            storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=tcfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=tcfg.checkpoints_to_keep,
                checkpoint_score_attribute=ranking.metric,
                checkpoint_score_order="min",
            ),
            callbacks=callbacks,
            # Ray Train's own lines (its steps, each report, its passing warnings) with --verbose only.
            logging_config=ray.train.LoggingConfig(log_level=console.library_log_level()),
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


def describe(run_cfg: RunConfig) -> str:
    """What a run trains, in one line: model, prior, epochs (and time budget), workers and batch."""
    t = run_cfg.train
    budget = f" or {t.time_budget_s:g} s" if t.time_budget_s > 0 else ""
    return (
        f"model {run_cfg.model.filters} latent {run_cfg.model.latent_dim}, prior {run_cfg.prior.kind}, "
        f"{'up to ' if budget else ''}{t.epochs} epochs{budget}, "
        f"{t.num_workers} worker(s) x batch {t.batch_size}{', GPU' if t.use_gpu else ''}"
    )


def stored_run_config(storage_uri: str, name: str) -> RunConfig | None:
    path = storage.join(storage_uri, name, RUN_CONFIG_FILE)
    if not storage.exists(path):
        return None
    return compat.run_config(storage.read_json(path))


def _check_same_architecture(stored: RunConfig, new: RunConfig, run_dir: str) -> None:
    a, b = to_dict(stored), to_dict(new)
    diffs = [
        f"{section}.{key}: {a[section][key]!r} -> {b[section][key]!r}"
        for section in ("features", "model", "prior", "loss")
        for key in a[section]
        if a[section][key] != b[section][key]
    ]
    if diffs:
        raise ConfigError(
            f"--resume of {run_dir}: the checkpoints were made with a different config ({'; '.join(diffs)})"
        )


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
        print(
            f"--resume: {name} fails verification ({why}); going on from {point.uri} (epoch {point.epoch})", flush=True
        )
    if epochs <= point.epoch:
        raise NothingToTrain(
            f"run {run_dir} has trained {point.epoch} epochs ({point.uri}): nothing left to train with "
            f"{epochs} epochs in all; give more epochs (--epochs) to train on"
        )


def load_datasets(data_uri: str, run_cfg: RunConfig | None = None) -> dict[str, Any]:
    """The train and validation (``test`` split) Ray Datasets of a Parquet dataset, materialised once,
    with its pitch tracks when it has them (a model with ``pitch`` needs them), without ``run_cfg``'s
    held-out speaker."""
    from vae.dataset import check_columns, column_names, materialize_split

    pitch = run_cfg is not None and run_cfg.model.pitch
    columns = COLUMNS + (["f0"] if pitch or "f0" in column_names(data_uri) else [])
    check_columns(data_uri, columns)
    held_out = run_cfg.train.held_out_speaker if run_cfg else ""
    return {
        split: materialize_split(data_uri, name, columns, held_out) for split, name in ((TRAIN, "train"), (VAL, "test"))
    }


def augmented(datasets: dict[str, Any], run_cfg: RunConfig) -> dict[str, Any]:
    """``datasets`` with the run's speaker augmentation (vae/augment.py) added to the train split: a Ray Data
    stage of each run's own, so a sweep's trials share one read of the real clips."""
    from vae.augment import augment_dataset

    if run_cfg.train.augment_copies == 0:
        return datasets
    return {**datasets, TRAIN: augment_dataset(datasets[TRAIN], run_cfg.train, run_cfg.features)}


def prepare_run(
    run_cfg: RunConfig, data_uri: str, storage_uri: str, name: str, resume: bool, fault: FaultConfig
) -> RunConfig:
    """Every check a run can make before Ray Train starts, then its config written to the run folder
    (which :func:`check_run` has checked): its config with the features stored with the data."""
    from vae.dataset import read_feature_config

    run_dir = storage.join(storage_uri, name)
    if not resume and storage.exists(storage.join(run_dir, RUN_CONFIG_FILE)):
        raise TrainingError(f"run {run_dir} was started meanwhile: pass --resume to continue it")
    run_cfg = replace(run_cfg, features=read_feature_config(data_uri)).validate()
    tcfg = run_cfg.train
    if fault.armed and fault.rank >= tcfg.num_workers:
        raise ConfigError(f"FaultConfig.rank={fault.rank} is not a worker rank (num_workers={tcfg.num_workers})")
    if resume:
        stored = stored_run_config(storage_uri, name)
        if stored is not None:
            _check_same_architecture(stored, run_cfg, run_dir)
        check_resume(run_dir, tcfg.epochs)
    storage.write_json(storage.join(run_dir, RUN_CONFIG_FILE), to_dict(run_cfg))
    return run_cfg


def _train_rows(datasets: dict[str, Any], run_cfg: RunConfig, data_uri: str) -> int:
    """The train clips, after checking every worker gets a full batch of them."""
    tcfg, n_train = run_cfg.train, datasets[TRAIN].count()
    if n_train // tcfg.num_workers < tcfg.batch_size:
        raise ConfigError(
            f"TrainConfig.batch_size={tcfg.batch_size} x num_workers={tcfg.num_workers} exceeds the "
            f"{n_train} train clips in {data_uri}: no full batch per worker"
        )
    return n_train


def _remove_damaged(run_dir: str) -> None:
    """After a resumed run: the damaged checkpoints it went back past can never be used."""
    from vae.checkpoint import remove_damaged

    removed = remove_damaged(run_dir)
    if removed:
        print(f"removed damaged checkpoint folders of {run_dir}: {', '.join(removed)}", flush=True)


def _run_trainer(trainer, run_dir: str):
    """``trainer.fit()``, its failures as a :class:`TrainingError` naming the run."""
    import ray.train

    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise TrainingError(
            f"run {run_dir} failed; its checkpoints so far are kept, continue with --resume: {exc}"
        ) from exc
    if result.error is not None:
        raise TrainingError(f"run {run_dir} failed: {result.error}") from result.error
    if not result.best_checkpoints:
        raise TrainingError(f"run {run_dir} finished without a checkpoint")
    return result


def fit(
    run_cfg: RunConfig,
    data_uri: str,
    storage_uri: str,
    name: str,
    resume: bool = False,
    callbacks: list | None = None,
    datasets: dict[str, Any] | None = None,
    ranking: Ranking = Ranking(),
    fault: FaultConfig | None = None,
) -> FitResult:
    """Train ``run_cfg`` on the Parquet at ``data_uri`` into ``storage_uri/name``; Ray must be initialised.

    The features of ``run_cfg`` are replaced by the ones stored with the data.
    Without ``resume`` an existing run is an error; with it, training continues
    from the run's latest checkpoint (epoch count and optimizer state included). The run's lease
    (:mod:`vae.runlock`) refuses a second writer while this one trains.
    ``datasets`` (from :func:`load_datasets`) lets many runs share one read of the data:
    a sweep reads it once in its driver, outside the trials' placement groups. ``ranking``: what
    the checkpoints kept are the best by. ``fault``: the test-only fault switch (off by default).
    """
    fault = (fault or FaultConfig()).validate()
    run_dir = check_run(storage_uri, name, resume)
    with RunLock(run_dir, what="training run"):
        run_cfg = prepare_run(run_cfg, data_uri, storage_uri, name, resume, fault)
        datasets = augmented(datasets or load_datasets(data_uri, run_cfg), run_cfg)
        n_train = _train_rows(datasets, run_cfg, data_uri)
        trainer = build_trainer(
            run_cfg, datasets, storage_uri, name, n_train, callbacks=callbacks, ranking=ranking, fault=fault
        )
        result = _run_trainer(trainer, run_dir)
        if resume:
            _remove_damaged(run_dir)
    best, best_metrics = min(result.best_checkpoints, key=lambda cm: cm[1][ranking.metric])
    return FitResult(
        run_dir=run_dir,
        best_checkpoint=storage.ray_uri(best.path, best.filesystem),
        best_metrics=dict(best_metrics),
        latest_checkpoint=storage.ray_uri(result.checkpoint.path, result.checkpoint.filesystem)
        if result.checkpoint
        else "",
        latest_metrics=dict(result.metrics or {}),
        run_config=run_cfg,
    )
