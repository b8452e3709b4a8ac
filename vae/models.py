"""Convolutional VAE (keras-io style) built from a :class:`ModelConfig`, plus its analytic cost.

Encoder: per layer Conv2D(stride, "same") -> activation -> BatchNorm; Flatten;
Dense to mu and to log-variance. Decoder: Dense -> Reshape -> Conv2DTranspose
layers mirroring the encoder's filters[1:] (times ``decoder_width``) -> Conv2DTranspose(1) (with ``refine``:
Conv2DTranspose to full resolution, ``refine`` 3x3 Conv2D there, Conv2D 1x1)
-> sigmoid, as in the original research code. With ``local_channels``, a second, local code joins the
decoder at the map of ``local_level``'s size (:func:`build_local_decoder`, :func:`build_local_heads`). The
input shape always comes from the FeatureConfig of the data, never from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from vae import losses
from vae.config import HARMONIC_DEPTH_DB, N_DIGITS, FeatureConfig, LossConfig, ModelConfig, PriorConfig
from vae.harmonics import comb_db
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


class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, synchronised so that 1 worker x 2B and N workers x B normalise over
    the same batch, and named like it, as weights files key a layer by its class name (weights saved
    from Keras' layer load into it). With ``fused``, its training pass on one replica goes through TensorFlow's
    fused kernel: one op forward and one backward (oneDNN's on CPU) instead of Keras' dozen, for the
    same statistics, output and moving averages up to round-off. oneDNN's backward accumulates less
    exactly than Keras' reductions, which shows where a gradient is a near-cancelling sum (a conv
    bias before ReLU and BatchNorm: off by up to ~1% of the layer's largest). Across replicas, and
    in inference, it is Keras' layer."""

    def __init__(self, synchronized: bool = True, fused: bool = True, **kwargs):
        super().__init__(synchronized=synchronized, **kwargs)
        self.fused = fused

    def call(self, inputs, training=None, mask=None):
        replica = tf.distribute.get_replica_context()
        across_replicas = self.synchronized and replica is not None and replica.num_replicas_in_sync > 1
        if (
            not self.fused
            or across_replicas
            or not (training and self.trainable)
            or mask is not None
            or inputs.shape.rank != 4
            or self.axis not in (-1, 3)
        ):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        gamma = self.gamma if self.scale else tf.ones_like(self.moving_mean)
        beta = self.beta if self.center else tf.zeros_like(self.moving_mean)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon, is_training=True)[:3]
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        variance = variance * (n - 1) / n  # the kernel's is Bessel-corrected; Keras keeps the biased one
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)


def _norm_act(x, cfg: ModelConfig, name: str, dtype: str):
    x = keras.layers.Activation(cfg.activation, name=f"{name}_act", dtype=dtype)(x)
    if cfg.normalisation == "batch":
        x = BatchNormalization(name=f"{name}_bn", dtype=dtype)(x)
    return x


def _digit_input():
    return keras.Input(shape=(N_DIGITS,), name="digit_one_hot")


def build_encoder(input_hw: tuple[int, int], cfg: ModelConfig, mixed_precision: bool = False) -> keras.Model:
    """[spectrogram (, one-hot digit)] -> [mu, log_var (, the map ``local_level``: with ``local_channels``)];
    the digit joins the flattened conv features."""
    dtype = _policy(mixed_precision)
    inputs = [keras.Input(shape=(*input_hw, 1), name="spectrogram")]
    x = inputs[0]
    for i, (f, k, s) in enumerate(zip(cfg.filters, cfg.kernels, cfg.stride_pairs())):
        x = keras.layers.Conv2D(int(f), int(k), strides=s, padding="same", name=f"encoder_conv_{i}", dtype=dtype)(x)
        x = _norm_act(x, cfg, f"encoder_{i}", dtype)
        if cfg.local_channels and i == cfg.local_level:
            local_features = x
    x = keras.layers.Flatten(name="encoder_flatten", dtype=dtype)(x)
    if cfg.conditional:
        inputs.append(_digit_input())
        x = keras.layers.Concatenate(name="encoder_with_digit", dtype=dtype)([x, keras.ops.cast(inputs[1], x.dtype)])
    mu = keras.layers.Dense(cfg.latent_dim, name="mu", dtype="float32")(x)
    log_var = keras.layers.Dense(cfg.latent_dim, name="log_variance", dtype="float32")(x)
    outputs = [mu, log_var, local_features] if cfg.local_channels else [mu, log_var]
    return keras.Model(inputs if cfg.conditional else inputs[0], outputs, name="encoder")


def _upsample(x, cfg: ModelConfig, levels, dtype: str):
    channels, strides = cfg.decoder_filters(), cfg.stride_pairs()
    for i in levels:
        x = keras.layers.Conv2DTranspose(
            channels[i],
            int(cfg.kernels[i]),
            strides=strides[i],
            padding="same",
            name=f"decoder_conv_t_{i}",
            dtype=dtype,
        )(x)
        x = _norm_act(x, cfg, f"decoder_{i}", dtype)
    return x


def _crop_to(x, hw: tuple[int, int], name: str, dtype: str):
    """``x`` cropped at the bottom and right to ``hw``: strided upsampling overshoots sizes that are not
    multiples of the stride."""
    out_h, out_w = x.shape[1], x.shape[2]
    if (out_h, out_w) == tuple(hw):
        return x
    return keras.layers.Cropping2D(((0, out_h - hw[0]), (0, out_w - hw[1])), name=name, dtype=dtype)(x)


def _decoder_stem(input_hw: tuple[int, int], cfg: ModelConfig, dtype: str):
    """(inputs, the map the dense layer makes of [z (, one-hot digit)])."""
    inputs = [keras.Input(shape=(cfg.latent_dim,), name="z")]
    x = inputs[0]
    if cfg.conditional:
        inputs.append(_digit_input())
        x = keras.layers.Concatenate(name="z_with_digit")(inputs)
    before = encoded_shape(input_hw, cfg)
    x = keras.layers.Dense(int(np.prod(before)), name="decoder_dense", dtype=dtype)(x)
    x = keras.layers.Reshape(before, name="decoder_reshape", dtype=dtype)(x)
    return inputs if cfg.conditional else inputs[0], x


def _decoder_head(x, input_hw: tuple[int, int], cfg: ModelConfig, dtype: str):
    """From the decoder's map at half resolution to the spectrogram in [0, 1]."""
    strides = cfg.stride_pairs()
    if cfg.refine:
        x = keras.layers.Conv2DTranspose(
            int(cfg.refine_channels),
            int(cfg.kernels[0]),
            strides=strides[0],
            padding="same",
            name="decoder_conv_t_0",
            dtype=dtype,
        )(x)
        x = _norm_act(x, cfg, "decoder_0", dtype)
        for j in range(int(cfg.refine)):
            x = keras.layers.Conv2D(
                int(cfg.refine_channels), 3, padding="same", name=f"decoder_refine_{j}", dtype=dtype
            )(x)
            x = _norm_act(x, cfg, f"decoder_refine_{j}", dtype)
        x = keras.layers.Conv2D(1, 1, name="decoder_output", dtype=dtype)(x)
    else:
        x = keras.layers.Conv2DTranspose(
            1, int(cfg.kernels[0]), strides=strides[0], padding="same", name="decoder_output", dtype=dtype
        )(x)
    x = _crop_to(x, input_hw, "decoder_crop", dtype)
    return keras.layers.Activation("sigmoid", name="decoder_sigmoid", dtype="float32")(x)


def build_decoder(input_hw: tuple[int, int], cfg: ModelConfig, mixed_precision: bool = False) -> keras.Model:
    """[z (, one-hot digit)] -> spectrogram in [0, 1]; the digit joins z. A model without a local code."""
    dtype = _policy(mixed_precision)
    inputs, x = _decoder_stem(input_hw, cfg, dtype)
    x = _upsample(x, cfg, range(len(cfg.filters) - 1, 0, -1), dtype)
    return keras.Model(inputs, _decoder_head(x, input_hw, cfg, dtype), name="decoder")


def build_local_decoder(
    input_hw: tuple[int, int], cfg: ModelConfig, mixed_precision: bool = False
) -> tuple[keras.Model, keras.Model]:
    """A model with ``local_channels``: its decoder in two halves, (above: [z (, one-hot digit)] -> the
    decoder's map at the local code's resolution, below: that map and the local code, stacked -> spectrogram)."""
    dtype = _policy(mixed_precision)
    level = int(cfg.local_level)
    inputs, x = _decoder_stem(input_hw, cfg, dtype)
    x = _upsample(x, cfg, range(len(cfg.filters) - 1, level, -1), dtype)
    above = keras.Model(
        inputs, _crop_to(x, cfg.map_shape(input_hw, level), "decoder_local_crop", dtype), name="decoder_above"
    )
    x = below_input = keras.Input(
        shape=(*above.output.shape[1:3], above.output.shape[-1] + int(cfg.local_channels)), name="map_and_local"
    )
    x = _upsample(x, cfg, range(level, 0, -1), dtype)
    return above, keras.Model(below_input, _decoder_head(x, input_hw, cfg, dtype), name="decoder_below")


def build_local_heads(
    input_hw: tuple[int, int], cfg: ModelConfig, mixed_precision: bool = False
) -> tuple[keras.Model, keras.Model]:
    """(the local code's prior: the decoder's map at its resolution -> [mean, log-variance], its posterior:
    that map and the encoder's of the same size -> [mean, log-variance]); each [batch, h, w, local_channels]."""
    dtype = _policy(mixed_precision)
    h, w = cfg.map_shape(input_hw, cfg.local_level)
    above = keras.Input(shape=(h, w, cfg.decoder_filters()[cfg.local_level + 1]), name="decoder_map")
    encoded = keras.Input(shape=(h, w, int(cfg.filters[cfg.local_level])), name="encoder_map")
    c = int(cfg.local_channels)

    def stats(x, name):
        x = keras.layers.Conv2D(
            int(x.shape[-1]), 3, padding="same", activation=cfg.activation, name=f"{name}_hidden", dtype=dtype
        )(x)
        x = keras.layers.Conv2D(2 * c, 3, padding="same", name=f"{name}_stats", dtype="float32")(x)
        return [x[..., :c], x[..., c:]]

    prior = keras.Model(above, stats(above, "local_prior"), name="local_prior")
    both = keras.layers.Concatenate(name="local_posterior_input", dtype=dtype)([above, encoded])
    posterior = keras.Model([above, encoded], stats(both, "local_posterior"), name="local_posterior")
    return prior, posterior


PITCH_REF_HZ = 100.0  # the pitch head predicts log2(f0 / PITCH_REF_HZ)
PITCH_ERROR_OCTAVES = 0.1  # the f0 error whose squared-error term is 1/2 per voiced frame
PITCH_HIDDEN = 256  # units of each of the pitch head's two hidden layers


def build_pitch_decoder(n_frames: int, cfg: ModelConfig, mixed_precision: bool = False) -> keras.Model:
    """[z (, one-hot digit)] -> [n_frames, 2]: per frame log2(f0 / PITCH_REF_HZ) and the voicing logit."""
    dtype = _policy(mixed_precision)
    inputs = [keras.Input(shape=(cfg.latent_dim,), name="z")]
    x = inputs[0]
    if cfg.conditional:
        inputs.append(_digit_input())
        x = keras.layers.Concatenate(name="pitch_z_with_digit")(inputs)
    for i in range(2):
        x = keras.layers.Dense(PITCH_HIDDEN, activation=cfg.activation, name=f"pitch_dense_{i}", dtype=dtype)(x)
    x = keras.layers.Dense(2 * n_frames, name="pitch_out", dtype="float32")(x)
    x = keras.layers.Reshape((n_frames, 2), name="pitch_frames", dtype="float32")(x)
    return keras.Model(inputs if cfg.conditional else inputs[0], x, name="pitch_decoder")


def pitch_loss(predicted, f0):
    """Per clip: the voicing's cross-entropy plus, on voiced frames (f0 > 0), the squared log2-f0 error
    in units of :data:`PITCH_ERROR_OCTAVES`, halved; summed over frames."""
    f0 = tf.cast(f0, tf.float32)
    voiced = tf.cast(f0 > 0, tf.float32)
    target = tf.math.log(tf.maximum(f0, 1.0) / PITCH_REF_HZ) / math.log(2.0)
    error = (predicted[..., 0] - target) / PITCH_ERROR_OCTAVES
    voicing = tf.nn.sigmoid_cross_entropy_with_logits(labels=voiced, logits=predicted[..., 1])
    return tf.reduce_sum(voicing + 0.5 * voiced * tf.square(error), axis=-1)


def between_digit_share(mu, labels):
    """Per clip, its digit's share of the code's variance in the batch: the squared distance of the mean code
    of the batch's clips of its digit from the batch's mean code, in each dimension over that dimension's
    variance (held constant), averaged over dimensions. Its batch mean is the share of each dimension's
    variance the digits explain (0: the digits' mean codes coincide, as a linear probe would find them)."""
    onehot = tf.one_hot(labels, N_DIGITS, dtype=mu.dtype)
    counts = tf.maximum(tf.reduce_sum(onehot, axis=0), 1.0)
    digit_means = tf.matmul(onehot, mu, transpose_a=True) / counts[:, None]
    mean = tf.reduce_mean(mu, axis=0)
    variance = tf.stop_gradient(tf.reduce_mean(tf.square(mu - mean), axis=0)) + 1e-6
    return tf.reduce_mean(tf.square(tf.gather(digit_means, labels) - mean) / variance, axis=-1)


ERASER_MOMENTUM = 0.02  # the share of each training batch's digit means in the running ones


class DigitEraser(keras.layers.Layer):
    """Posterior means less the running mean code of their clip's digit: the last step of the encoder of a
    model with ``erase_digit``. Every digit's codes then have one mean, the prior's, so no linear probe reads
    the digit from a code (linear concept erasure: a code is linearly guarded exactly when the classes' means
    coincide, Belrose et al. 2023) and z ~ N(0, I) is where every digit's codes lie; and nothing is lost,
    as the decoder is given the digit whose mean was taken away. The means are running averages over the
    training batches (:meth:`update`), as BatchNormalization keeps its moments (all-reduced across replicas),
    weighted so that a digit a batch lacks keeps its mean, and set again at every checkpoint from the train
    split's codes as inference encodes them (:meth:`recentre`); stored with the weights."""

    def __init__(self, momentum: float = ERASER_MOMENTUM, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.momentum = float(momentum)

    def build(self, input_shape):
        def tracked(shape, name):
            return self.add_weight(
                shape=shape, initializer="zeros", trainable=False, name=name, aggregation="only_first_replica"
            )

        self.digit_sums = tracked((N_DIGITS, int(input_shape[-1])), "digit_sums")
        self.digit_weights = tracked((N_DIGITS,), "digit_weights")

    def call(self, mu, digits):
        return tf.cast(mu, tf.float32) - tf.gather(self.means(), tf.cast(digits, tf.int32))

    def means(self):
        """The running mean code of each digit [10, latent] (zeros for a digit never seen)."""
        weights = tf.convert_to_tensor(self.digit_weights)
        return tf.convert_to_tensor(self.digit_sums) / tf.maximum(weights, 1e-12)[:, None]

    def recentre(self, offsets) -> None:
        """Move every digit's mean code by ``offsets`` [10, latent] (the mean its codes still have)."""
        weights = self.digit_weights.numpy()
        self.digit_sums.assign((self.digit_sums.numpy() + np.asarray(offsets) * weights[:, None]).astype(np.float32))

    def update(self, mu, digits):
        """Move the digits' running mean codes towards those of a training batch's posterior means ``mu``."""
        onehot = tf.one_hot(tf.cast(digits, tf.int32), N_DIGITS, dtype=tf.float32)
        sums, counts = tf.matmul(onehot, tf.cast(mu, tf.float32), transpose_a=True), tf.reduce_sum(onehot, axis=0)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            sums, counts = context.all_reduce(tf.distribute.ReduceOp.SUM, [sums, counts])
        rate = self.momentum * tf.cast(counts > 0, tf.float32)
        means = sums / tf.maximum(counts, 1.0)[:, None]
        self.digit_sums.assign(self.digit_sums * (1.0 - rate[:, None]) + rate[:, None] * means)
        self.digit_weights.assign(self.digit_weights * (1.0 - rate) + rate)


ADVERSARY_HIDDEN = 128  # units of each of the digit adversary's two hidden layers


def build_digit_adversary(cfg: ModelConfig) -> keras.Model:
    """mu -> digit logits: the classifier that tries to read the digit from a conditional model's code."""
    x = inputs = keras.Input(shape=(cfg.latent_dim,), name="code")
    for i in range(2):
        x = keras.layers.Dense(ADVERSARY_HIDDEN, activation=cfg.activation, name=f"adversary_dense_{i}")(x)
    return keras.Model(inputs, keras.layers.Dense(N_DIGITS, name="adversary_logits")(x), name="digit_adversary")


def standardise(x):
    """Codes ``x`` [batch, latent], each dimension less its batch mean, over its batch standard deviation."""
    x = tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(x, axes=[0], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + 1e-6)


@tf.custom_gradient
def reverse_gradient(x):
    """The identity forward; the gradient's sign flipped backward (Ganin & Lempitsky 2015)."""
    return tf.identity(x), lambda dy: -dy


def _stats(mu, log_var):
    # A guard, not a model choice: a posterior std beyond e^3 (the prior's is 1) is never useful,
    # and an unbounded log-variance overflows exp() in the KL and the sample after a bad step.
    return tf.cast(mu, tf.float32), tf.clip_by_value(tf.cast(log_var, tf.float32), LOG_VAR_MIN, LOG_VAR_MAX)


def gaussian_kl(mu, log_var, prior_mu, prior_log_var):
    """KL(N(mu, e^log_var) || N(prior_mu, e^prior_log_var)) of diagonal Gaussians, summed over all but the batch axis."""
    terms = prior_log_var - log_var + (tf.exp(log_var) + tf.square(mu - prior_mu)) / tf.exp(prior_log_var) - 1.0
    return 0.5 * tf.reduce_sum(tf.reshape(terms, (tf.shape(terms)[0], -1)), axis=-1)


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
    """Encoder, decoder, prior and reconstruction term. ``per_example_losses`` is the negative ELBO
    per clip, which :class:`DistributedSteps` sums and divides by the global batch. ``loss_cfg``
    (the reconstruction term, KL samples): LossConfig's defaults when not given."""

    def __init__(
        self,
        input_hw: tuple[int, int],
        model_cfg: ModelConfig,
        prior_cfg: PriorConfig,
        loss_cfg: LossConfig | None = None,
        mixed_precision: bool = False,
        seed: int = 0,
        features: FeatureConfig | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.features = features
        height, width = input_hw
        self.input_hw = (int(height), int(width))
        self.model_cfg, self.prior_cfg, self.loss_cfg = model_cfg, prior_cfg, loss_cfg or LossConfig()
        self.encoder = build_encoder(self.input_hw, model_cfg, mixed_precision)
        if model_cfg.local_channels:
            self.decoder_above, self.decoder_below = build_local_decoder(self.input_hw, model_cfg, mixed_precision)
            self.local_prior, self.local_posterior = build_local_heads(self.input_hw, model_cfg, mixed_precision)
            self.prior_reconstruction = losses.build_reconstruction(self.loss_cfg, name="prior_reconstruction")
        else:
            self.decoder = build_decoder(self.input_hw, model_cfg, mixed_precision)
        if model_cfg.pitch:
            self.pitch_decoder = build_pitch_decoder(self.input_hw[1], model_cfg, mixed_precision)
        if self.loss_cfg.digit_adversary > 0:
            self.adversary = build_digit_adversary(model_cfg)
        if model_cfg.erase_digit:
            self.eraser = DigitEraser(name="digit_eraser")
            self.eraser.build((None, model_cfg.latent_dim))
        self.prior = build_prior(prior_cfg, model_cfg.latent_dim)
        self.reconstruction = losses.build_reconstruction(self.loss_cfg)
        self.sampling = Sampling(seed, name="sampling")

    def conv_layers(self) -> list:
        """The layers of the encoder and of the decoder's parts."""
        parts = (
            ("decoder_above", "decoder_below", "local_prior", "local_posterior")
            if self.model_cfg.local_channels
            else ("decoder",)
        )
        return self.encoder.layers + [layer for part in parts for layer in getattr(self, part).layers]

    @property
    def renderer(self) -> keras.Model:
        """The part of the decoder that draws the spectrogram: all of it, or, for a model with a local code, the
        part below that code (the local code's prior and posterior read the part above)."""
        return self.decoder_below if self.model_cfg.local_channels else self.decoder

    @property
    def uses_digits(self) -> bool:
        """Whether training needs each clip's digit (a conditional model or a digit-tied prior)."""
        return bool(self.model_cfg.conditional or self.prior.uses_digits)

    def build_all(self) -> VAE:
        """Create every variable (a zero batch through the model) so weights can be saved and loaded."""
        x = tf.zeros((1, *self.input_hw, 1))
        eps = tf.zeros((self.loss_cfg.kl_samples, 1, self.model_cfg.noise_dim(self.input_hw)))
        self.per_example_losses(x, tf.zeros((1,), tf.int32), eps=eps, f0=tf.zeros((1, self.input_hw[1])), draw=False)
        self.built = True
        return self

    @staticmethod
    def _as_image(x):
        x = tf.convert_to_tensor(x)
        return x[..., None] if x.shape.rank == 3 else x

    def _with_digits(self, first, digits):
        if not self.model_cfg.conditional:
            return first
        if digits is None:
            raise ValueError("a conditional model needs the digit of every clip")
        return [first, tf.one_hot(tf.cast(digits, tf.int32), N_DIGITS)]

    def encode(self, x, digits=None, training: bool = False):
        return self._encode(x, digits, training)[:2]

    def _encode(self, x, digits, training):
        """(mu, log_var, the encoder's map for the local code or None); with ``erase_digit``, mu less its digit's
        mean code (a training pass first moves those means towards the batch's)."""
        out = self.encoder(self._with_digits(self._as_image(x), digits), training=training)
        mu, log_var = _stats(out[0], out[1])
        if self.model_cfg.erase_digit:
            if training:
                self.eraser.update(mu, digits)
            mu = self.eraser(mu, digits)
        return mu, log_var, out[2] if self.model_cfg.local_channels else None

    def decode(self, z, digits=None, training: bool = False, local_noise=None, temperature: float = 1.0):
        """The decoder's spectrogram of codes ``z``. A model with a local code decodes it drawn from its prior
        given ``z``: the prior's mean plus ``temperature`` times its spread times ``local_noise``
        [batch, *local_shape] (none: the mean)."""
        z = self._with_digits(tf.convert_to_tensor(z), digits)
        if not self.model_cfg.local_channels:
            return self.decoder(z, training=training)
        above = self.decoder_above(z, training=training)
        mu, log_var = _stats(*self.local_prior(above, training=training))
        local = (
            mu if local_noise is None else mu + temperature * tf.exp(0.5 * log_var) * tf.cast(local_noise, tf.float32)
        )
        return self._decode_below(above, local, training)

    def _decode_below(self, above, local, training):
        return self.decoder_below(tf.concat([above, tf.cast(local, above.dtype)], axis=-1), training=training)

    def reconstruct(self, x, digits=None, training: bool = False):
        """Deterministic reconstruction: the posterior means of the code (and of the local code)."""
        return self.reconstruct_with_code(x, digits, training)[0]

    def reconstruct_with_code(self, x, digits=None, training: bool = False):
        """(:meth:`reconstruct`'s output, the code's posterior mean it decoded)."""
        mu, _, features = self._encode(x, digits, training)
        if not self.model_cfg.local_channels:
            return self.decode(mu, digits, training=training), mu
        above = self.decoder_above(self._with_digits(mu, digits), training=training)
        local = self.local_posterior([above, features], training=training)[0]
        return self._decode_below(above, local, training), mu

    def decode_pitch(self, z, digits=None, training: bool = False):
        """(f0 in Hz, probability that the frame is voiced), each [batch, n_frames], of a model with ``pitch``."""
        out = self.pitch_decoder(self._with_digits(tf.convert_to_tensor(z), digits), training=training)
        return PITCH_REF_HZ * tf.pow(2.0, out[..., 0]), tf.sigmoid(out[..., 1])

    def draw_harmonics(self, x_hat, f0, depth_db: float = HARMONIC_DEPTH_DB):
        """``x_hat`` [batch, n_bins, n_frames, 1] with the harmonics of ``f0`` [batch, n_frames] drawn in
        ``depth_db`` deep, as :func:`vae.harmonics.impose_harmonics` draws them (the features' dB width; clipped
        to [0, 1])."""
        import tensorflow.experimental.numpy as tnp

        if self.features is None or f0 is None:
            raise ValueError("drawing harmonics needs the model's FeatureConfig and the clips' f0 tracks")
        width = self.features.db_ceiling - self.features.db_floor
        offsets = comb_db(tf.cast(f0, tf.float32), self.features, depth_db, xp=tnp) / width
        return tf.clip_by_value(tf.cast(x_hat, tf.float32) + offsets[..., None], 0.0, 1.0)

    def call(self, x, digits=None, training: bool = False):
        return self.reconstruct(x, digits, training=training)

    def adversary_terms(self, mu, digits) -> tuple[tf.Tensor, tf.Tensor]:
        """Per clip: (the digit adversary's cross-entropy reading the digit from ``mu``, the term training adds
        times ``digit_adversary``); zeros for a model without one.

        ``reverse``: that cross-entropy through a reversed gradient (the adversary descends it, the encoder
        ascends it). ``confuse``: the adversary descends its cross-entropy on a code it cannot change, and
        the encoder descends the cross-entropy between the uniform distribution and the prediction of an
        adversary it cannot change: it is pushed to a code on which every digit looks equally likely, not
        to one that makes the adversary confidently wrong. ``moments``: no game; the encoder descends
        :func:`between_digit_share`, and the adversary only watches (its cross-entropy is ``digit_ce``).
        With ``adversary_standardise`` all of it reads the codes as :func:`standardise` makes them."""
        if self.loss_cfg.digit_adversary <= 0:
            zeros = tf.zeros_like(mu[:, 0])
            return zeros, zeros
        labels = tf.cast(digits, tf.int32)
        if self.loss_cfg.adversary_standardise:
            mu = standardise(mu)
        if self.loss_cfg.adversary_kind == "reverse":
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, self.adversary(reverse_gradient(mu)))
            return ce, ce
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, self.adversary(tf.stop_gradient(mu)))
        if self.loss_cfg.adversary_kind == "moments":
            return ce, ce + between_digit_share(tf.cast(mu, tf.float32), labels)
        confusion = -tf.reduce_mean(tf.nn.log_softmax(self._frozen_adversary(mu)), axis=-1)
        return ce, ce + confusion

    def _frozen_adversary(self, x):
        """The adversary's logits of ``x`` with its weights held constant (gradients reach ``x`` only)."""
        for layer in self.adversary.layers[1:]:
            x = tf.matmul(x, tf.stop_gradient(layer.kernel)) + tf.stop_gradient(layer.bias)
            x = layer.activation(x)
        return x

    def per_example_losses(
        self, x, digits=None, eps=None, training: bool = True, kl_weight=1.0, f0=None, draw: bool = True
    ) -> dict[str, tf.Tensor]:
        """loss, recon, kl, recon_mse, digit_ce and adversary, each of shape [batch]; eps: [kl_samples, batch, latent]
        or None; f0: [batch, n_frames] pitch tracks in Hz (0: unvoiced), which a model with ``pitch`` needs.

        loss = recon + kl_weight * kl: the negative ELBO when kl_weight is 1 (KL warm-up lowers it); a
        model with ``pitch`` reconstructs the track too, its :func:`pitch_loss` weighted into ``recon``.
        Training minimises loss + ``digit_adversary`` * adversary (:meth:`adversary_terms`).
        ``draw=False`` scores the decoder's output undrawn even with ``through_harmonics`` (to build the
        variables of a model that has no FeatureConfig to draw with)."""
        x = self._as_image(x)
        mu, log_var, features = self._encode(x, digits, training)
        latent = self.model_cfg.latent_dim
        z = self.sampling(mu, log_var, None if eps is None else eps[..., :latent], samples=self.loss_cfg.kl_samples)
        local_kl = prior_recon = tf.zeros_like(mu[:, 0])
        if self.model_cfg.local_channels:
            above = self.decoder_above(self._with_digits(z[0], digits), training=training)
            prior_mu, prior_log_var = _stats(*self.local_prior(above, training=training))
            post_mu, post_log_var = _stats(*self.local_posterior([above, features], training=training))
            local_eps = None if eps is None else tf.reshape(eps[0, :, latent:], tf.shape(post_mu))
            local = self.sampling(post_mu, post_log_var, None if local_eps is None else local_eps[None])[0]
            local_kl = gaussian_kl(post_mu, post_log_var, prior_mu, prior_log_var)
            x_hat = self._decode_below(above, local, training)
            prior_recon = self.prior_reconstruction(
                x, self._drawn(self._decode_below(above, prior_mu, training), f0, draw)
            )
        else:
            x_hat = self.decode(z[0], digits, training=training)
        x_hat = self._drawn(x_hat, f0, draw)
        recon = self.reconstruction(x, x_hat)
        if self.model_cfg.pitch:
            if f0 is None:
                raise ValueError("a model with ModelConfig.pitch needs the pitch track (f0) of every clip")
            predicted = self.pitch_decoder(self._with_digits(z[0], digits), training=training)
            recon = recon + self.loss_cfg.pitch_weight * pitch_loss(predicted, f0)
        kl = self.prior.kl(mu, log_var, z, digits) + local_kl
        digit_ce, adversary = self.adversary_terms(mu, digits)
        return {
            "loss": recon + kl_weight * kl,
            "recon": recon,
            "kl": kl,
            "recon_mse": losses.per_example_mse(x, x_hat),
            "digit_ce": digit_ce,
            "adversary": adversary,
            "prior_recon": prior_recon,
        }

    def _drawn(self, x_hat, f0, draw: bool):
        """``x_hat`` as training scores it: with the clips' harmonics drawn in for a loss ``through_harmonics``."""
        if draw and self.model_cfg.pitch and self.loss_cfg.through_harmonics:
            return self.draw_harmonics(x_hat, f0)
        return x_hat

    def objective(self, terms) -> tf.Tensor:
        """Per clip, what training minimises: the negative ELBO and the terms added to it at their weights."""
        cfg = self.loss_cfg
        return terms["loss"] + cfg.digit_adversary * terms["adversary"] + cfg.local_prior_weight * terms["prior_recon"]


TERMS = ("loss", "recon", "kl", "recon_mse", "digit_ce", "prior_recon")


def _is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class DistributedSteps:
    """The compiled steps one worker runs under a ``tf.distribute`` strategy (the default one in a
    single process): each returns per-term SUMS over its replica's clips, in :data:`TERMS` order.

    ``train``: loss summed over the replica's clips / the GLOBAL batch size, gradients all-reduced
    by the optimizer inside ``strategy.run``, so N workers x batch B take the step of one worker x N*B.

    ``clip_norm``: the most the global norm of that all-reduced gradient (loss scale removed) may be;
    a larger one is scaled down to it before the optimizer sees it (0: never). ``train`` also returns
    the norm before clipping. Clipping needs the summed gradient first, so with several replicas it
    costs one more all-reduce; without clipping there the norm is not computed (``computes_norm``)
    and comes back NaN. A step whose norm is not finite is scaled by 0 when clipping: finite
    gradients become a step of zero, non-finite ones stay NaN (a loss-scale optimizer skips those).

    ``fused_norm``: the BatchNorm layers' training pass through the fused kernel on one replica (:class:`BatchNormalization`).

    ``jit_compile``: XLA-compile the steps. Only without cross-worker collectives (one worker, or a
    single process): XLA on CPU cannot compile the all-reduce of gradients and of synchronised
    BatchNorm statistics, so under a multi-worker strategy the steps stay plain graphs.
    """

    def __init__(
        self,
        model: VAE,
        optimizer,
        global_batch: int,
        strategy=None,
        jit_compile: bool = False,
        clip_norm: float = 0.0,
        fused_norm: bool = True,
    ):
        self.model, self.optimizer, self.global_batch = model, optimizer, int(global_batch)
        self.clip_norm = float(clip_norm)
        for layer in model.conv_layers():
            if isinstance(layer, BatchNormalization):
                layer.fused = fused_norm
        self.strategy = strategy or tf.distribute.get_strategy()
        self.computes_norm = self.strategy.num_replicas_in_sync == 1 or self.clip_norm > 0
        jit = bool(jit_compile) and self.strategy.num_replicas_in_sync == 1 and not _is_multi_worker(self.strategy)
        self.jit_compile = jit
        h, w = model.input_hw
        x = tf.TensorSpec([None, h, w], tf.float32)
        digits = tf.TensorSpec([None], tf.int32)
        eps = tf.TensorSpec([model.loss_cfg.kl_samples, None, model.model_cfg.noise_dim(model.input_hw)], tf.float32)
        scalar = tf.TensorSpec([], tf.float32)
        f0 = tf.TensorSpec([None, w], tf.float32)
        self.train_graph = tf.function(self._train, input_signature=[x, digits, eps, scalar, f0], jit_compile=jit)
        self.evaluate_graph = tf.function(self._evaluate, input_signature=[x, digits, eps, f0], jit_compile=jit)
        self.encode = tf.function(self._encode, input_signature=[x, digits], jit_compile=jit)
        # One trace for every length: what the workers sum (vae.worker.pack) differs in size from call to call.
        self.all_reduce = tf.function(self._all_reduce, input_signature=[tf.TensorSpec([None], tf.float64)])

    def _f0(self, x, f0):
        return np.zeros((len(x), self.model.input_hw[1]), np.float32) if f0 is None else f0

    def train(self, x, digits, eps, kl_weight, f0=None):
        """One step on a batch (``f0``: its pitch tracks, for a model with ``pitch``): (term sums, gradient norm)."""
        return self.train_graph(x, digits, eps, kl_weight, self._f0(x, f0))

    def evaluate(self, x, digits, eps, f0=None):
        """Term sums of a batch, without training."""
        return self.evaluate_graph(x, digits, eps, self._f0(x, f0))

    @staticmethod
    def _sums(terms):
        return tf.stack([tf.reduce_sum(terms[key]) for key in TERMS])

    def _train(self, x, digits, eps, kl_weight, f0):
        model, optimizer = self.model, self.optimizer

        def replica_step(x, digits, eps, kl_weight, f0):
            with tf.GradientTape() as tape:
                terms = model.per_example_losses(x, digits, eps, training=True, kl_weight=kl_weight, f0=f0)
                loss = tf.reduce_sum(model.objective(terms)) / self.global_batch
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            grads, norm = self._clip(grads, optimizer.scale_loss(tf.constant(1.0)))
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return self._sums(terms), norm

        per_replica = self.strategy.run(replica_step, args=(x, digits, eps, kl_weight, f0))
        return tf.nest.map_structure(lambda v: self.strategy.experimental_local_results(v)[0], per_replica)

    def _clip(self, grads, loss_scale):
        """(gradients to apply, the global norm of the whole batch's gradient): see the class docstring."""
        if not self.computes_norm:
            return grads, tf.constant(float("nan"))
        replicas = self.strategy.num_replicas_in_sync
        total = grads
        if replicas > 1:
            total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        norm = tf.linalg.global_norm(total) / tf.cast(loss_scale, tf.float32)
        if not self.clip_norm:
            return grads, norm
        # The optimizer all-reduces what it is given, so each replica hands it 1/replicas of the sum.
        factor = tf.minimum(1.0, self.clip_norm / norm) / replicas
        return [_scaled(g, factor) for g in total], norm

    def _evaluate(self, x, digits, eps, f0):
        return self._sums(self.model.per_example_losses(x, digits, eps, training=False, f0=f0))

    def _encode(self, x, digits):
        return self.model.encode(x, digits, training=False)[0]

    def _all_reduce(self, v):
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(tf.identity, args=(v,)), axis=None)


def _scaled(grad, factor):
    """``grad * factor``, keeping a sparse gradient (an embedding-like gather's) sparse; None stays None."""
    if grad is None:
        return None
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(grad.values * tf.cast(factor, grad.dtype), grad.indices, grad.dense_shape)
    return grad * tf.cast(factor, grad.dtype)


def build_vae(
    input_hw,
    model_cfg: ModelConfig,
    prior_cfg: PriorConfig,
    loss_cfg: LossConfig | None = None,
    mixed_precision: bool = False,
    seed: int = 0,
    features: FeatureConfig | None = None,
) -> VAE:
    """The VAE, every variable created. ``features`` (the data's) are needed by a loss ``through_harmonics``."""
    return VAE(
        tuple(input_hw),
        model_cfg,
        prior_cfg,
        loss_cfg,
        mixed_precision=mixed_precision,
        seed=seed,
        features=features,
        name="vae",
    ).build_all()


# --------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class LayerCost:
    name: str
    output_shape: tuple[int, ...]
    macs: int


def layer_costs(input_hw: tuple[int, int], cfg: ModelConfig) -> list[LayerCost]:
    """Multiply-accumulates per clip of every conv/dense layer of one forward pass (encoder, decoder and
    pitch head).

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
    label = N_DIGITS if cfg.conditional else 0  # the one-hot digit beside the features and beside z
    out.append(LayerCost("mu", (cfg.latent_dim,), (flat + label) * cfg.latent_dim))
    out.append(LayerCost("log_variance", (cfg.latent_dim,), (flat + label) * cfg.latent_dim))
    out.append(LayerCost("decoder_dense", (flat,), (cfg.latent_dim + label) * flat))
    channels = cfg.decoder_filters()
    for i in list(reversed(range(1, len(cfg.filters)))) + [0]:
        c_out = int(cfg.refine_channels) if i == 0 and cfg.refine else channels[i]
        k = int(cfg.kernels[i])
        macs = h * w * k * k * c * c_out
        h, w = h * strides[i][0], w * strides[i][1]
        out.append(LayerCost(f"decoder_conv_t_{i}" if i > 0 or cfg.refine else "decoder_output", (h, w, c_out), macs))
        c = c_out
        if cfg.local_channels and i == cfg.local_level + 1:
            h, w = cfg.map_shape(input_hw, cfg.local_level)
            out += _local_costs(h, w, c, int(cfg.filters[cfg.local_level]), int(cfg.local_channels))
            c += int(cfg.local_channels)
    if cfg.refine:
        for j in range(int(cfg.refine)):
            out.append(LayerCost(f"decoder_refine_{j}", (h, w, c), h * w * 9 * c * c))
        out.append(LayerCost("decoder_output", (h, w, 1), h * w * c))
    if cfg.pitch:
        frames = input_hw[1]
        out.append(LayerCost("pitch_dense_0", (PITCH_HIDDEN,), (cfg.latent_dim + label) * PITCH_HIDDEN))
        out.append(LayerCost("pitch_dense_1", (PITCH_HIDDEN,), PITCH_HIDDEN * PITCH_HIDDEN))
        out.append(LayerCost("pitch_out", (2 * frames,), PITCH_HIDDEN * 2 * frames))
    return out


def _local_costs(h: int, w: int, above: int, encoded: int, local: int) -> list[LayerCost]:
    """The local code's prior (on the decoder's map) and posterior (on it and the encoder's): 3x3 convs."""
    both = above + encoded
    return [
        LayerCost("local_prior_hidden", (h, w, above), h * w * 9 * above * above),
        LayerCost("local_prior_stats", (h, w, 2 * local), h * w * 9 * above * 2 * local),
        LayerCost("local_posterior_hidden", (h, w, both), h * w * 9 * both * both),
        LayerCost("local_posterior_stats", (h, w, 2 * local), h * w * 9 * both * 2 * local),
    ]


def flops_per_clip(input_hw: tuple[int, int], cfg: ModelConfig) -> int:
    """Forward-pass FLOPs per clip (2 per multiply-accumulate); a training step costs about 3x this."""
    return 2 * sum(layer.macs for layer in layer_costs(input_hw, cfg))
