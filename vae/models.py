"""Convolutional VAE (keras-io style) built from a :class:`ModelConfig`, plus its analytic cost.

Encoder: per layer Conv2D(stride, "same") -> activation -> BatchNorm; Flatten;
Dense to mu and to log-variance. Decoder: Dense -> Reshape -> Conv2DTranspose
layers mirroring the encoder's filters[1:] -> Conv2DTranspose(1) -> sigmoid, as in
the original research code. The input shape always comes from the FeatureConfig
of the data, never from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from vae import losses
from vae.config import ModelConfig, PriorConfig
from vae.priors import build_prior


LOG_VAR_MIN, LOG_VAR_MAX = -12.0, 6.0


def _policy(mixed_precision: bool) -> str:
    return "mixed_float16" if mixed_precision else "float32"


def encoded_shape(input_hw: tuple[int, int], cfg: ModelConfig) -> tuple[int, int, int]:
    """Shape before the bottleneck: each "same" strided conv gives ceil(size / stride)."""
    h, w = input_hw
    for sh, sw in cfg.stride_pairs():
        h, w = math.ceil(h / sh), math.ceil(w / sw)
    return h, w, int(cfg.filters[-1])


def _norm_act(x, cfg: ModelConfig, name: str, dtype: str):
    x = keras.layers.Activation(cfg.activation, name=f"{name}_act", dtype=dtype)(x)
    if cfg.normalisation == "batch":
        # Synchronised so that 1 worker x 2B and 2 workers x B normalise over the same batch.
        x = keras.layers.BatchNormalization(synchronized=True, name=f"{name}_bn", dtype=dtype)(x)
    return x


def build_encoder(input_hw: tuple[int, int], cfg: ModelConfig, mixed_precision: bool = False) -> keras.Model:
    dtype = _policy(mixed_precision)
    inputs = keras.Input(shape=(*input_hw, 1), name="spectrogram")
    x = inputs
    for i, (f, k, s) in enumerate(zip(cfg.filters, cfg.kernels, cfg.stride_pairs())):
        x = keras.layers.Conv2D(int(f), int(k), strides=s, padding="same", name=f"encoder_conv_{i}", dtype=dtype)(x)
        x = _norm_act(x, cfg, f"encoder_{i}", dtype)
    x = keras.layers.Flatten(name="encoder_flatten", dtype=dtype)(x)
    mu = keras.layers.Dense(cfg.latent_dim, name="mu", dtype="float32")(x)
    log_var = keras.layers.Dense(cfg.latent_dim, name="log_variance", dtype="float32")(x)
    return keras.Model(inputs, [mu, log_var], name="encoder")


def build_decoder(input_hw: tuple[int, int], cfg: ModelConfig, mixed_precision: bool = False) -> keras.Model:
    dtype = _policy(mixed_precision)
    before = encoded_shape(input_hw, cfg)
    strides = cfg.stride_pairs()
    z = keras.Input(shape=(cfg.latent_dim,), name="z")
    x = keras.layers.Dense(int(np.prod(before)), name="decoder_dense", dtype=dtype)(z)
    x = keras.layers.Reshape(before, name="decoder_reshape", dtype=dtype)(x)
    for i in reversed(range(1, len(cfg.filters))):
        x = keras.layers.Conv2DTranspose(
            int(cfg.filters[i]), int(cfg.kernels[i]), strides=strides[i], padding="same", name=f"decoder_conv_t_{i}", dtype=dtype
        )(x)
        x = _norm_act(x, cfg, f"decoder_{i}", dtype)
    x = keras.layers.Conv2DTranspose(1, int(cfg.kernels[0]), strides=strides[0], padding="same", name="decoder_output", dtype=dtype)(x)
    out_h, out_w = x.shape[1], x.shape[2]
    if (out_h, out_w) != tuple(input_hw):
        # Input sizes not divisible by the stride product: upsampling overshoots, crop back.
        x = keras.layers.Cropping2D(((0, out_h - input_hw[0]), (0, out_w - input_hw[1])), name="decoder_crop", dtype=dtype)(x)
    x = keras.layers.Activation("sigmoid", name="decoder_sigmoid", dtype="float32")(x)
    return keras.Model(z, x, name="decoder")


class Sampling(keras.layers.Layer):
    """z = mu + exp(log_var / 2) * eps, for eps of shape [samples, batch, dim] (drawn here when not given)."""

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, mu, log_var, eps=None, samples: int = 1):
        if eps is None:
            eps = keras.random.normal((samples, *keras.ops.shape(mu)), seed=self.seed_generator)
        return mu[None] + tf.exp(0.5 * log_var)[None] * tf.cast(eps, tf.float32)


class VAE(keras.Model):
    """Encoder, decoder and prior; ``per_example_losses`` feeds both ``fit`` and the distributed step."""

    def __init__(
        self,
        input_hw: tuple[int, int],
        model_cfg: ModelConfig,
        prior_cfg: PriorConfig,
        mixed_precision: bool = False,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_hw = tuple(int(v) for v in input_hw)
        self.model_cfg, self.prior_cfg = model_cfg, prior_cfg
        self.encoder = build_encoder(self.input_hw, model_cfg, mixed_precision)
        self.decoder = build_decoder(self.input_hw, model_cfg, mixed_precision)
        self.prior = build_prior(prior_cfg, model_cfg.latent_dim)
        self.sampling = Sampling(seed, name="sampling")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.recon_tracker = keras.metrics.Mean(name="recon")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.recon_mse_tracker = keras.metrics.Mean(name="recon_mse")

    @property
    def metrics(self):
        return [self.loss_tracker, self.recon_tracker, self.kl_tracker, self.recon_mse_tracker]

    def build_all(self) -> "VAE":
        """Create every variable (a zero batch through the model) so weights can be saved and loaded."""
        x = tf.zeros((1, *self.input_hw, 1))
        self.per_example_losses(x, eps=tf.zeros((self.prior_cfg.kl_samples, 1, self.model_cfg.latent_dim)))
        self.built = True
        return self

    @staticmethod
    def _as_image(x):
        x = tf.convert_to_tensor(x)
        return x[..., None] if x.shape.rank == 3 else x

    def encode(self, x, training: bool = False):
        mu, log_var = self.encoder(self._as_image(x), training=training)
        # A guard, not a model choice: a posterior std beyond e^3 (the prior's is 1) is never useful,
        # and an unbounded log-variance overflows exp() in the KL and the sample after a bad step.
        return mu, tf.clip_by_value(log_var, LOG_VAR_MIN, LOG_VAR_MAX)

    def decode(self, z, training: bool = False):
        return self.decoder(z, training=training)

    def call(self, x, training: bool = False):
        """Deterministic reconstruction through the posterior mean."""
        mu, _ = self.encode(x, training=training)
        return self.decode(mu, training=training)

    def per_example_losses(self, x, eps=None, training: bool = True) -> dict[str, tf.Tensor]:
        """loss, recon, kl and recon_mse, each of shape [batch]; eps: [kl_samples, batch, latent] or None."""
        x = self._as_image(x)
        mu, log_var = self.encode(x, training=training)
        z = self.sampling(mu, log_var, eps, samples=self.prior_cfg.kl_samples)
        x_hat = self.decode(z[0], training=training)
        recon = losses.reconstruction_term(self.prior_cfg.reconstruction, x, x_hat, self.prior_cfg.recon_weight)
        kl = self.prior.kl(mu, log_var, z)
        return {"loss": recon + kl, "recon": recon, "kl": kl, "recon_mse": losses.per_example_mse(x, x_hat)}

    def _track(self, terms):
        for tracker, key in zip(self.metrics, ("loss", "recon", "kl", "recon_mse")):
            tracker.update_state(terms[key])
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        with tf.GradientTape() as tape:
            terms = self.per_example_losses(x, training=True)
            loss = tf.reduce_mean(terms["loss"])
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        return self._track(terms)

    def test_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        return self._track(self.per_example_losses(x, training=False))


def build_vae(input_hw, model_cfg: ModelConfig, prior_cfg: PriorConfig, mixed_precision: bool = False, seed: int = 0) -> VAE:
    return VAE(tuple(input_hw), model_cfg, prior_cfg, mixed_precision=mixed_precision, seed=seed, name="vae").build_all()


# --------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class LayerCost:
    name: str
    output_shape: tuple[int, ...]
    macs: int


def layer_costs(input_hw: tuple[int, int], cfg: ModelConfig) -> list[LayerCost]:
    """Multiply-accumulates per clip of every conv/dense layer of one forward pass (encoder + decoder).

    Conv2D: out_h * out_w * k^2 * c_in * c_out. Conv2DTranspose (TF computes it as
    the input-gradient of a conv): in_h * in_w * k^2 * c_in * c_out. Activations
    and BatchNorm (a few ops per element) are left out.
    """
    out: list[LayerCost] = []
    h, w = input_hw
    c = 1
    strides = cfg.stride_pairs()
    for i, (f, k) in enumerate(zip(cfg.filters, cfg.kernels)):
        h, w = math.ceil(h / strides[i][0]), math.ceil(w / strides[i][1])
        out.append(LayerCost(f"encoder_conv_{i}", (h, w, int(f)), h * w * k * k * c * int(f)))
        c = int(f)
    flat = h * w * c
    out.append(LayerCost("mu", (cfg.latent_dim,), flat * cfg.latent_dim))
    out.append(LayerCost("log_variance", (cfg.latent_dim,), flat * cfg.latent_dim))
    out.append(LayerCost("decoder_dense", (flat,), cfg.latent_dim * flat))
    for i in list(reversed(range(1, len(cfg.filters)))) + [0]:
        c_out = int(cfg.filters[i]) if i > 0 else 1
        k = int(cfg.kernels[i])
        macs = h * w * k * k * c * c_out
        h, w = h * strides[i][0], w * strides[i][1]
        out.append(LayerCost(f"decoder_conv_t_{i}" if i > 0 else "decoder_output", (h, w, c_out), macs))
        c = c_out
    return out


def flops_per_clip(input_hw: tuple[int, int], cfg: ModelConfig) -> int:
    """Forward-pass FLOPs per clip (2 per multiply-accumulate); a training step costs about 3x this."""
    return 2 * sum(layer.macs for layer in layer_costs(input_hw, cfg))
