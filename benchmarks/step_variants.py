"""Where the `default` train step's time goes on CPU: the same step with its BatchNorm layers built
other ways, timed in one process in interleaved rounds (shared cores drift by +-20% between runs).

    python -m benchmarks.step_variants [--batch 32] [--rounds 6] [--steps 10]

Variants (all of the `default` model, conditional, calibrated loss, batch 32, XLA off):

- ``today``: the model as built (``vae.models.BatchNormalization``: synchronised, after each ReLU, through
  TensorFlow's fused kernel on one replica);
- ``keras``: Keras' own synchronised BatchNormalization, the layer before (its moments as a dozen
  separate ops: sums of x, of x^2 and of a tensor of ones);
- ``one_pass``: the same maths with a hand-written gradient (statistics in one pass; the backward
  pass as two reductions and one update of the input's size);
- ``no_bn_on_top``: no BatchNorm on the two largest maps (first encoder layer, last hidden decoder
  layer): a different model;
- ``no_bn``: ``ModelConfig.normalisation="none"``: a different model.

The first three are the same model, weights and maths (``--check`` compares today's layer and the
one-pass one with Keras': outputs, gradients and moving statistics); the last two say what dropping
normalisation, a different model, would buy. Prints clips/s per variant (median over rounds, with the range) and the ratio to
the first variant; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np

VARIANTS = ("today", "keras", "one_pass", "no_bn_on_top", "no_bn")
TOP_MAPS = ("encoder_0", "decoder_1")


def batch_norm_layers():
    """Keras' BatchNormalization, and two layers with its weights and maths computed another way in training."""
    import keras
    import tensorflow as tf

    from vae import models

    class OnePass(keras.layers.BatchNormalization):
        def call(self, x, training=None, mask=None):
            if not training:
                return super().call(x, training=False)
            eps, axes = self.epsilon, [0, 1, 2]

            @tf.custom_gradient
            def normalise(x, gamma, beta):
                n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), x.dtype)
                mean = tf.reduce_sum(x, axes) / n
                var = tf.maximum(tf.reduce_sum(tf.square(x), axes) / n - tf.square(mean), 0.0)
                inv = tf.math.rsqrt(var + eps)
                scale = inv * gamma

                def grad(dy, dmean, dvar):
                    sum_dy = tf.reduce_sum(dy, axes)
                    sum_dy_xhat = (tf.reduce_sum(dy * x, axes) - mean * sum_dy) * inv
                    k = -scale * inv * sum_dy_xhat / n + 2.0 * dvar / n
                    c = -scale * sum_dy / n - k * mean + dmean / n
                    return dy * scale + (x * k + c), sum_dy_xhat, sum_dy

                return (x * scale + (beta - mean * scale), mean, var), grad

            y, mean, var = normalise(x, tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta))
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + var * (1 - self.momentum))
            return y

    return {"keras": keras.layers.BatchNormalization, "today": models.BatchNormalization, "one_pass": OnePass}


def check_layers() -> dict[str, float]:
    """Largest difference from Keras' layer (training outputs, input/scale/offset gradients, moving
    statistics, inference outputs) of each other layer, on one random batch."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((4, 6, 5, 3)).astype(np.float32) * 2 + 1)
    upstream = tf.constant(rng.standard_normal((4, 6, 5, 3)).astype(np.float32))
    results = {}
    for name, cls in batch_norm_layers().items():
        layer = cls(synchronized=True)
        layer.build(x.shape)
        layer.gamma.assign([1.5, 0.5, 2.0])
        layer.beta.assign([0.1, -0.2, 0.3])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results[name] = [
            np.asarray(v) for v in (y, *grads, layer.moving_mean, layer.moving_variance, layer(x, training=False))
        ]
    return {
        name: max(float(np.max(np.abs(a - b))) for a, b in zip(values, results["keras"]))
        for name, values in results.items()
        if name != "keras"
    }


def build_steps(variant: str, batch: int):
    import keras

    import vae.models as models
    from vae.config import FeatureConfig, LossConfig, ModelConfig, PriorConfig, preset

    features = preset(FeatureConfig, "default")
    hw = features.shape
    cfg = preset(ModelConfig, "default")
    if variant == "no_bn":
        cfg = replace(cfg, normalisation="none")
    layers = batch_norm_layers()
    built = models._norm_act

    def norm_act(x, cfg, name, dtype):
        if variant == "no_bn_on_top" and name in TOP_MAPS:
            return keras.layers.Activation(cfg.activation, name=f"{name}_act", dtype=dtype)(x)
        if variant in layers:
            x = keras.layers.Activation(cfg.activation, name=f"{name}_act", dtype=dtype)(x)
            return layers[variant](synchronized=True, name=f"{name}_bn", dtype=dtype)(x)
        return built(x, cfg, name, dtype)

    models._norm_act = norm_act
    try:
        model = models.build_vae(hw, cfg, PriorConfig(), LossConfig(), features=features)
    finally:
        models._norm_act = built
    return models.DistributedSteps(model, keras.optimizers.Adam(1e-3), batch), hw, cfg.latent_dim


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--check", action="store_true", help="only compare the layers with Keras' and exit")
    args = p.parse_args()
    if args.check:
        print(json.dumps({"max_abs_difference_from_keras": check_layers()}))
        return

    import tensorflow as tf

    rng = np.random.default_rng(0)
    runs = {}
    for variant in args.variants:
        steps, hw, latent = build_steps(variant, args.batch)
        batch = (
            tf.constant(rng.random((args.batch, *hw), dtype=np.float32)),
            tf.constant(rng.integers(0, 10, args.batch), tf.int32),
            tf.constant(rng.standard_normal((1, args.batch, latent), dtype=np.float32)),
            tf.constant(1.0),
        )
        for _ in range(3):  # tracing and warm-up
            steps.train(*batch)[0].numpy()
        runs[variant] = (steps, batch)
    rates = {v: [] for v in runs}
    for _ in range(args.rounds):
        for variant, (steps, batch) in runs.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                out = steps.train(*batch)
            out[0].numpy()
            rates[variant].append(args.steps * args.batch / (time.perf_counter() - t0))
    base = float(np.median(rates[args.variants[0]]))
    rows = []
    print(f"{'variant':<14} {'clips/s':>8} {'range':>12} {'x ' + args.variants[0]:>10}")
    for variant, r in rates.items():
        med = float(np.median(r))
        rows.append(
            {
                "variant": variant,
                "clips_per_s": round(med, 1),
                "min": round(min(r), 1),
                "max": round(max(r), 1),
                "ratio": round(med / base, 3),
            }
        )
        print(f"{variant:<14} {med:8.1f} {min(r):5.0f}-{max(r):<6.0f} {med / base:10.2f}")
    print(json.dumps({"batch": args.batch, "rounds": args.rounds, "rows": rows}))


if __name__ == "__main__":
    main()
