"""TensorBoard event files and MLflow (a local file store) from the tracker, alone and from a real Ray Train run."""

from __future__ import annotations

import glob
import os
import warnings

import numpy as np
import pytest

from vae import storage, tracking
from vae.config import RunConfig, TrainConfig


def read_events(folder: str) -> list[tuple[int, str, str, np.ndarray]]:
    """(step, tag, TensorBoard plugin, value) of every summary in the event files under ``folder``."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    out = []
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                out.append(
                    (event.step, value.tag, value.metadata.plugin_data.plugin_name, tf.make_ndarray(value.tensor))
                )
    return out


def scalars(events, tag: str) -> dict[int, float]:
    return {step: float(value) for step, t, plugin, value in events if t == tag and plugin == "scalars"}


def mlflow_run(run_dir: str):
    from mlflow.tracking import MlflowClient

    record = storage.read_json(storage.join(run_dir, tracking.MLFLOW_RUN_FILE))
    client = MlflowClient(record["tracking_uri"])
    return client, client.get_run(record["run_id"])


def history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


@pytest.fixture
def no_mlflow(monkeypatch):
    for key in tracking.PASSED_VARS:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    """``MLFLOW_TRACKING_URI`` at a local file store (MLflow 3 asks for the opt-in to use one)."""
    uri = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tracking-test")
    for key, value in tracking.QUICK_FAILURE.items():
        monkeypatch.setenv(key, value)  # restored after the test, whatever the tracker sets
    return uri


@pytest.fixture(scope="module")
def tiny_checkpoint(fsdd_dir, tmp_path_factory):
    from tiny_checkpoint import make_checkpoint

    from vae import checkpoint

    directory = make_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoint", fsdd_dir)
    return directory, checkpoint.load(directory)


def test_tensorboard_events_hold_the_config_the_epochs_and_sample_images_and_audio(
    tiny_checkpoint, tmp_path, no_mlflow
):
    directory, loaded = tiny_checkpoint
    run_dir = str(tmp_path / "run")
    with tracking.open_tracker(run_dir) as tracker:
        tracker.log_params(loaded.run_config)
        for epoch in (1, 2):
            tracker.log_epoch(
                epoch,
                {
                    "epoch": epoch,
                    "train_loss": 3.0 / epoch,
                    "val_recon_mse": 0.1 * epoch,
                    "kl_weight": 1.0,
                    "train_clips_per_s": 50.0,
                    "digit_accuracy": 0.5,
                    "stopped_by_time_budget": False,
                    "history": [],
                },
            )
        tracker.log_checkpoint_samples(2, loaded.model, directory, 3)

    events = read_events(os.path.join(run_dir, tracking.TENSORBOARD_DIR))
    assert scalars(events, "train/loss") == {1: 3.0, 2: 1.5}
    assert scalars(events, "val/recon_mse") == pytest.approx({1: 0.1, 2: 0.2})
    assert scalars(events, "digit_accuracy") == {1: 0.5, 2: 0.5} and scalars(events, "train/clips_per_s")[2] == 50.0
    assert not scalars(events, "stopped_by_time_budget") and not scalars(events, "epoch")
    (config,) = [value for _, tag, plugin, value in events if tag == "run_config" and plugin == "text"]
    assert b"| model.filters | (4, 8) |" in config.item()

    images = {tag: value for step, tag, plugin, value in events if plugin == "images" and step == 2}
    assert sorted(images) == [f"samples/digit_{d}/spectrogram" for d in range(3)]
    width, height, png = images["samples/digit_0/spectrogram"]
    assert (int(width), int(height)) == (96, 128) and png.startswith(b"\x89PNG")
    audio = {tag: value for step, tag, plugin, value in events if plugin == "audio" and step == 2}
    assert sorted(audio) == [f"samples/digit_{d}/audio" for d in range(3)]
    wav = audio["samples/digit_1/audio"][0, 0]
    assert wav.startswith(b"RIFF") and len(wav) > 2 * loaded.run_config.features.n_samples
    assert not os.path.exists(os.path.join(run_dir, tracking.MLFLOW_RUN_FILE))  # no MLFLOW_TRACKING_URI, no MLflow


def test_mlflow_gets_params_per_epoch_metrics_and_artefacts_and_a_resumed_run_goes_on_in_the_same_mlflow_run(
    tmp_path, mlflow_store
):
    run_dir = str(tmp_path / "runs" / "first")
    report = tmp_path / "evaluation"
    report.mkdir()
    (report / "index.html").write_text("<html>report</html>")
    (report / "metrics.json").write_text("{}")
    with tracking.open_tracker(run_dir) as tracker:
        tracker.log_params(RunConfig())
        tracker.log_epoch(1, {"train_loss": 2.0, "val_loss": 2.5, "note": "text"})
        tracker.log_epoch(2, {"train_loss": 1.0, "val_loss": 1.5})
        tracker.log_artifact(str(report))

    client, run = mlflow_run(run_dir)
    assert run.info.status == "FINISHED" and run.info.run_name == "first"
    assert client.get_experiment(run.info.experiment_id).name == "tracking-test"
    assert run.data.params["train.epochs"] == "30" and run.data.params["model.latent_dim"] == "32"
    assert history(client, run.info.run_id, "val_loss") == {1: 2.5, 2: 1.5}
    assert "note" not in run.data.metrics
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id, "evaluation")) == [
        "evaluation/index.html",
        "evaluation/metrics.json",
    ]

    # A restarted worker group or --resume: the same MLflow run; params keep their first values.
    with tracking.open_tracker(run_dir) as tracker:
        tracker.log_params(RunConfig(train=TrainConfig(epochs=40)))
        tracker.log_epoch(3, {"val_loss": 1.2})
    client, again = mlflow_run(run_dir)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert history(client, run.info.run_id, "val_loss") == {1: 2.5, 2: 1.5, 3: 1.2}
    assert again.data.params["train.epochs"] == "30"


def test_log_report_puts_the_evaluation_on_the_training_run(tmp_path, mlflow_store):
    run_dir, report = str(tmp_path / "run"), str(tmp_path / "run" / "evaluation")
    with tracking.open_tracker(run_dir) as tracker:
        tracker.log_epoch(1, {"val_loss": 1.0})
    storage.write_text(storage.join(report, "index.html"), "<html></html>")
    tracking.log_report(
        run_dir, [report], {"digit_accuracy": 0.8, "digit_accuracy_per_digit": {"0": 1.0}, "sampler": "expost"}, 1
    )
    client, run = mlflow_run(run_dir)
    assert run.data.metrics["eval_digit_accuracy"] == 0.8 and run.data.metrics["val_loss"] == 1.0
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["evaluation"]
    assert scalars(
        read_events(os.path.join(run_dir, tracking.TENSORBOARD_DIR)), "eval/digit_accuracy"
    ) == pytest.approx({1: 0.8})


def test_other_ranks_track_nothing(tmp_path, mlflow_store):
    run_dir = str(tmp_path / "run")
    tracker = tracking.open_tracker(run_dir, rank=1)
    assert not tracker.active
    tracker.log_params(RunConfig())
    tracker.log_epoch(1, {"val_loss": 1.0})
    tracker.close()
    assert not os.path.exists(run_dir)


def test_an_unreachable_mlflow_warns_once_naming_the_uri_and_tensorboard_goes_on(tmp_path, monkeypatch, free_port):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    run_dir = str(tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tracking.open_tracker(run_dir) as tracker:
            tracker.log_params(RunConfig())
            for epoch in (1, 2):
                tracker.log_epoch(epoch, {"val_loss": 1.0 / epoch})
    messages = [str(w.message) for w in caught if issubclass(w.category, tracking.TrackingWarning)]
    assert len(messages) == 1 and uri in messages[0] and "MLflow" in messages[0], messages
    assert scalars(read_events(os.path.join(run_dir, tracking.TENSORBOARD_DIR)), "val/loss") == {1: 1.0, 2: 0.5}


def test_a_sink_that_fails_mid_run_warns_once_and_the_others_go_on():
    class Failing:
        target = "s3://nowhere/run"

        def log_metrics(self, step, metrics):
            raise OSError("disk full")

    class Recording:
        target = "memory"

        def __init__(self):
            self.steps = []

        def log_metrics(self, step, metrics):
            self.steps.append(step)

    recording = Recording()
    tracker = tracking.Tracker([Failing(), recording])
    with pytest.warns(tracking.TrackingWarning, match=r"s3://nowhere/run failed to log epoch 1 \(OSError: disk full\)"):
        tracker.log_epoch(1, {"val_loss": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.log_epoch(2, {"val_loss": 1.0})
    assert recording.steps == [1, 2]


def test_tensorboard_events_of_an_s3_run_are_copied_there(make_bucket, tmp_path, no_mlflow):
    run_dir = make_bucket("tracking-runs") + "/runs/one"
    with tracking.open_tracker(run_dir) as tracker:
        tracker.log_epoch(1, {"val_loss": 0.5})
        (events,) = storage.list_files(storage.join(run_dir, tracking.TENSORBOARD_DIR))  # there after each epoch
    local = str(tmp_path / "events")
    storage.copy_tree(storage.join(run_dir, tracking.TENSORBOARD_DIR), local)
    assert scalars(read_events(local), "val/loss") == {1: 0.5}


def test_workers_get_the_drivers_mlflow_settings_and_nothing_else():
    env = {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLFLOW_TRACKING_TOKEN": "secret",
        "MLFLOW_EXPERIMENT_NAME": "",
        "HOME": "/root",
    }
    assert tracking.mlflow_settings(env) == {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}


def test_a_ray_train_run_writes_tensorboard_events_and_mlflow_metrics_of_every_epoch(
    ray_local, small_parquet, tmp_path, mlflow_store
):
    from test_training import tiny_run_config

    from vae.training import fit

    # The driver's environment only: Ray's workers started before it was set, so the loop config carries it.
    result = fit(tiny_run_config(epochs=2, tracking_samples=2), small_parquet, str(tmp_path / "runs"), "tracked")

    events = read_events(os.path.join(result.run_dir, tracking.TENSORBOARD_DIR))
    assert sorted(scalars(events, "val/loss")) == [1, 2]
    assert scalars(events, "val/recon_mse")[2] == pytest.approx(result.latest_metrics["val_recon_mse"])
    assert sorted(scalars(events, "kl_weight")) == [1, 2] and sorted(scalars(events, "train/clips_per_s")) == [1, 2]
    samples = {(step, tag) for step, tag, plugin, _ in events if plugin in ("images", "audio")}
    assert {tag for _, tag in samples} == {
        f"samples/digit_{d}/{kind}" for d in (0, 1) for kind in ("spectrogram", "audio")
    }
    assert {step for step, _ in samples} == {1, 2}

    client, run = mlflow_run(result.run_dir)
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.params["train.num_workers"] == "2" and run.data.params["model.latent_dim"] == "4"
    val_loss = history(client, run.info.run_id, "val_loss")
    assert sorted(val_loss) == [1, 2] and val_loss[2] == pytest.approx(result.latest_metrics["val_loss"])
    assert sorted(history(client, run.info.run_id, "train_loss")) == [1, 2]


def _tensorboard_points(folder, tag: str) -> dict[int, float]:
    """What TensorBoard shows for ``tag``: the event files in name order, each session-start event
    dropping the points at its step and later (TensorBoard's purge of orphaned data)."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    points: dict[int, float] = {}
    for path in sorted(p for p in os.listdir(folder) if p.startswith("events.out.tfevents")):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, path)):
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                points = {step: v for step, v in points.items() if step < event.step}
            for value in event.summary.value:
                if value.tag == tag:
                    points[event.step] = float(tf.make_ndarray(value.tensor))
    return points


def test_a_resumed_run_replaces_the_points_logged_after_its_checkpoint(tmp_path):
    """A driver killed after epoch 3 had logged it, with its last checkpoint at epoch 2: the resumed
    run logs epoch 3 again, and TensorBoard shows each epoch once, the resumed run's."""
    import time

    from vae.tracking import TensorBoardSink

    run_dir = str(tmp_path / "run")
    first = TensorBoardSink(run_dir)
    for epoch in (1, 2, 3):
        first.log_metrics(epoch, {"val_loss": float(epoch)})
    first.close()
    time.sleep(1.1)  # event files are named by the second they were opened in
    resumed = TensorBoardSink(run_dir, resumed_from=2)
    for epoch in (3, 4):
        resumed.log_metrics(epoch, {"val_loss": 10.0 * epoch})
    resumed.close()
    assert _tensorboard_points(os.path.join(run_dir, "tensorboard"), "val/loss") == {1: 1.0, 2: 2.0, 3: 30.0, 4: 40.0}
