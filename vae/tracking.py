"""Every run in the trackers people already use: TensorBoard always, MLflow when configured.

A :class:`Tracker` writes TensorBoard event files under ``<run_dir>/tensorboard`` (for an
``s3://`` run: locally, copied there after every epoch, as TensorFlow writes event files to
local paths only) and, when ``MLFLOW_TRACKING_URI`` is set, logs the run's params, per-epoch
metrics and artefacts to MLflow. Ray Train workers log from rank 0 only (the other ranks get
a tracker that does nothing), as Ray Train recommends.

The MLflow run's id is kept in ``<run_dir>/mlflow_run.json``, so a worker group restarted
after a failure, ``--resume`` and the job that evaluates the run afterwards all log to the
run that training started.

A tracker never stops training: the first failure of a sink (MLflow unreachable, a full disk)
warns once, naming where it was writing to, and that sink stays off for the rest of the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vae import storage

TENSORBOARD_DIR = "tensorboard"
MLFLOW_RUN_FILE = "mlflow_run.json"
DEFAULT_EXPERIMENT = "fsdd-vae"
TRACKING_URI_VAR = "MLFLOW_TRACKING_URI"
# The MLflow settings the driver hands its Train workers (which do not share its environment).
# Credentials (MLFLOW_TRACKING_TOKEN, ...) are not among them: they belong in the cluster's environment.
PASSED_VARS = (TRACKING_URI_VAR, "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE",
               "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")  # fmt: skip
# An unreachable server costs seconds, not MLflow's default minutes of retries, before the warning.
QUICK_FAILURE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
MLFLOW_BATCH = 100  # params per log_batch call (MLflow's limit)


class TrackingWarning(UserWarning):
    """A tracker sink failed and is off for the rest of the run; training goes on."""


def mlflow_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The MLflow variables set in ``environ`` (default: this process's) that workers need too."""
    environ = os.environ if environ is None else environ
    return {key: environ[key] for key in PASSED_VARS if environ.get(key)}


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers among ``metrics`` (booleans, text, nested data and ``epoch`` itself left out)."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if key != "epoch" and isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
    }


def flat_params(run_cfg: Any) -> dict[str, str]:
    """A RunConfig as ``section.field -> text``."""
    from vae.config import to_dict

    return {
        f"{section}.{key}": str(value) for section, fields in to_dict(run_cfg).items() for key, value in fields.items()
    }


def tensorboard_tag(key: str) -> str:
    """``train_loss`` -> ``train/loss``, so TensorBoard groups the train and the validation curves."""
    for prefix in ("train_", "val_", "eval_"):
        if key.startswith(prefix):
            return prefix[:-1] + "/" + key[len(prefix) :]
    return key


def spectrogram_images(specs: np.ndarray) -> np.ndarray:
    """Spectrograms [n, bins, frames] in [0, 1] as RGB images [n, bins, frames, 3], low bins at the bottom."""
    import matplotlib

    colours = matplotlib.colormaps["magma"](np.clip(np.asarray(specs, np.float32), 0.0, 1.0))[..., :3]
    return colours[:, ::-1].astype(np.float32)


# --------------------------------------------------------------------------- sinks


# TensorBoard's plugin metadata, written without the tensorboard package (whose tf.summary.scalar,
# image, audio and text these are): each plugin's name and its serialised *PluginData proto.
PLUGIN_CONTENT = {"scalars": b"", "images": b"", "text": b"", "audio": b"\x10\x0b"}  # audio: encoding = WAV (11)


def summary_metadata(plugin: str):
    """The ``SummaryMetadata`` that makes TensorBoard's ``plugin`` tab show a summary."""
    from tensorflow.core.framework.summary_pb2 import SummaryMetadata

    meta = SummaryMetadata()
    meta.plugin_data.plugin_name = plugin
    meta.plugin_data.content = PLUGIN_CONTENT[plugin]
    return meta


class TensorBoardSink:
    """Event files through ``tf.summary.write`` under ``<run_dir>/tensorboard``."""

    def __init__(self, run_dir: str, resumed_from: int = 0):
        import tensorflow as tf

        self.target = storage.join(run_dir, TENSORBOARD_DIR)
        self._local = tempfile.mkdtemp(prefix="fsdd-vae-tb-") if storage.is_s3(self.target) else None
        self._writer = tf.summary.create_file_writer(self._local or storage.resolve(self.target).path)
        if resumed_from > 0:
            self._restart_at(resumed_from + 1)

    def _restart_at(self, step: int) -> None:
        """A session-start event at ``step``: TensorBoard drops the points of earlier event files from
        ``step`` on, logged after the checkpoint a resumed run goes on from (they are logged again)."""
        import tensorflow as tf
        from tensorflow.core.util import event_pb2

        event = event_pb2.Event(wall_time=time.time(), step=step)
        event.session_log.status = event_pb2.SessionLog.START
        tf.raw_ops.ImportEvent(writer=self._writer._resource, event=event.SerializeToString())

    def log_params(self, params: dict[str, str]) -> None:
        import tensorflow as tf

        table = "\n".join(f"| {key} | {value} |" for key, value in params.items())
        with self._writer.as_default():
            tf.summary.write(
                "run_config",
                tf.constant("| param | value |\n|---|---|\n" + table),
                step=0,
                metadata=summary_metadata("text"),
            )
        self._sync()

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        import tensorflow as tf

        with self._writer.as_default():
            for key, value in metrics.items():
                tf.summary.write(
                    tensorboard_tag(key),
                    tf.constant(value, tf.float32),
                    step=step,
                    metadata=summary_metadata("scalars"),
                )
        self._sync()

    def log_samples(self, step: int, names: list[str], specs: np.ndarray, waves: np.ndarray, sample_rate: int) -> None:
        import tensorflow as tf

        images = np.round(spectrogram_images(specs) * 255).astype(np.uint8)
        with self._writer.as_default():
            for name, image, wave in zip(names, images, np.asarray(waves, np.float32)):
                height, width = image.shape[:2]
                png = tf.image.encode_png(image)
                tf.summary.write(f"samples/{name}/spectrogram", tf.stack([str(width), str(height), png]), step=step,
                                 metadata=summary_metadata("images"))  # fmt: skip
                wav = tf.audio.encode_wav(np.clip(wave, -1.0, 1.0)[:, None], sample_rate)
                tf.summary.write(
                    f"samples/{name}/audio",
                    tf.stack([[wav, tf.constant("")]]),
                    step=step,
                    metadata=summary_metadata("audio"),
                )
        self._sync()

    def log_artifact(self, uri: str) -> None:
        """Nothing: TensorBoard has no artefacts (the report sits in the run folder already)."""

    def _sync(self) -> None:
        self._writer.flush()
        if self._local is not None:
            storage.copy_tree(self._local, self.target)

    def close(self) -> None:
        self._sync()
        self._writer.close()
        if self._local is not None:
            shutil.rmtree(self._local, ignore_errors=True)


class MlflowSink:
    """One MLflow run per training run, created by the first tracker and found again by the next."""

    def __init__(self, run_dir: str, settings: Mapping[str, str]):
        # MLflow reads its settings from the environment: a Train worker's comes from the driver.
        os.environ.update(settings)
        for key, value in QUICK_FAILURE.items():
            os.environ.setdefault(key, value)
        from mlflow.tracking import MlflowClient

        self.target = settings[TRACKING_URI_VAR]
        self._client = MlflowClient(tracking_uri=self.target)
        self.run_id = self._find_or_create_run(run_dir, settings.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)

    def _find_or_create_run(self, run_dir: str, experiment: str) -> str:
        record_uri = storage.join(run_dir, MLFLOW_RUN_FILE)
        record = storage.read_json(record_uri) if storage.exists(record_uri) else {}
        if record.get("tracking_uri") == self.target and record.get("run_id"):
            self._client.update_run(record["run_id"], status="RUNNING")
            return record["run_id"]
        found = self._client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self._client.create_experiment(experiment)
        name = storage.resolve(run_dir).uri.rstrip("/").rsplit("/", 1)[-1]
        run = self._client.create_run(experiment_id, run_name=name, tags={"run_dir": storage.resolve(run_dir).uri})
        storage.write_json(
            record_uri, {"tracking_uri": self.target, "experiment_id": experiment_id, "run_id": run.info.run_id}
        )
        return run.info.run_id

    def log_params(self, params: dict[str, str]) -> None:
        """Params not yet on the run: MLflow's params cannot change, so a resumed run keeps those it
        started with (its ``run_config.json`` has the current ones)."""
        from mlflow.entities import Param

        logged = self._client.get_run(self.run_id).data.params
        new = [Param(key, value) for key, value in params.items() if key not in logged]
        for i in range(0, len(new), MLFLOW_BATCH):
            self._client.log_batch(self.run_id, params=new[i : i + MLFLOW_BATCH])

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in metrics.items()])

    def log_samples(self, step: int, names: list[str], specs: np.ndarray, waves: np.ndarray, sample_rate: int) -> None:
        """Nothing: samples go to TensorBoard only (per-epoch audio would swell the artefact store)."""

    def log_artifact(self, uri: str) -> None:
        """A local or ``s3://`` file or folder, under its own name."""
        name = storage.resolve(uri).uri.rstrip("/").rsplit("/", 1)[-1]
        with tempfile.TemporaryDirectory(prefix="fsdd-vae-artifact-") as tmp:
            local = os.path.join(tmp, name)
            storage.copy_tree(uri, local)
            if os.path.isdir(local):
                self._client.log_artifacts(self.run_id, local, artifact_path=name)
            else:
                self._client.log_artifact(self.run_id, local)

    def close(self) -> None:
        self._client.set_terminated(self.run_id)


# --------------------------------------------------------------------------- the tracker


class Tracker:
    """Params, per-epoch metrics, samples and artefacts to every sink; a tracker without sinks does nothing.

    Build one with :func:`open_tracker`; it is also a context manager (closed on exit).
    """

    def __init__(self, sinks: list | None = None):
        self._sinks = list(sinks or [])

    @property
    def active(self) -> bool:
        return bool(self._sinks)

    def log_params(self, run_cfg: Any) -> None:
        """The RunConfig, once per run: MLflow params, and a table in TensorBoard's text tab."""
        params = flat_params(run_cfg)
        self._each("log params", lambda sink: sink.log_params(params))

    def log_epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """The numbers among ``metrics`` at step ``epoch``."""
        scalars = scalar_metrics(metrics)
        self._each(f"log epoch {epoch}", lambda sink: sink.log_metrics(epoch, scalars))

    def log_samples(
        self, epoch: int, spectrograms: np.ndarray, waves: np.ndarray, sample_rate: int, names: list[str] | None = None
    ) -> None:
        """Spectrograms [n, bins, frames] in [0, 1] as images and their waveforms [n, samples] as audio."""
        names = names or [f"sample_{i}" for i in range(len(spectrograms))]
        self._each(
            f"log samples of epoch {epoch}",
            lambda sink: sink.log_samples(epoch, names, spectrograms, waves, sample_rate),
        )

    def log_checkpoint_samples(self, epoch: int, model, checkpoint_dir: str, n_digits: int) -> None:
        """One generated clip for each of the first ``n_digits`` digits of the local checkpoint
        ``checkpoint_dir`` (``model`` is its model, already in memory), as :meth:`log_samples`."""
        if not self.active or n_digits <= 0:
            return
        try:
            digits, specs, waves, sample_rate = checkpoint_samples(model, checkpoint_dir, n_digits)
        except Exception as exc:  # a sample is a nicety: never worth a run
            warnings.warn(
                f"tracking: no samples for epoch {epoch} from {checkpoint_dir}: {exc}", TrackingWarning, stacklevel=2
            )
            return
        self.log_samples(epoch, specs, waves, sample_rate, names=[f"digit_{d}" for d in digits])

    def log_artifact(self, path: str) -> None:
        """A local or ``s3://`` file or folder (MLflow only)."""
        self._each(f"log artefact {path}", lambda sink: sink.log_artifact(path))

    def close(self) -> None:
        self._each("close", lambda sink: sink.close())
        self._sinks = []

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _each(self, what: str, call: Callable[[Any], None]) -> None:
        for sink in list(self._sinks):
            try:
                call(sink)
            except Exception as exc:  # a tracker must never end a run
                self._drop(sink, what, exc)

    def _drop(self, sink, what: str, exc: Exception) -> None:
        self._sinks.remove(sink)
        kind = type(sink).__name__.removesuffix("Sink")
        warnings.warn(
            f"tracking: {kind} at {sink.target} failed to {what} ({type(exc).__name__}: {exc}); "
            f"no more {kind} logging for this run, training goes on",
            TrackingWarning,
            stacklevel=3,
        )


def _open_sink(factory: Callable[[], Any], kind: str, target: str) -> list:
    try:
        return [factory()]
    except Exception as exc:  # a tracker must never end a run
        warnings.warn(
            f"tracking: cannot start {kind} at {target} ({type(exc).__name__}: {exc}); training goes on without it",
            TrackingWarning,
            stacklevel=3,
        )
        return []


def open_tracker(
    run_dir: str, rank: int = 0, settings: Mapping[str, str] | None = None, resumed_from: int = 0
) -> Tracker:
    """The tracker of the run at ``run_dir`` (local or ``s3://``): TensorBoard, plus MLflow when
    ``settings`` (default: this process's environment, see :func:`mlflow_settings`) name a
    tracking URI. Any rank but 0 gets a tracker that does nothing. ``resumed_from``: the epoch of
    the checkpoint a resumed run goes on from."""
    if rank != 0:
        return Tracker()
    settings = {**mlflow_settings(), **(settings or {})}
    sinks = _open_sink(
        lambda: TensorBoardSink(run_dir, resumed_from), "TensorBoard", storage.join(run_dir, TENSORBOARD_DIR)
    )
    if settings.get(TRACKING_URI_VAR):
        sinks += _open_sink(lambda: MlflowSink(run_dir, settings), "MLflow", settings[TRACKING_URI_VAR])
    return Tracker(sinks)


def worker_tracker(config: Mapping[str, Any], rank: int, run_cfg: Any, resumed_from: int = 0) -> Tracker:
    """A Train worker's tracker from its loop config (run folder and the driver's MLflow settings),
    with the run's params logged."""
    tracker = open_tracker(config["run_dir"], rank, config.get("tracking"), resumed_from)
    tracker.log_params(run_cfg)
    return tracker


def checkpoint_samples(
    model, checkpoint_dir: str, n_digits: int, seed: int = 0
) -> tuple[list[int], np.ndarray, np.ndarray, int]:
    """Digits, spectrograms, Griffin-Lim waveforms and sample rate of one generated clip for each of the
    first ``n_digits`` digits the local checkpoint ``checkpoint_dir`` has statistics for."""
    from vae import checkpoint as ckpt_lib
    from vae import generation

    loaded = ckpt_lib.in_memory(checkpoint_dir, model)
    digits = generation.digits_available(loaded)[:n_digits]
    specs = np.concatenate([generation.sample(loaded, 1, digit=d, seed=seed + d) for d in digits])
    waves = generation.to_waveforms(
        loaded, specs, db_ranges=[generation.db_range(loaded, d) for d in digits], seed=seed
    )
    return digits, specs, np.stack(waves), loaded.run_config.features.sample_rate


def log_report(run_dir: str, report_dirs: list[str], metrics: Mapping[str, Any], epoch: int) -> None:
    """After a run is evaluated: its numbers (as ``eval_<name>`` at step ``epoch``) to TensorBoard and
    MLflow, and each report folder (``index.html``, ``metrics.json``, plots, audio) to MLflow."""
    with open_tracker(run_dir) as tracker:
        tracker.log_epoch(epoch, {f"eval_{key}": value for key, value in scalar_metrics(metrics).items()})
        for report_dir in report_dirs:
            tracker.log_artifact(report_dir)
