"""Latent priors: ``normal`` N(0, I) with analytic KL, ``mixture`` a learnable Gaussian mixture.

Both are Keras layers (the mixture's parameters train with the model and are
saved with its weights) with one API:

- ``kl(mu, log_var, z)``: per-example KL(q(z|x) || p(z)), shape [batch]; ``z`` holds
  posterior samples [samples, batch, dim] (the analytic prior ignores them);
- ``log_prob(z)``;
- ``sample(n, seed, weights=None)``: numpy draws, optionally restricted to mixture
  components with the given weights (per-digit generation);
- ``assign(z)``: the mixture component each encoding falls in.

The mixture density is exactly tfp's ``MixtureSameFamily(Categorical(logits),
MultivariateNormalDiag(means, softplus(raw_scales)))``, written out in TF ops:
TFP 0.25 refuses to import alongside TensorFlow unless the legacy ``tf-keras``
package is installed, and this project does not depend on it.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from vae.config import PriorConfig

LOG_2PI = math.log(2.0 * math.pi)


def diag_normal_log_prob(z: tf.Tensor, mean: tf.Tensor, log_var: tf.Tensor) -> tf.Tensor:
    """log N(z; mean, diag(exp(log_var))), summed over the last axis."""
    return -0.5 * tf.reduce_sum(LOG_2PI + log_var + tf.square(z - mean) * tf.exp(-log_var), axis=-1)


def analytic_normal_kl(mu: tf.Tensor, log_var: tf.Tensor) -> tf.Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)) per example: the original's -0.5 * sum(1 + lv - mu^2 - e^lv)."""
    return -0.5 * tf.reduce_sum(1.0 + log_var - tf.square(mu) - tf.exp(log_var), axis=-1)


class NormalPrior(keras.layers.Layer):
    kind = "normal"

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.latent_dim = int(latent_dim)

    def kl(self, mu: tf.Tensor, log_var: tf.Tensor, z: tf.Tensor | None = None) -> tf.Tensor:
        return analytic_normal_kl(tf.cast(mu, tf.float32), tf.cast(log_var, tf.float32))

    def log_prob(self, z: tf.Tensor) -> tf.Tensor:
        z = tf.cast(z, tf.float32)
        return -0.5 * tf.reduce_sum(LOG_2PI + tf.square(z), axis=-1)

    def sample(self, n: int, seed: int = 0, weights: np.ndarray | None = None) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((n, self.latent_dim)).astype(np.float32)

    def assign(self, z: np.ndarray) -> np.ndarray:
        return np.zeros(len(z), dtype=np.int64)


class MixturePrior(keras.layers.Layer):
    """K diagonal Gaussians with trainable logits, means and softplus scales."""

    kind = "mixture"

    def __init__(self, latent_dim: int, components: int, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.latent_dim, self.components = int(latent_dim), int(components)
        k, d = self.components, self.latent_dim
        self.logits = self.add_weight(name="logits", shape=(k,), initializer="zeros")
        self.means = self.add_weight(name="means", shape=(k, d), initializer=keras.initializers.RandomNormal(stddev=1.0))
        # softplus(0.5413) = 1: unit scales at the start.
        self.raw_scales = self.add_weight(name="raw_scales", shape=(k, d), initializer=keras.initializers.Constant(0.5413))

    def scales(self) -> tf.Tensor:
        return tf.math.softplus(self.raw_scales) + 1e-5

    def component_log_probs(self, z: tf.Tensor) -> tf.Tensor:
        """log(pi_k) + log N(z; m_k, s_k) for every component: [..., K]."""
        z = tf.cast(z, tf.float32)[..., None, :]
        log_var = 2.0 * tf.math.log(self.scales())
        return tf.nn.log_softmax(self.logits) + diag_normal_log_prob(z, self.means, log_var)

    def log_prob(self, z: tf.Tensor) -> tf.Tensor:
        return tf.reduce_logsumexp(self.component_log_probs(z), axis=-1)

    def kl(self, mu: tf.Tensor, log_var: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
        """Monte Carlo KL: mean over the samples in ``z`` [S, B, D] of log q(z|x) - log p(z)."""
        mu, log_var, z = (tf.cast(t, tf.float32) for t in (mu, log_var, z))
        log_q = diag_normal_log_prob(z, mu, log_var)
        return tf.reduce_mean(log_q - self.log_prob(z), axis=0)

    def responsibilities(self, z: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(self.component_log_probs(z), axis=-1)

    def assign(self, z: np.ndarray) -> np.ndarray:
        return np.argmax(self.component_log_probs(tf.convert_to_tensor(z)).numpy(), axis=-1)

    def sample(self, n: int, seed: int = 0, weights: np.ndarray | None = None) -> np.ndarray:
        """Draw ``n`` latents; ``weights`` (length K) replaces the learnt mixing weights."""
        rng = np.random.default_rng(seed)
        if weights is None:
            weights = tf.nn.softmax(self.logits).numpy()
        weights = np.asarray(weights, dtype=np.float64)
        weights = weights / weights.sum()
        ks = rng.choice(self.components, size=n, p=weights)
        means, scales = self.means.numpy(), self.scales().numpy()
        return (means[ks] + scales[ks] * rng.standard_normal((n, self.latent_dim))).astype(np.float32)


def build_prior(cfg: PriorConfig, latent_dim: int) -> keras.layers.Layer:
    if cfg.kind == "normal":
        return NormalPrior(latent_dim, name="prior")
    if cfg.kind == "mixture":
        return MixturePrior(latent_dim, cfg.components, name="prior")
    raise ValueError(f"PriorConfig.kind={cfg.kind!r}; choose from ['normal', 'mixture']")
