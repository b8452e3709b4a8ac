"""A digit recogniser: a small CNN on spectrograms, trained apart from any VAE.

It listens to audio the way a user would (WAV -> features with its own
FeatureConfig), so a VAE is judged on the sound it makes, not on its raw
decoder output. Stored like any checkpoint: ``config.json`` (FeatureConfig +
RecogniserConfig), ``model.weights.h5``, ``metrics.json``; local or ``s3://``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vae import storage
from vae.config import FeatureConfig, RecogniserConfig, from_dict, to_dict
from vae.evaluation import audio

log = logging.getLogger(__name__)

N_DIGITS = 10
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Heard:
    """What the recogniser made of a set of clips."""

    spectrograms: np.ndarray  # (N, n_bins, n_frames), the recogniser's own features of the audio
    probs: np.ndarray  # (N, 10) p(digit | clip)
    embeddings: np.ndarray  # (N, embedding_dim) penultimate layer

    @property
    def predicted(self) -> np.ndarray:
        return np.argmax(self.probs, axis=1)


@dataclass
class Recogniser:
    features: FeatureConfig
    config: RecogniserConfig
    model: Any  # keras.Model: spectrogram -> [embedding, probs]
    metrics: dict = field(default_factory=dict)

    def predict(self, spectrograms: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(probs, embeddings) for normalised spectrograms made with ``self.features``."""
        x = np.asarray(spectrograms, dtype=np.float32)
        if x.ndim == 4:
            x = x[..., 0]
        if x.shape[1:] != self.features.shape:
            raise ValueError(
                f"spectrograms of shape {x.shape[1:]} do not match the recogniser's features {self.features.shape}"
            )
        if len(x) == 0:
            return np.zeros((0, N_DIGITS), np.float32), np.zeros((0, self.config.embedding_dim), np.float32)
        emb, probs = self.model.predict(x, batch_size=batch_size, verbose=0)
        return np.asarray(probs, np.float64), np.asarray(emb, np.float64)

    def listen(self, waveforms: np.ndarray | list[np.ndarray], sample_rate: int) -> Heard:
        """Read clips as a user hears them: waveforms at ``sample_rate`` -> features -> CNN."""
        specs = audio.to_spectrograms(waveforms, sample_rate, self.features)
        probs, emb = self.predict(specs)
        return Heard(specs, probs, emb)


def build_model(features: FeatureConfig, config: RecogniserConfig):
    """Conv blocks -> flatten -> dense embedding -> softmax over ten digits. Outputs [embedding, probs]."""
    import keras
    from keras import layers

    inp = keras.Input(shape=features.shape, name="spectrogram")
    x = layers.Reshape((*features.shape, 1))(inp)
    if config.downsample > 1:
        x = layers.AveragePooling2D(config.downsample, padding="same")(x)
    for i, f in enumerate(config.filters):
        x = layers.Conv2D(int(f), 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        # Keras' default momentum (0.99) leaves the moving statistics far from the batch ones
        # after a few hundred steps, and the model then fails at inference.
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(config.dropout)(x)
    emb = layers.Dense(config.embedding_dim, activation="relu", name="embedding")(x)
    x = layers.Dropout(config.dropout)(emb)
    probs = layers.Dense(N_DIGITS, activation="softmax", name="probs")(x)
    return keras.Model(inp, [emb, probs], name="digit_recogniser")


def train(
    specs: np.ndarray,
    digits: np.ndarray,
    features: FeatureConfig,
    config: RecogniserConfig = RecogniserConfig(),
    db_min: np.ndarray | None = None,
    db_max: np.ndarray | None = None,
) -> Recogniser:
    """Fit the recogniser on real spectrograms and, with ``config.gl_augment``, their Griffin-Lim resynthesis."""
    import keras

    config.validate()
    features.validate()
    specs = np.asarray(specs, np.float32)
    digits = np.asarray(digits, np.int64)
    x, y = specs, digits
    if config.gl_augment:
        waves = audio.resynthesise(
            specs,
            features,
            db_min,
            db_max,
            n_iter=config.gl_iters,
            seed=config.seed,
            label="recogniser augmentation, griffin-lim",
        )
        x = np.concatenate([specs, audio.to_spectrograms(waves, features.sample_rate, features)])
        y = np.concatenate([digits, digits])

    keras.utils.set_random_seed(config.seed)
    model = build_model(features, config)
    probs_only = keras.Model(model.input, model.outputs[1])
    steps = int(np.ceil(len(x) / config.batch_size)) * config.epochs
    lr = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps)
    probs_only.compile(
        optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = probs_only.fit(
        x,
        y,
        batch_size=config.batch_size,
        epochs=config.epochs,
        shuffle=True,
        verbose=0,
        callbacks=[_progress(config.epochs)],
    )
    metrics = {
        "train_clips": int(len(specs)),
        "train_clips_with_augmentation": int(len(x)),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }
    return Recogniser(features, config, model, metrics)


def evaluate(rec: Recogniser, specs: np.ndarray, digits: np.ndarray, db_min=None, db_max=None) -> dict:
    """Accuracy on clean spectrograms and on their resynthesis at the features' own Griffin-Lim setting."""
    probs, _ = rec.predict(specs)
    waves = audio.resynthesise(specs, rec.features, db_min, db_max, label="recogniser test, griffin-lim")
    heard = rec.listen(waves, rec.features.sample_rate)
    digits = np.asarray(digits)
    return {
        "test_accuracy": float(np.mean(np.argmax(probs, 1) == digits)),
        "test_accuracy_griffin_lim": float(np.mean(heard.predicted == digits)),
        "test_clips": int(len(digits)),
    }


def train_from_parquet(data_uri: str, config: RecogniserConfig = RecogniserConfig()) -> Recogniser:
    """Train on the ``train`` split of a preprocessed dataset; score on its ``test`` split."""
    from vae.dataset import load_split_numpy, read_feature_config

    features = read_feature_config(data_uri)
    tr = load_split_numpy(data_uri, "train")
    te = load_split_numpy(data_uri, "test")
    if len(tr["digit"]) == 0 or len(te["digit"]) == 0:
        raise ValueError(f"{data_uri}: need clips in both the train and test splits to train a recogniser")
    per_clip = features.normalisation == "per_clip"
    rec = train(
        tr["spectrogram"],
        tr["digit"],
        features,
        config,
        tr["db_min"] if per_clip else None,
        tr["db_max"] if per_clip else None,
    )
    rec.metrics.update(
        evaluate(
            rec,
            te["spectrogram"],
            te["digit"],
            te["db_min"] if per_clip else None,
            te["db_max"] if per_clip else None,
        )
    )
    rec.metrics["data"] = data_uri
    return rec


def save(rec: Recogniser, uri: str) -> str:
    """Write the recogniser under ``uri`` (local or s3://); weights last, so a complete config is never orphaned."""
    storage.write_json(
        storage.join(uri, CONFIG_FILE), {"features": to_dict(rec.features), "recogniser": to_dict(rec.config)}
    )
    storage.write_json(storage.join(uri, METRICS_FILE), rec.metrics)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, WEIGHTS_FILE)
        rec.model.save_weights(local)
        with open(local, "rb") as f:
            storage.write_bytes(storage.join(uri, WEIGHTS_FILE), f.read())
    return storage.resolve(uri).uri


def load(uri: str) -> Recogniser:
    cfg_uri = storage.join(uri, CONFIG_FILE)
    if not storage.exists(cfg_uri):
        raise storage.StorageError(f"{uri} is not a recogniser checkpoint: {cfg_uri} does not exist")
    meta = storage.read_json(cfg_uri)
    if not isinstance(meta, dict) or not {"features", "recogniser"} <= set(meta):
        raise storage.StorageError(f"{uri} is not a recogniser checkpoint: {cfg_uri} lacks 'features' and 'recogniser'")
    features = from_dict(FeatureConfig, meta["features"]).validate()
    config = from_dict(RecogniserConfig, meta["recogniser"]).validate()
    model = build_model(features, config)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, WEIGHTS_FILE)
        with open(local, "wb") as f:
            f.write(storage.read_bytes(storage.join(uri, WEIGHTS_FILE)))
        model.load_weights(local)
    metrics_uri = storage.join(uri, METRICS_FILE)
    metrics = storage.read_json(metrics_uri) if storage.exists(metrics_uri) else {}
    return Recogniser(features, config, model, metrics)


def _progress(epochs: int):
    import keras

    def report(epoch, logs):
        level = logging.INFO if epoch + 1 == epochs else logging.DEBUG
        log.log(
            level, "recogniser epoch %d/%d: loss %.4f accuracy %.4f", epoch + 1, epochs, logs["loss"], logs["accuracy"]
        )

    return keras.callbacks.LambdaCallback(on_epoch_end=report)
