"""Latent priors, one class each, registered by kind in :data:`PRIORS`.

- ``normal``: N(0, I), analytic KL (the original VAE).
- ``mixture``: K learnable diagonal Gaussians with learnable weights; KL by Monte Carlo.
- ``tied``: one learnable diagonal Gaussian per digit, p(z | digit); KL analytic against
  the component of the clip's own digit, so digit d's encodings gather around component d
  and a draw from it is a draw from digit d's region.

Densities, sampling and component assignment go through TensorFlow Probability
(``tfp.distributions``) inside Keras 3 layers, so the parameters train with the model and
are saved with its weights. All share one API, so that the rest of the code never asks which
kind it holds (a new prior is a class here, registered in :data:`PRIORS`, and its test):

- ``uses_digits``: whether the prior is p(z | digit): ``kl`` needs each clip's digit and
  ``sample(digit=d)`` draws from digit d's own part of it;
- ``components`` (and ``components_of(cfg)`` before one is built): how many components
  ``assign`` tells apart;
- ``kl(mu, log_var, z, digits)``: per-example KL(q(z|x) || p(z)), shape [batch]; ``z`` holds
  posterior samples [samples, batch, dim] (analytic priors ignore them);
- ``log_prob(z)``: the marginal log-density;
- ``sample(n, seed, digit=None, weights=None)``: numpy draws; ``digit`` restricts a prior that
  knows digits to that digit, ``weights`` (length K) replaces a mixture's own weights;
- ``sample_digit(n, digit, stats, seed)``: draws that stand for digit ``digit``, given its
  statistics of the training encodings (``latent_stats.json``: mean, spread, occupancy);
- ``assign(z)``: the component each latent falls in, or None for a prior without components.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from vae.config import N_DIGITS, PriorConfig

LOG_2PI = math.log(2.0 * math.pi)
# softplus(UNIT_RAW_SCALE) = 1: components start with unit scales.
UNIT_RAW_SCALE = math.log(math.e - 1.0)


def _tfd():
    import tensorflow_probability as tfp

    return tfp.distributions


def diag_normal_log_prob(z: tf.Tensor, mean: tf.Tensor, log_var: tf.Tensor) -> tf.Tensor:
    """log N(z; mean, diag(exp(log_var))), summed over the last axis."""
    return -0.5 * tf.reduce_sum(LOG_2PI + log_var + tf.square(z - mean) * tf.exp(-log_var), axis=-1)


def analytic_normal_kl(mu: tf.Tensor, log_var: tf.Tensor) -> tf.Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)) per example: the original's -0.5 * sum(1 + lv - mu^2 - e^lv)."""
    return -0.5 * tf.reduce_sum(1.0 + log_var - tf.square(mu) - tf.exp(log_var), axis=-1)


def _stateless_seed(seed: int) -> tf.Tensor:
    return tf.constant([int(seed) % (2**31 - 1), 0], tf.int32)


class Prior(keras.layers.Layer):
    """What every prior answers; subclasses set ``kind`` and register in :data:`PRIORS`."""

    kind = ""
    uses_digits = False  # True for p(z | digit): kl() needs each clip's digit

    @classmethod
    def components_of(cls, cfg: PriorConfig) -> int:
        """How many components a prior built from ``cfg`` has (1: none to tell apart)."""
        return 1

    def __init__(self, latent_dim: int, cfg: PriorConfig, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.latent_dim = int(latent_dim)
        self.components = self.components_of(cfg)

    def kl(self, mu, log_var, z, digits=None) -> tf.Tensor:
        raise NotImplementedError

    def distribution(self, weights=None):
        raise NotImplementedError

    def log_prob(self, z) -> tf.Tensor:
        return self.distribution().log_prob(tf.cast(z, tf.float32))

    def sample(self, n: int, seed: int = 0, digit: int | None = None, weights=None) -> np.ndarray:
        return self.distribution(weights).sample(int(n), seed=_stateless_seed(seed)).numpy().astype(np.float32)

    def sample_digit(self, n: int, digit: int, stats: dict, seed: int = 0) -> np.ndarray:
        """``n`` latents standing for ``digit``. A prior that knows nothing of digits (and has no
        components to weight) draws from the digit's training encodings: N(stats["mean"],
        diag(stats["spread"]^2)), the original research's approach."""
        mean, spread = np.asarray(stats["mean"], np.float32), np.asarray(stats["spread"], np.float32)
        return (mean + spread * np.random.default_rng(seed).standard_normal((int(n), mean.size))).astype(np.float32)

    def assign(self, z) -> np.ndarray | None:
        """The component each latent falls in; None for a prior without components."""
        return None


class NormalPrior(Prior):
    kind = "normal"

    def kl(self, mu, log_var, z=None, digits=None):
        return analytic_normal_kl(tf.cast(mu, tf.float32), tf.cast(log_var, tf.float32))

    def distribution(self, weights=None):
        tfd = _tfd()
        return tfd.MultivariateNormalDiag(loc=tf.zeros(self.latent_dim), scale_diag=tf.ones(self.latent_dim))


class _Components(Prior):
    """K learnable diagonal Gaussians: ``means`` [K, D], ``scales`` = softplus(``raw_scales``)."""

    def __init__(self, latent_dim: int, cfg: PriorConfig, learn_weights: bool = True, **kwargs):
        super().__init__(latent_dim, cfg, **kwargs)
        k, d = self.components, self.latent_dim
        self.logits = self.add_weight(name="logits", shape=(k,), initializer="zeros", trainable=learn_weights)
        self.means = self.add_weight(
            name="means", shape=(k, d), initializer=keras.initializers.RandomNormal(stddev=1.0)
        )
        self.raw_scales = self.add_weight(
            name="raw_scales", shape=(k, d), initializer=keras.initializers.Constant(UNIT_RAW_SCALE)
        )

    def scales(self) -> tf.Tensor:
        return tf.math.softplus(self.raw_scales) + 1e-5

    def component_distribution(self):
        return _tfd().MultivariateNormalDiag(loc=self.means, scale_diag=self.scales())

    def distribution(self, weights=None):
        tfd = _tfd()
        if weights is None:
            mixing = tfd.Categorical(logits=self.logits)
        else:
            w = np.asarray(weights, np.float64)
            if w.shape != (self.components,) or not np.all(w >= 0) or w.sum() <= 0:
                raise ValueError(
                    f"mixture weights must be {self.components} non-negative numbers, not all 0; got {w.tolist()}"
                )
            mixing = tfd.Categorical(probs=tf.constant(w / w.sum(), tf.float32))
        return tfd.MixtureSameFamily(mixing, self.component_distribution())

    def component_log_probs(self, z) -> tf.Tensor:
        """log(pi_k) + log N(z; m_k, s_k) for every component: [..., K]."""
        z = tf.cast(z, tf.float32)[..., None, :]
        return tf.nn.log_softmax(self.logits) + self.component_distribution().log_prob(z)

    def responsibilities(self, z) -> tf.Tensor:
        return tf.nn.softmax(self.component_log_probs(z), axis=-1)

    def sample_digit(self, n: int, digit: int, stats: dict, seed: int = 0) -> np.ndarray:
        """Draws from the components the digit's training clips fall in, weighted by their occupancy."""
        return self.sample(n, seed, weights=np.asarray(stats["occupancy"]))

    def assign(self, z) -> np.ndarray:
        return np.argmax(self.component_log_probs(tf.convert_to_tensor(z)).numpy(), axis=-1).astype(np.int64)


class MixturePrior(_Components):
    """A learnable Gaussian mixture (MixtureSameFamily of Categorical and MultivariateNormalDiag)."""

    kind = "mixture"

    @classmethod
    def components_of(cls, cfg: PriorConfig) -> int:
        return int(cfg.components)

    def kl(self, mu, log_var, z, digits=None):
        """Monte Carlo KL: mean over the samples in ``z`` [S, B, D] of log q(z|x) - log p(z)."""
        mu, log_var, z = (tf.cast(t, tf.float32) for t in (mu, log_var, z))
        log_q = diag_normal_log_prob(z, mu, log_var)
        return tf.reduce_mean(log_q - self.log_prob(z), axis=0)


class TiedPrior(_Components):
    """p(z | digit d) = N(m_d, diag(s_d^2)), one learnable component per digit; p(z) mixes them
    equally (FSDD is balanced; generation draws digits with the training frequencies)."""

    kind = "tied"
    uses_digits = True

    @classmethod
    def components_of(cls, cfg: PriorConfig) -> int:
        return N_DIGITS

    def __init__(self, latent_dim: int, cfg: PriorConfig, **kwargs):
        super().__init__(latent_dim, cfg, learn_weights=False, **kwargs)

    def kl(self, mu, log_var, z, digits=None):
        """Analytic KL(q(z|x) || p(z | digit of x))."""
        if digits is None:
            raise ValueError("the tied prior needs each clip's digit")
        tfd = _tfd()
        digits = tf.cast(digits, tf.int32)
        mu, log_var = tf.cast(mu, tf.float32), tf.cast(log_var, tf.float32)
        q = tfd.MultivariateNormalDiag(loc=mu, scale_diag=tf.exp(0.5 * log_var))
        p = tfd.MultivariateNormalDiag(loc=tf.gather(self.means, digits), scale_diag=tf.gather(self.scales(), digits))
        return tfd.kl_divergence(q, p)

    def sample(self, n: int, seed: int = 0, digit: int | None = None, weights=None) -> np.ndarray:
        if digit is not None:
            weights = np.eye(self.components)[int(digit)]
        return super().sample(n, seed, weights=weights)

    def sample_digit(self, n: int, digit: int, stats: dict, seed: int = 0) -> np.ndarray:
        """Draws from p(z | digit): the digit's own component (its training statistics are not needed)."""
        return self.sample(n, seed, digit=digit)


PRIORS: dict[str, type[Prior]] = {cls.kind: cls for cls in (NormalPrior, MixturePrior, TiedPrior)}


def build_prior(cfg: PriorConfig, latent_dim: int) -> Prior:
    if cfg.kind not in PRIORS:
        raise ValueError(f"PriorConfig.kind={cfg.kind!r}; choose from {sorted(PRIORS)}")
    return PRIORS[cfg.kind](latent_dim, cfg, name="prior")
