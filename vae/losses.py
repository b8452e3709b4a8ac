"""Per-example reconstruction terms.

Each returns a vector of shape ``[batch]`` so a distributed step can sum over
its replica's examples and divide by the global batch size. Both are
``recon_weight`` times a per-clip mean over pixels, so one weight means the same
thing for either term: ``mse`` with weight ``w`` is a Gaussian likelihood with
variance ``n_pixels / (2 w)``; ``bernoulli`` with ``w = n_pixels`` is the exact
Bernoulli log-likelihood of the original mixture VAE.
"""

from __future__ import annotations

import tensorflow as tf

RECONSTRUCTIONS = ("mse", "bernoulli")


def _flat(x: tf.Tensor) -> tf.Tensor:
    return tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])


def per_example_mse(x: tf.Tensor, x_hat: tf.Tensor) -> tf.Tensor:
    """Mean squared error over H, W, C of each clip: the weight-independent reconstruction metric."""
    return tf.reduce_mean(tf.square(_flat(x) - _flat(x_hat)), axis=-1)


def per_example_bernoulli(x: tf.Tensor, x_hat: tf.Tensor, eps: float = 1e-6) -> tf.Tensor:
    """Mean binary cross-entropy over pixels; targets are the [0, 1] spectrogram values."""
    x, p = _flat(x), tf.clip_by_value(_flat(x_hat), eps, 1.0 - eps)
    return -tf.reduce_mean(x * tf.math.log(p) + (1.0 - x) * tf.math.log(1.0 - p), axis=-1)


def reconstruction_term(kind: str, x: tf.Tensor, x_hat: tf.Tensor, weight: float) -> tf.Tensor:
    """``weight * per-clip mean term`` of shape [batch]."""
    if kind == "mse":
        return weight * per_example_mse(x, x_hat)
    if kind == "bernoulli":
        return weight * per_example_bernoulli(x, x_hat)
    raise ValueError(f"PriorConfig.reconstruction={kind!r}; choose from {list(RECONSTRUCTIONS)}")
