"""Reconstruction terms, one class each, registered by kind in :data:`RECONSTRUCTIONS`.

Each is a Keras layer mapping (x, x_hat) to a per-example vector of shape ``[batch]``, so a
distributed step can sum its replica's examples and divide by the global batch size.

- ``mse``: ``recon_weight x`` the per-clip mean squared error: a Gaussian likelihood of fixed
  variance ``n_pixels / (2 recon_weight)`` (the original research used 1e6).
- ``bernoulli``: ``recon_weight x`` the per-clip mean binary cross-entropy; with
  ``recon_weight = n_pixels`` the exact Bernoulli log-likelihood of the original mixture VAE.
- ``gaussian``: the calibrated decoder of Rybkin et al. (2021): a Gaussian likelihood with one
  learned variance shared by every pixel, summed over pixels. The variance follows the
  reconstruction error, so the balance between reconstruction and KL needs no hand-set weight
  (``recon_weight`` is not used).
- ``laplace``: the same with a Laplace likelihood (one learned scale ``b``): the absolute error, whose
  minimiser is the conditional median rather than the mean; of a pixel that is a harmonic in some takes and
  a valley between harmonics in others it keeps one of the two instead of their average.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from vae.config import LossConfig

LOG_2PI = math.log(2.0 * math.pi)
LOG_2 = math.log(2.0)


def _flat(x: tf.Tensor) -> tf.Tensor:
    return tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])


def per_example_mse(x: tf.Tensor, x_hat: tf.Tensor) -> tf.Tensor:
    """Mean squared error over H, W, C of each clip: the weight-independent reconstruction metric."""
    return tf.reduce_mean(tf.square(_flat(x) - _flat(x_hat)), axis=-1)


def per_example_bernoulli(x: tf.Tensor, x_hat: tf.Tensor, eps: float = 1e-6) -> tf.Tensor:
    """Mean binary cross-entropy over pixels; targets are the [0, 1] spectrogram values."""
    x, p = _flat(x), tf.clip_by_value(_flat(x_hat), eps, 1.0 - eps)
    return -tf.reduce_mean(x * tf.math.log(p) + (1.0 - x) * tf.math.log(1.0 - p), axis=-1)


class Reconstruction(keras.layers.Layer):
    kind = ""

    def __init__(self, cfg: LossConfig, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.weight = float(cfg.recon_weight)

    def call(self, x, x_hat):
        raise NotImplementedError


class MSE(Reconstruction):
    kind = "mse"

    def call(self, x, x_hat):
        return self.weight * per_example_mse(x, x_hat)


class Bernoulli(Reconstruction):
    kind = "bernoulli"

    def call(self, x, x_hat):
        return self.weight * per_example_bernoulli(x, x_hat)


class Gaussian(Reconstruction):
    """-log N(x; x_hat, sigma^2 I) summed over pixels, with one learned log sigma."""

    kind = "gaussian"

    def __init__(self, cfg: LossConfig, **kwargs):
        super().__init__(cfg, **kwargs)
        self.log_scale = self.add_weight(
            name="log_scale", shape=(), initializer=keras.initializers.Constant(math.log(cfg.gaussian_init_scale))
        )

    def scale(self) -> tf.Tensor:
        return tf.exp(self.log_scale)

    def call(self, x, x_hat):
        x, x_hat = _flat(x), _flat(x_hat)
        n = tf.cast(tf.shape(x)[1], tf.float32)
        sq = tf.reduce_sum(tf.square(x - x_hat), axis=-1)
        return 0.5 * sq * tf.exp(-2.0 * self.log_scale) + n * (self.log_scale + 0.5 * LOG_2PI)


class Laplace(Gaussian):
    """-log Laplace(x; x_hat, b) summed over pixels, with one learned log b."""

    kind = "laplace"

    def call(self, x, x_hat):
        x, x_hat = _flat(x), _flat(x_hat)
        n = tf.cast(tf.shape(x)[1], tf.float32)
        absolute = tf.reduce_sum(tf.abs(x - x_hat), axis=-1)
        return absolute * tf.exp(-self.log_scale) + n * (self.log_scale + LOG_2)


RECONSTRUCTIONS: dict[str, type[Reconstruction]] = {cls.kind: cls for cls in (MSE, Bernoulli, Gaussian, Laplace)}


def build_reconstruction(cfg: LossConfig, name: str = "reconstruction") -> Reconstruction:
    if cfg.reconstruction not in RECONSTRUCTIONS:
        raise ValueError(f"LossConfig.reconstruction={cfg.reconstruction!r}; choose from {sorted(RECONSTRUCTIONS)}")
    return RECONSTRUCTIONS[cfg.reconstruction](cfg, name=name)
