"""A checkpoint is whole or it is not a checkpoint: manifests, damaged files, the jobs that load
them, and --resume past a damaged latest checkpoint on a real local Ray."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from jobs import evaluate as evaluate_job
from jobs import generate as generate_job
from jobs import reconstruct as reconstruct_job
from vae import checkpoint
from vae.config import FeatureConfig, ModelConfig, PriorConfig, RunConfig, TrainConfig, preset
from vae.generation import fit_expost
from vae.models import build_vae
from vae.training import TrainingError, fit
from vae.worker import make_optimizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> str:
    """An untrained ``tiny`` checkpoint written by checkpoint.save (no Ray, no data)."""
    features = preset(FeatureConfig, "default")
    run_cfg = RunConfig(
        features=features, model=preset(ModelConfig, "tiny"), prior=PriorConfig(), train=TrainConfig(epochs=1)
    ).validate()
    vae = build_vae(features.shape, run_cfg.model, run_cfg.prior)
    optimizer = make_optimizer(run_cfg.train, vae.trainable_variables)
    rng = np.random.default_rng(0)
    expost = fit_expost(rng.normal(size=(200, run_cfg.model.latent_dim)), np.arange(200) % 10, run_cfg.sampling)
    directory = str(tmp_path_factory.mktemp("saved") / "checkpoint_0001")
    checkpoint.save(directory, vae, optimizer, 1, run_cfg, {"epoch": 1}, {"prior": "normal", "digits": {}}, expost)
    return directory


def _damage(path: str, how: str) -> None:
    data = open(path, "rb").read()
    middle = len(data) // 2
    damaged = {
        "truncated": lambda: data[:middle],
        "random": lambda: np.random.default_rng(0).bytes(len(data)),
        "one byte": lambda: data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :],
        "invalid json": lambda: b"{not json",
        "empty": lambda: b"",
    }[how]()
    with open(path, "wb") as f:
        f.write(damaged)


def test_save_writes_a_manifest_last_that_load_verifies(saved):
    manifest = json.loads(open(os.path.join(saved, checkpoint.MANIFEST)).read())
    names = set(manifest["files"])
    assert names == {
        checkpoint.WEIGHTS,
        checkpoint.OPTIMIZER,
        checkpoint.STATE,
        checkpoint.CONFIG,
        checkpoint.METRICS,
        checkpoint.LATENT_STATS,
        checkpoint.EXPOST,
    }
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == os.path.getsize(os.path.join(saved, name)) and len(entry["sha256"]) == 64
    loaded = checkpoint.load(saved)
    assert loaded.epoch == 1 and set(loaded.expost["digits"]) == {str(d) for d in range(10)}


DAMAGE = [
    (checkpoint.WEIGHTS, "truncated"),
    (checkpoint.WEIGHTS, "random"),
    (checkpoint.WEIGHTS, "one byte"),
    (checkpoint.CONFIG, "invalid json"),
    (checkpoint.STATE, "empty"),
    (checkpoint.EXPOST, "one byte"),
    (checkpoint.MANIFEST, "invalid json"),
]


@pytest.mark.parametrize("name,how", DAMAGE, ids=[f"{n}-{h}" for n, h in DAMAGE])
@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
def test_a_damaged_checkpoint_is_one_clear_error_in_every_job(saved, tmp_path, capsys, name, how, manifest):
    if name == checkpoint.MANIFEST and not manifest:
        pytest.skip("nothing to damage")
    if how == "one byte" and not manifest:
        pytest.skip("without a manifest a flipped byte in the data cannot be seen: that is what the manifest is for")
    ckpt = str(tmp_path / "checkpoint_0001")
    shutil.copytree(saved, ckpt)
    if not manifest:
        os.remove(os.path.join(ckpt, checkpoint.MANIFEST))
    _damage(os.path.join(ckpt, name), how)
    with pytest.raises(checkpoint.CheckpointError, match=name.replace(".", r"\.")):
        checkpoint.load(ckpt)

    wavs = tmp_path / "wavs"
    wavs.mkdir()
    (wavs / "x.wav").write_bytes(b"RIFF")
    for main, args in (
        (generate_job.main, ["--checkpoint", ckpt, "--out", str(tmp_path / "gen"), "--n", "1"]),
        (reconstruct_job.main, ["--checkpoint", ckpt, "--input", str(wavs), "--out", str(tmp_path / "rec")]),
        (evaluate_job.main, ["--checkpoint", ckpt, "--data", str(tmp_path), "--out", str(tmp_path / "ev")]),
    ):
        assert main(args) == 1
        out, err = capsys.readouterr()
        error = json.loads(out.strip().splitlines()[-1])["error"]
        assert ckpt in error and name in error, error
        assert "Traceback" not in err


def test_weights_and_config_alone_are_not_a_checkpoint(saved, tmp_path):
    ckpt = tmp_path / "half"
    ckpt.mkdir()
    for name in (checkpoint.WEIGHTS, checkpoint.CONFIG):
        shutil.copy(os.path.join(saved, name), ckpt / name)
    with pytest.raises(checkpoint.CheckpointError, match="state.json"):
        checkpoint.load(str(ckpt))


def test_a_checkpoint_without_a_manifest_loads(saved, tmp_path):
    old = str(tmp_path / "old")
    shutil.copytree(saved, old)
    os.remove(os.path.join(old, checkpoint.MANIFEST))
    loaded = checkpoint.load(old)
    assert loaded.epoch == 1 and loaded.run_config.model == preset(ModelConfig, "tiny")


def test_rewriting_metrics_keeps_the_manifest_true(saved, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    shutil.copytree(saved, ckpt)
    checkpoint.write_json(ckpt, checkpoint.METRICS, {"epoch": 1, "digit_accuracy": 0.5})
    assert checkpoint.load(ckpt).metrics["digit_accuracy"] == 0.5


def _tiny(epochs: int) -> RunConfig:
    return RunConfig(
        model=preset(ModelConfig, "tiny"),
        prior=PriorConfig(),
        train=TrainConfig(epochs=epochs, batch_size=16, max_failures=0),
    )


@pytest.mark.slow
def test_resume_goes_on_from_the_newest_intact_checkpoint(ray_local, small_parquet, tmp_path, capsys):
    runs = str(tmp_path / "runs")
    fit(_tiny(2), small_parquet, runs, "r")
    run_dir = os.path.join(runs, "r")
    kept = checkpoint.run_checkpoints(run_dir)
    assert [os.path.basename(uri) for uri, _ in kept] == ["checkpoint_0001", "checkpoint_0002"]
    assert [m["epoch"] for _, m in kept] == [1, 2] and len(kept[-1][1]["history"]) == 2
    _damage(os.path.join(run_dir, "checkpoint_0002", checkpoint.WEIGHTS), "truncated")
    capsys.readouterr()

    result = fit(_tiny(3), small_parquet, runs, "r", resume=True)
    said = capsys.readouterr().out
    assert "checkpoint_0002" in said and checkpoint.WEIGHTS in said and "checkpoint_0001" in said, said
    assert result.latest_metrics["epoch"] == 3 and result.latest_metrics["resumed_from_epoch"] == 1
    assert checkpoint.load(result.latest_checkpoint).epoch == 3
    # The damaged folder it went back past is gone once the resumed run has finished (removed by the run,
    # unless Ray's own keep-the-best-two removed it first).
    assert not os.path.exists(os.path.join(run_dir, "checkpoint_0002"))
    folders = [
        n for n in os.listdir(run_dir) if n.startswith("checkpoint_") and os.path.isdir(os.path.join(run_dir, n))
    ]
    assert folders and all(checkpoint.problem(os.path.join(run_dir, n)) is None for n in folders), folders

    # Nothing left to train is said, and changes nothing.
    config_before = open(os.path.join(run_dir, "run_config.json")).read()
    with pytest.raises(TrainingError, match="nothing left to train"):
        fit(_tiny(3), small_parquet, runs, "r", resume=True)
    with pytest.raises(TrainingError, match="nothing left to train"):
        fit(_tiny(2), small_parquet, runs, "r", resume=True)
    assert open(os.path.join(run_dir, "run_config.json")).read() == config_before
    # What jobs.pipeline --resume evaluates then: the intact checkpoint with the best validation score.
    best = checkpoint.best_intact(run_dir, "val_recon_mse")
    assert checkpoint.load(best).metrics["val_recon_mse"] == min(
        checkpoint.load(os.path.join(run_dir, n)).metrics["val_recon_mse"]
        for n in os.listdir(run_dir)
        if n.startswith("checkpoint_") and checkpoint.problem(os.path.join(run_dir, n)) is None
    )

    # No intact checkpoint at all: stop, and say what to do.
    for name in os.listdir(run_dir):
        if name.startswith("checkpoint_") and os.path.isdir(os.path.join(run_dir, name)):
            _damage(os.path.join(run_dir, name, checkpoint.WEIGHTS), "random")
    with pytest.raises(TrainingError, match="no intact checkpoint") as info:
        fit(_tiny(4), small_parquet, runs, "r", resume=True)
    assert "--name" in str(info.value) and "--resume" not in str(info.value).split("no intact checkpoint")[1]


@pytest.mark.parametrize("fail_at", [1, 2, 3], ids=["manifest-pending", "file", "manifest-final"])
def test_a_metrics_rewrite_stopped_at_any_write_leaves_a_whole_checkpoint(saved, tmp_path, monkeypatch, fail_at):
    """jobs.train --evaluate, the pipeline and the demo rewrite the best checkpoint's metrics.json:
    each of its writes can fail (storage down, disk full), and the checkpoint must still load, with
    the old metrics or the new."""
    from vae import storage

    ckpt = str(tmp_path / "ckpt")
    shutil.copytree(saved, ckpt)
    old = checkpoint.load(ckpt).metrics
    real, calls = storage.write_bytes, []

    def failing(uri, data):
        calls.append(uri)
        if len(calls) == fail_at:
            raise storage.StorageError(f"cannot write {uri}: simulated outage")
        real(uri, data)

    monkeypatch.setattr(storage, "write_bytes", failing)
    with pytest.raises(storage.StorageError, match="simulated outage"):
        checkpoint.write_json(ckpt, checkpoint.METRICS, {**old, "digit_accuracy": 0.5})
    monkeypatch.setattr(storage, "write_bytes", real)
    assert checkpoint.problem(ckpt) is None
    assert checkpoint.load(ckpt).metrics.get("digit_accuracy") in (old.get("digit_accuracy"), 0.5)
    checkpoint.write_json(ckpt, checkpoint.METRICS, {**old, "digit_accuracy": 0.25})  # and the next rewrite works
    assert checkpoint.load(ckpt).metrics["digit_accuracy"] == 0.25
    assert "pending" not in json.dumps(storage.read_json(os.path.join(ckpt, checkpoint.MANIFEST)))


def test_remove_damaged_deletes_only_the_checkpoints_that_fail_verification(saved, tmp_path):
    run_dir = tmp_path / "run"
    for name in ("checkpoint_0001", "checkpoint_0002", "checkpoint_0003"):
        shutil.copytree(saved, run_dir / name)
    _damage(str(run_dir / "checkpoint_0002" / checkpoint.WEIGHTS), "truncated")
    os.remove(run_dir / "checkpoint_0003" / checkpoint.CONFIG)  # a copy a killed writer never finished
    assert checkpoint.remove_damaged(str(run_dir)) == ["checkpoint_0003", "checkpoint_0002"]
    assert sorted(os.listdir(run_dir)) == ["checkpoint_0001"]


def test_a_run_given_for_a_checkpoint_is_advised_by_what_it_was_ranked_by(tmp_path):
    for name, metrics in (
        ("checkpoint_0001", {"val_recon_mse": 0.01, "objective": 0.5}),
        ("checkpoint_0002", {"val_recon_mse": 0.02, "objective": 0.3}),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / checkpoint.METRICS).write_text(json.dumps(metrics))
    advice = checkpoint._run_advice(str(tmp_path), ["checkpoint_0001", "checkpoint_0002"])
    assert f"its best by objective, --checkpoint {tmp_path}/checkpoint_0002" in advice
    assert "checkpoint_0001 (objective 0.5), checkpoint_0002 (objective 0.3)" in advice
