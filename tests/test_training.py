"""Multi-worker training on a real local Ray with the tiny model and the real small Parquet dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vae import checkpoint, storage
from vae.config import FaultConfig, ModelConfig, PriorConfig, RunConfig, TrainConfig, preset
from vae.training import RUN_CONFIG_FILE, TrainingError, fit
from vae.worker import batches, epoch_order, gradient_norm_metrics, make_optimizer, no_longer_improving, pack, unpack

REPO = Path(__file__).resolve().parents[1]
SMALL_TRAIN_CLIPS = 150  # conftest.small_parquet


def tiny_run_config(model: dict | None = None, **train) -> RunConfig:
    return RunConfig(
        model=preset(ModelConfig, "tiny", **(model or {})),
        prior=PriorConfig(kind=train.pop("prior", "normal"), components=3),
        train=TrainConfig(**{"epochs": 2, "batch_size": 16, "num_workers": 2, "max_failures": 0, **train}),
    )


@pytest.fixture(scope="module")
def faulted_run(ray_local, small_parquet, tmp_path_factory):
    """2 workers x 2 epochs; worker rank 1 kills itself at the start of epoch 2. With a patience the run does
    not reach, every worker joins rank 0's vote on stopping at each checkpoint epoch, or the run would hang."""
    storage_dir = str(tmp_path_factory.mktemp("runs"))
    cfg = tiny_run_config(learning_rate=3e-3, batch_size=8, max_failures=1, patience=5)
    return fit(cfg, small_parquet, storage_dir, "faulted", fault=FaultConfig(epoch=2, rank=1))


def test_two_workers_two_epochs_lower_the_validation_loss(faulted_run):
    m = faulted_run.latest_metrics
    assert m["epoch"] == 2
    assert m["val_clips"] == 100 and m["train_clips"] == 2 * (75 // 8) * 8
    assert np.isfinite(m["val_loss"]) and m["val_loss"] < m["initial_val_loss"]
    assert 0 < m["val_recon_mse"] < 1 and m["val_kl"] >= 0
    assert m["stopped_by_patience"] is False


def test_a_worker_killed_mid_run_is_replaced_and_training_resumes_from_the_checkpoint(faulted_run):
    run_dir = faulted_run.run_dir
    assert storage.exists(storage.join(run_dir, "fault_fired_epoch2_rank1"))
    assert faulted_run.latest_metrics["resumed_from_epoch"] == 1  # not from scratch
    assert storage.exists(storage.join(run_dir, "checkpoint_0002", "model.weights.h5"))
    loaded = checkpoint.load(faulted_run.best_checkpoint)
    assert loaded.epoch == faulted_run.best_metrics["epoch"]
    stats = loaded.latent_stats
    assert sum(d["count"] for d in stats["digits"].values()) == SMALL_TRAIN_CLIPS  # all shards, every clip once
    assert sorted(stats["digits"]) == [str(d) for d in range(10)]


def test_the_fault_switch_is_in_no_saved_config(faulted_run):
    saved = {
        RUN_CONFIG_FILE: storage.read_json(storage.join(faulted_run.run_dir, RUN_CONFIG_FILE)),
        checkpoint.CONFIG: json.loads(storage.read_text(storage.join(faulted_run.best_checkpoint, checkpoint.CONFIG))),
    }
    for name, cfg in saved.items():
        assert not [key for key in cfg["train"] if "fault" in key], name


def test_an_existing_run_name_needs_resume(faulted_run, small_parquet):
    storage_dir, name = faulted_run.run_dir.rsplit("/", 1)
    with pytest.raises(TrainingError, match="--resume"):
        fit(tiny_run_config(), small_parquet, storage_dir, name)


def _one_step(small_parquet, storage_dir, num_workers, batch_size, model: dict):
    # One epoch of exactly one step: the whole train split is one global batch. The gradient's norm
    # is in the thousands, so the step is clipped: by the norm of the gradient summed over workers.
    # Both sides normalise through Keras' all-reduced moments: the fused kernel one worker would
    # otherwise use sums less exactly (tested against Keras' layer in tests/test_models.py).
    cfg = tiny_run_config(
        model,
        prior="mixture",
        epochs=1,
        num_workers=num_workers,
        batch_size=batch_size,
        seed=7,
        clip_norm=1.0,
        fused_batch_norm=False,
    )
    result = fit(cfg, small_parquet, storage_dir, f"{num_workers}x{batch_size}{'-'.join(model)}")
    assert result.latest_metrics["steps"] == 1
    loaded = checkpoint.load(result.latest_checkpoint)
    optimizer = make_optimizer(loaded.run_config.train, loaded.model.trainable_variables)
    checkpoint.restore_training_state(result.latest_checkpoint, loaded.model, optimizer)
    return result, loaded, optimizer


# The second: the digit eraser's running means of the digits' codes are of the global batch on every worker.
@pytest.mark.parametrize("model", [{}, {"conditional": True, "erase_digit": True, "latent_dim": 12}])
def test_one_worker_with_batch_2b_and_two_workers_with_batch_b_take_the_same_first_step(
    ray_local, small_parquet, tmp_path, model
):
    two_b = SMALL_TRAIN_CLIPS
    r1, m1, o1 = _one_step(small_parquet, str(tmp_path), 1, two_b, model)
    r2, m2, o2 = _one_step(small_parquet, str(tmp_path), 2, two_b // 2, model)

    assert int(o1.iterations.numpy()) == int(o2.iterations.numpy()) == 1
    np.testing.assert_allclose(r1.latest_metrics["train_loss"], r2.latest_metrics["train_loss"], rtol=1e-5)
    assert r1.latest_metrics["clipped_steps"] == r2.latest_metrics["clipped_steps"] == 1.0
    assert r1.latest_metrics["grad_norm_max"] > 100
    np.testing.assert_allclose(r1.latest_metrics["grad_norm_max"], r2.latest_metrics["grad_norm_max"], rtol=1e-4)
    # Adam's first step is about lr * sign(g): a gradient that is float noise (~1e-9) may flip sign
    # between summation orders, so weights agree to lr / 10 (no all-reduce: ~lr apart almost everywhere).
    lr = m1.run_config.train.learning_rate
    for a, b in zip(m1.model.weights, m2.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=lr / 10, err_msg=a.path)
    if model:  # the checkpoint's means make every digit's train codes average zero, as inference encodes them
        from vae.dataset import load_split_numpy

        train = load_split_numpy(small_parquet, "train", ["spectrogram", "digit"])
        mu = m2.model.encode(train["spectrogram"], train["digit"])[0].numpy()
        assert np.abs(mu).max() > 0.1
        np.testing.assert_allclose([mu[train["digit"] == d].mean(0) for d in range(10)], 0.0, atol=1e-4)
    # Adam's moments hold the gradient itself (m = 0.1 g, v = 0.001 g^2): equal moments, equal all-reduced
    # gradients, scale included. Synchronised BatchNorm computes var = E[x^2] - E[x]^2 in float32, which
    # turns summation-order noise into ~0.1% differences in a few elements (1-4% of them, varying with
    # thread scheduling); a worker stepping on its own half of the batch would be off by the size of
    # the gradient itself almost everywhere.
    close = []
    for v1, v2 in zip(o1.variables, o2.variables):
        a, b = np.asarray(v1.numpy()), np.asarray(v2.numpy())
        scale = np.abs(b).max()
        np.testing.assert_allclose(a, b, rtol=0.05, atol=2e-3 * scale, err_msg=v1.path)
        close.append(np.isclose(a, b, rtol=1e-3, atol=1e-5 * scale).ravel())
    assert np.concatenate(close).mean() > 0.9
    assert any(np.abs(np.asarray(v.numpy())).max() > 0 for v in o1.variables if "velocity" in v.path)


def _train_cli(args, ray_address):
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.train", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    lines = proc.stdout.strip().splitlines()
    return proc, json.loads(lines[-1]) if lines else {}


def test_cli_resume_continues_at_the_right_epoch_with_optimizer_state_on_s3(
    ray_local, small_parquet, make_bucket, tmp_path
):
    runs = make_bucket("train-runs") + "/runs"
    common = ["--data", small_parquet, "--out", runs, "--name", "resumable"]
    first = [
        "--model",
        "tiny",
        "--prior",
        "mixture",
        "--components",
        "3",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--num-workers",
        "1",
    ]

    proc, out = _train_cli(common + first, ray_local)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out["latest_metrics"]["epoch"] == 1 and out["best_checkpoint"].startswith("s3://train-runs/runs/resumable/")

    proc, out = _train_cli(common + first, ray_local)
    assert proc.returncode == 1 and "--resume" in out["error"]

    proc, out = _train_cli(common + ["--resume", "--epochs", "2"], ray_local)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out["latest_metrics"]["epoch"] == 2 and out["latest_metrics"]["resumed_from_epoch"] == 1
    latest = out["latest_checkpoint"]
    assert latest == "s3://train-runs/runs/resumable/checkpoint_0002"

    local = str(tmp_path / "ckpt")
    storage.copy_tree(latest, local)
    loaded = checkpoint.load(latest)
    assert loaded.run_config.prior.kind == "mixture" and loaded.run_config.train.epochs == 2
    assert "occupancy" in loaded.latent_stats["digits"]["0"]
    optimizer = make_optimizer(loaded.run_config.train, loaded.model.trainable_variables)
    assert checkpoint.restore_training_state(local, loaded.model, optimizer) == 2
    assert int(optimizer.iterations.numpy()) == 2 * (SMALL_TRAIN_CLIPS // 16)  # the count went on, not restarted
    # Every epoch's metrics travel with the checkpoint, across the resume.
    assert [r["epoch"] for r in loaded.metrics["history"]] == [1, 2]
    assert loaded.metrics["history"][-1]["val_recon_mse"] == loaded.metrics["val_recon_mse"]


# --------------------------------------------------------------------------- the worker loop's pure parts


def test_pack_and_unpack_round_trip_nested_named_arrays():
    tree = {
        "train": np.array([1.0, 2.0, 3.0, 4.0]),
        "val": {"sums": np.arange(4.0), "count": np.array([7])},
        "latent": {"mu": np.arange(6.0).reshape(2, 3), "count": np.zeros(2)},
    }
    vector = pack(tree)
    assert vector.shape == (4 + 4 + 1 + 6 + 2,) and vector.dtype == np.float64
    back = unpack(vector * 2, tree)
    assert back.keys() == tree.keys() and back["val"].keys() == tree["val"].keys()
    assert back["latent"]["mu"].shape == (2, 3)
    np.testing.assert_array_equal(back["latent"]["mu"], tree["latent"]["mu"] * 2)
    np.testing.assert_array_equal(back["val"]["count"], [14])
    with pytest.raises(ValueError, match="packed vector has 18 values, the layout 17"):
        unpack(np.zeros(18), tree)


def test_weight_decay_shrinks_kernels_and_leaves_biases_norm_scales_and_prior_alone():
    import keras

    dense, norm = keras.layers.Dense(3), keras.layers.BatchNormalization()
    dense.build((None, 2))
    norm.build((None, 3))
    means = keras.Variable(np.ones((4, 2), np.float32), name="means")  # a mixture prior's parameter
    variables = [*dense.trainable_weights, *norm.trainable_weights, means]
    for v in variables:
        v.assign(np.ones(v.shape, np.float32))
    zero = [np.zeros(v.shape, np.float32) for v in variables]

    optimizer = make_optimizer(TrainConfig(learning_rate=0.1, weight_decay=0.5).validate(), variables)
    optimizer.apply(zero, variables)
    after = {v.name: float(np.asarray(v).mean()) for v in variables}
    assert after == {"kernel": pytest.approx(1 - 0.1 * 0.5), "bias": 1.0, "gamma": 1.0, "beta": 1.0, "means": 1.0}

    make_optimizer(TrainConfig(learning_rate=0.1).validate(), variables).apply(zero, variables)
    assert float(np.asarray(dense.kernel).mean()) == pytest.approx(0.95)


def test_each_epoch_takes_full_batches_of_a_seeded_permutation_of_the_shard():
    first, again = epoch_order(10, 3, 3, seed=0, epoch=1), epoch_order(10, 3, 3, seed=0, epoch=1)
    np.testing.assert_array_equal(first, again)
    assert len(first) == 9 and len(set(first.tolist())) == 9 and set(first.tolist()) <= set(range(10))
    assert not np.array_equal(first, epoch_order(10, 3, 3, seed=0, epoch=2))
    assert not np.array_equal(first, epoch_order(10, 3, 3, seed=0, epoch=1, rank=1))
    with pytest.raises(TrainingError, match="worker 1's shard holds 5 clips, fewer than the 2 batches of 3"):
        epoch_order(5, 2, 3, seed=0, epoch=1, rank=1)
    data = {"id": np.arange(7), "x": np.arange(7) * 10}
    assert [len(b["id"]) for b in batches(data, 3)] == [3, 3, 1]
    assert [b["x"].tolist() for b in batches(data, 2, np.array([6, 0]))] == [[60, 0]]


def test_an_epochs_gradient_norms_are_summarised_and_the_non_finite_ones_counted():
    norms = np.array([1.0, 5.0, np.inf, 2.0, np.nan])  # inf: a loss-scale overflow, skipped by the optimizer
    summary = {"nonfinite_steps": 2, "grad_norm_median": 2.0, "grad_norm_max": 5.0, "clipped_steps": 2 / 3}
    assert gradient_norm_metrics(norms, clip_norm=1.5) == summary
    assert gradient_norm_metrics(norms, clip_norm=0.0)["clipped_steps"] == 0.0
    assert gradient_norm_metrics(np.full(3, np.nan), clip_norm=1.0) == {"nonfinite_steps": 3}


def test_a_run_ranked_by_samples_keeps_its_checkpoints_by_what_the_recogniser_hears(
    ray_local, small_parquet, recogniser_dir, tmp_path
):
    from dataclasses import replace

    from vae.config import SamplingConfig
    from vae.objective import OBJECTIVE, Ranking
    from vae.pipeline import run_ranking
    from vae.tuning import data_variance

    assert run_ranking(tiny_run_config(), small_parquet, None) == Ranking()  # by val_recon_mse: no recogniser needed
    cfg = tiny_run_config(num_workers=1, epochs=3, rank_by="samples", rank_samples_per_digit=2, checkpoints_to_keep=1)
    cfg = replace(cfg, sampling=SamplingConfig(sampler="prior"))
    result = fit(cfg, small_parquet, str(tmp_path), "ranked", ranking=run_ranking(cfg, small_parquet, recogniser_dir))

    best = result.best_metrics
    assert 0 <= best["digit_accuracy"] <= 1 and best["digit_accuracy"] * 20 == round(best["digit_accuracy"] * 20)
    variance = data_variance(small_parquet)
    assert best[OBJECTIVE] == pytest.approx(best["val_recon_mse"] / variance + 1 - best["digit_accuracy"], rel=1e-6)
    assert best[OBJECTIVE] <= result.latest_metrics[OBJECTIVE]
    loaded = checkpoint.load(result.best_checkpoint)
    assert loaded.run_config.train.rank_by == "samples" and loaded.metrics[OBJECTIVE] == best[OBJECTIVE]


@pytest.mark.parametrize("rank", [0, 1])
def test_patience_stops_every_worker_once_rank_0_has_seen_no_better_checkpoint_for_that_many(rank):
    """Rank 0 reads what the run ranks by at checkpoints (a scorer's terms are its alone) and every worker
    follows its vote, summed in the collective: here a world whose rank 0 counts the same checkpoints."""
    from dataclasses import replace

    from vae.config import RunConfig
    from vae.worker import Worker

    class Steps:  # the collective of a world of rank 0 and this worker: rank 0's vote added to this one's
        def __init__(self, other):
            self.other = other

        def all_reduce(self, tensor):
            return tensor if self.other is None else tensor + self.other.vote

    def worker(r: int, patience: int):
        cfg = RunConfig()
        cfg = replace(cfg, train=replace(cfg.train, patience=patience))
        return Worker(cfg, "", r, 2, None, {}, {}, 1, 1)

    chief = worker(0, 2)
    chief.steps, chief.vote = Steps(None), 0.0
    this = worker(rank, 2) if rank else chief
    this.steps = Steps(chief)
    readings = [(1.0, True), (0.9, True), (0.5, False), (0.95, True), (0.91, True), (0.8, True)]
    stopped = []
    for value, checkpointed in readings:
        if rank:
            chief_stops = no_longer_improving(chief, {"val_recon_mse": value}, checkpointed)
            chief.vote = float(chief_stops)
        stopped.append(no_longer_improving(this, {"val_recon_mse": value}, checkpointed))
    # 0.5 came at an epoch without a checkpoint: not read. 0.95 and 0.91 do not better 0.9: the second stops;
    # 0.8 betters it, and the count starts again.
    assert stopped == [False, False, False, False, True, False] and chief.best_ranked == 0.8
    off = worker(0, 0)
    assert not any(no_longer_improving(off, {"val_recon_mse": 1.0}, True) for _ in range(5))
