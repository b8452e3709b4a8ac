"""Model construction from configs, analytic cost, and checkpoint round trips (local and S3)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf
from in_process import train_in_process

from vae import checkpoint, storage
from vae.config import ConfigError, FeatureConfig, LossConfig, ModelConfig, PriorConfig, RunConfig, TrainConfig, preset
from vae.models import TERMS, DistributedSteps, build_vae, flops_per_clip, layer_costs, reverse_gradient
from vae.worker import make_optimizer


@pytest.mark.parametrize("features,model", [("default", "default"), ("default", "tiny"), ("seed", "seed")])
def test_presets_build_for_the_feature_shape(features, model):
    shape = preset(FeatureConfig, features).shape
    cfg = preset(ModelConfig, model)
    vae = build_vae(shape, cfg, PriorConfig())

    x = np.random.default_rng(0).uniform(size=(2, *shape)).astype(np.float32)
    digits = np.array([0, 7]) if cfg.conditional else None
    mu, log_var = vae.encode(x, digits)
    out = vae(x, digits)

    assert mu.shape == log_var.shape == (2, cfg.latent_dim)
    assert out.shape == (2, *shape, 1)
    assert np.all((out.numpy() >= 0) & (out.numpy() <= 1))


def test_seed_preset_is_the_original_architecture():
    vae = build_vae(preset(FeatureConfig, "seed").shape, preset(ModelConfig, "seed"), PriorConfig())
    enc = [layer for layer in vae.encoder.layers if layer.name.startswith("encoder_conv")]
    dec = [layer for layer in vae.decoder.layers if "conv_t" in layer.name or layer.name == "decoder_output"]

    assert vae.encoder.input.shape[1:] == (256, 64, 1)
    assert [layer.filters for layer in enc] == [512, 256, 128, 64, 32]
    assert [tuple(layer.strides) for layer in enc] == [(2, 2)] * 4 + [(2, 1)]
    assert [layer.filters for layer in dec] == [32, 64, 128, 256, 1]
    assert [tuple(layer.strides) for layer in dec] == [(2, 1)] + [(2, 2)] * 4
    assert vae.decoder.layers[-1].activation.__name__ == "sigmoid"
    assert vae.encoder.output[0].shape[-1] == 128


def _macs_from_keras(vae) -> int:
    total = 0
    heads = vae.pitch_decoder.layers if vae.model_cfg.pitch else []
    for layer in vae.conv_layers() + heads:
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, h, w, c_out = layer.output.shape
            k1, k2, c_in, _ = layer.kernel.shape
            total += h * w * k1 * k2 * c_in * c_out
        elif kind == "Conv2DTranspose":
            _, h, w, c_in = layer.input.shape
            k1, k2, c_out, _ = layer.kernel.shape
            total += h * w * k1 * k2 * c_in * c_out
        elif kind == "Dense":
            total += int(np.prod(layer.kernel.shape))
    return total


@pytest.mark.parametrize(
    "features,model,decoder_width,refine",
    [
        ("default", "default", 1.0, 0),
        ("default", "default", 0.5, 0),
        ("default", "default", 0.5, 2),
        ("default", "tiny", 1.0, 0),
        ("default", "tiny", 1.0, 1),
        ("seed", "seed", 1.0, 0),
        ("default", "default", 0.5, {"local_channels": 4}),
        ("default", "default", 0.5, {"local_channels": 2, "local_level": 0, "refine": 1}),
        ("seed", "seed", 1.0, {"local_channels": 3, "local_level": 3}),
    ],
)
def test_analytic_cost_matches_the_built_keras_model(features, model, decoder_width, refine):
    shape = preset(FeatureConfig, features).shape
    more = refine if isinstance(refine, dict) else {"refine": refine}
    cfg = replace(preset(ModelConfig, model), decoder_width=decoder_width, **more)
    vae = build_vae(shape, cfg, PriorConfig())
    assert sum(layer.macs for layer in layer_costs(shape, cfg)) == _macs_from_keras(vae)
    assert flops_per_clip(shape, cfg) == 2 * _macs_from_keras(vae)


def test_decoder_width_scales_the_decoder_maps_and_nothing_else():
    cfg = ModelConfig(filters=(16, 32, 64, 128), decoder_width=0.5).validate()
    vae = build_vae(preset(FeatureConfig, "default").shape, cfg, PriorConfig())
    assert [vae.decoder.get_layer(f"decoder_conv_t_{i}").filters for i in (3, 2, 1)] == [64, 32, 16]
    assert [vae.encoder.get_layer(f"encoder_conv_{i}").filters for i in range(4)] == [16, 32, 64, 128]
    assert vae.decoder.get_layer("decoder_output").filters == 1
    with pytest.raises(ConfigError, match="decoder_width"):
        ModelConfig(decoder_width=0.0).validate()


def test_refine_adds_full_resolution_layers_before_the_output():
    shape = preset(FeatureConfig, "default").shape
    cfg = ModelConfig(refine=2, refine_channels=8).validate()
    decoder = build_vae(shape, cfg, PriorConfig()).decoder
    assert decoder.get_layer("decoder_conv_t_0").filters == 8
    assert [decoder.get_layer(f"decoder_refine_{j}").output.shape[1:] for j in (0, 1)] == [(*shape, 8)] * 2
    assert decoder.get_layer("decoder_output").kernel.shape == (1, 1, 8, 1)
    assert decoder.output.shape[1:] == (*shape, 1)
    plain = build_vae(shape, ModelConfig(), PriorConfig()).decoder
    assert not any(layer.name.startswith("decoder_refine") for layer in plain.layers)
    for bad in (dict(refine=-1), dict(refine=1.5), dict(refine_channels=0)):
        with pytest.raises(ConfigError, match="ModelConfig.refine"):
            ModelConfig(**bad).validate()


def test_default_costs_at_most_a_tenth_of_seed():
    seed = flops_per_clip(preset(FeatureConfig, "seed").shape, preset(ModelConfig, "seed"))
    default = flops_per_clip(preset(FeatureConfig, "default").shape, preset(ModelConfig, "default"))
    assert default <= seed / 10, (default, seed)


def test_input_sizes_not_divisible_by_the_strides_are_cropped_back():
    cfg = ModelConfig(filters=(4, 8), kernels=(3, 3), strides=(2, (2, 3)), latent_dim=3, conditional=False).validate()
    vae = build_vae((30, 25), cfg, PriorConfig())
    assert vae(np.zeros((1, 30, 25), np.float32)).shape == (1, 30, 25, 1)


def test_per_example_losses_are_per_clip_and_add_up():
    shape = preset(FeatureConfig, "default").shape
    vae = build_vae(
        shape, preset(ModelConfig, "tiny"), PriorConfig(), LossConfig(reconstruction="mse", recon_weight=10.0)
    )
    x = np.random.default_rng(0).uniform(size=(3, *shape)).astype(np.float32)
    terms = vae.per_example_losses(x, eps=np.zeros((1, 3, 4), np.float32), training=False, kl_weight=0.5)
    assert {k: v.shape for k, v in terms.items()} == {k: (3,) for k in (*TERMS, "adversary")}
    np.testing.assert_allclose(terms["loss"], terms["recon"] + 0.5 * terms["kl"], rtol=1e-6)
    np.testing.assert_allclose(terms["recon"], 10.0 * terms["recon_mse"].numpy(), rtol=1e-6)


def _sgd_step(
    clip_norm: float, mixed_precision: bool = False, jit_compile: bool = False, prior: str = "normal"
) -> tuple[float, float]:
    """One plain-SGD step (lr 1, so the update is the applied gradient) of a freshly seeded tiny model:
    (the norm the step reports, the norm of the update it made)."""
    import keras

    from vae.models import DistributedSteps

    shape = preset(FeatureConfig, "default").shape
    keras.utils.set_random_seed(0)
    vae = build_vae(shape, preset(ModelConfig, "tiny"), PriorConfig(kind=prior), mixed_precision=mixed_precision)
    optimizer = keras.optimizers.SGD(1.0)
    if mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=8.0)  # 2^15 overflows float16 here
    optimizer.build(vae.trainable_variables)
    before = [w.numpy().copy() for w in vae.trainable_variables]
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, *shape)).astype(np.float32)
    eps = rng.standard_normal((1, 4, vae.model_cfg.latent_dim)).astype(np.float32)
    sums, norm = DistributedSteps(vae, optimizer, 4, clip_norm=clip_norm, jit_compile=jit_compile).train(
        x, np.arange(4, dtype=np.int32), eps, np.float32(1.0)
    )
    update = np.sqrt(sum(np.sum((w.numpy() - b) ** 2) for w, b in zip(vae.trainable_variables, before)))
    assert np.all(np.isfinite(sums.numpy()))
    return float(norm), float(update)


@pytest.mark.parametrize(
    "jit_compile,prior", [(False, "normal"), (True, "normal"), (False, "tied")], ids=["graph", "xla", "tied-prior"]
)
def test_a_gradient_over_clip_norm_is_scaled_down_to_it_and_one_under_it_is_untouched(jit_compile, prior):
    """The tied prior's means are gathered by digit: their gradient is sparse (IndexedSlices)."""
    norm, update = _sgd_step(clip_norm=0.0, jit_compile=jit_compile, prior=prior)
    assert norm > 0
    np.testing.assert_allclose(update, norm, rtol=1e-4)

    clipped_norm, clipped_update = _sgd_step(clip_norm=norm / 10, jit_compile=jit_compile, prior=prior)
    np.testing.assert_allclose(clipped_norm, norm, rtol=1e-4)  # reported before clipping
    np.testing.assert_allclose(clipped_update, norm / 10, rtol=1e-4)

    _, loose_update = _sgd_step(clip_norm=norm * 10, jit_compile=jit_compile, prior=prior)
    np.testing.assert_allclose(loose_update, update, rtol=1e-6)


def test_clipping_sees_the_gradient_without_the_mixed_precision_loss_scale():
    norm, update = _sgd_step(clip_norm=0.0, mixed_precision=True)
    np.testing.assert_allclose(update, norm, rtol=1e-3)  # the loss scale is in neither

    clipped_norm, clipped_update = _sgd_step(clip_norm=norm / 10, mixed_precision=True)
    np.testing.assert_allclose(clipped_norm, norm, rtol=1e-3)
    np.testing.assert_allclose(clipped_update, norm / 10, rtol=1e-3)


def test_mixed_precision_computes_in_float16_and_outputs_float32():
    shape = preset(FeatureConfig, "default").shape
    vae = build_vae(shape, preset(ModelConfig, "tiny"), PriorConfig(kind="mixture", components=3), mixed_precision=True)
    conv = vae.encoder.get_layer("encoder_conv_0")
    assert conv.compute_dtype == "float16" and conv.variable_dtype == "float32"
    x = np.random.default_rng(0).uniform(size=(2, *shape)).astype(np.float32)
    mu, _ = vae.encode(x)
    assert mu.dtype == tf.float32 and vae(x).dtype == tf.float32
    assert np.all(np.isfinite(vae.per_example_losses(x)["loss"].numpy()))


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
def test_batch_norm_takes_the_fused_kernel_on_one_replica_with_keras_maths(dtype):
    """Outputs, gradients (input, scale, offset), moving statistics and inference outputs as Keras'
    synchronised layer gives them, from one op forward and one backward."""
    import keras

    from vae import models

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((4, 6, 5, 3)).astype(np.float32) * 2 + 1)
    upstream = tf.constant(rng.standard_normal((4, 6, 5, 3)).astype(np.float32))
    results, ops = {}, {}
    for name, layer in (
        ("keras", keras.layers.BatchNormalization(synchronized=True, dtype=dtype)),
        ("ours", models.BatchNormalization(dtype=dtype)),
    ):
        layer.build(x.shape)
        layer.gamma.assign([1.5, 0.5, 2.0])
        layer.beta.assign([0.1, -0.2, 0.3])

        @tf.function
        def step(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.cast(layer(x, training=True), tf.float32)
                loss = tf.reduce_sum(y * upstream)
            return [y, *tape.gradient(loss, [x, layer.gamma, layer.beta])]

        values = step(x)
        ops[name] = {node.op for node in step.get_concrete_function(x).graph.as_graph_def().node}
        results[name] = [
            np.asarray(v, np.float32)
            for v in (*values, layer.moving_mean, layer.moving_variance, layer(x, training=False))
        ]
    assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= ops["ours"] and "FusedBatchNormV3" not in ops["keras"]
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    for ours, theirs in zip(results["ours"], results["keras"]):
        np.testing.assert_allclose(ours, theirs, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("fused", [True, False])
def test_the_steps_choose_the_batch_norm_kernel(fused):
    import keras

    from vae.models import DistributedSteps

    shape = preset(FeatureConfig, "default").shape
    vae = build_vae(shape, preset(ModelConfig, "tiny"), PriorConfig())
    steps = DistributedSteps(vae, keras.optimizers.Adam(1e-3), 4, fused_norm=fused)

    def ops(step):
        graph = step.get_concrete_function().graph.as_graph_def()
        return {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}

    assert ("FusedBatchNormGradV3" in ops(steps.train_graph)) == fused
    assert "FusedBatchNormV3" not in ops(steps.evaluate_graph)  # inference normalises with the moving statistics


def _trained_checkpoint(tmp_path, prior_kind: str, **model) -> tuple[str, object, object]:
    """A tiny model (with the ``model`` settings) moved away from its initial weights by a few real optimizer
    steps, saved."""
    features = preset(FeatureConfig, "default")
    run_cfg = RunConfig(
        features=features,
        model=replace(preset(ModelConfig, "tiny"), **model),
        prior=PriorConfig(kind=prior_kind, components=3),
        train=TrainConfig(epochs=1, batch_size=4),
    ).validate()
    rng = np.random.default_rng(1)
    train = {
        "id": np.arange(8).astype(str),
        "digit": np.arange(8) % 10,
        "spectrogram": rng.uniform(size=(8, *features.shape)).astype(np.float32),
    }
    vae, optimizer, _ = train_in_process(run_cfg, train, epochs=2)
    directory = str(tmp_path / "ckpt")
    checkpoint.save(directory, vae, optimizer, 2, run_cfg, {"val_recon_mse": 0.1}, {"prior": prior_kind, "digits": {}})
    return directory, vae, optimizer


@pytest.mark.parametrize("prior_kind", ["normal", "mixture"])
def test_reloaded_checkpoint_gives_identical_decoder_outputs(tmp_path, prior_kind):
    directory, vae, _ = _trained_checkpoint(tmp_path, prior_kind)
    z = np.random.default_rng(2).normal(size=(5, vae.model_cfg.latent_dim)).astype(np.float32)

    loaded = checkpoint.load(directory)

    np.testing.assert_array_equal(loaded.model.decode(z).numpy(), vae.decode(z).numpy())
    for a, b in zip(loaded.model.prior.weights, vae.prior.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert loaded.epoch == 2 and loaded.metrics == {"val_recon_mse": 0.1}
    assert loaded.run_config.prior.kind == prior_kind


def test_checkpoint_loads_from_s3_and_restores_optimizer_state(tmp_path, make_bucket):
    directory, vae, trained_optimizer = _trained_checkpoint(tmp_path, "mixture")
    uri = make_bucket("models-test") + "/run/checkpoint_0002"
    storage.copy_tree(directory, uri)
    z = np.random.default_rng(3).normal(size=(4, vae.model_cfg.latent_dim)).astype(np.float32)

    loaded = checkpoint.load(uri)
    np.testing.assert_array_equal(loaded.model.decode(z).numpy(), vae.decode(z).numpy())
    assert loaded.uri == uri

    optimizer = make_optimizer(loaded.run_config.train, loaded.model.trainable_variables)
    assert checkpoint.restore_training_state(directory, loaded.model, optimizer) == 2
    assert int(optimizer.iterations.numpy()) == int(trained_optimizer.iterations.numpy()) == 4
    for a, b in zip(optimizer.variables, trained_optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))


def test_missing_checkpoint_is_an_error_naming_it(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="nowhere"):
        checkpoint.load(str(tmp_path / "nowhere"))
    (tmp_path / "half").mkdir()
    with pytest.raises(checkpoint.CheckpointError, match="missing"):
        checkpoint.load(str(tmp_path / "half"))


def test_the_reversed_gradient_is_the_identity_forward_and_flips_the_sign_backward():
    x = tf.constant([1.0, -2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = reverse_gradient(x)
        loss = tf.reduce_sum(3.0 * y)
    assert np.array_equal(y.numpy(), x.numpy())
    assert np.array_equal(tape.gradient(loss, x).numpy(), [-3.0, -3.0])


def _adversary_model(kind: str):
    shape = preset(FeatureConfig, "default").shape
    model_cfg = preset(ModelConfig, "tiny", conditional=True)
    vae = build_vae(shape, model_cfg, PriorConfig(), LossConfig(digit_adversary=10.0, adversary_kind=kind))
    x = np.random.default_rng(0).uniform(size=(8, *shape)).astype(np.float32)
    return vae, x, np.arange(8, dtype=np.int32), np.zeros((1, 8, model_cfg.latent_dim), np.float32)


def _gradients(vae, x, digits, eps, term: str) -> dict:
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(vae.per_example_losses(x, digits, eps, training=True)[term])
    return dict(zip([v.path for v in vae.trainable_variables], tape.gradient(value, vae.trainable_variables)))


def _encoder_step_changes_the_adversarys_reading(vae, x, digits, grads) -> tuple[float, float]:
    """(the adversary's mean cross-entropy, its prediction's entropy) before and after one SGD step of the
    encoder's mu layer down ``grads``: each a (before, after) pair."""

    def reading():
        mu, _ = vae.encode(x, digits)
        logits = vae.adversary(mu)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(digits, logits)
        p = tf.nn.softmax(logits)
        return float(tf.reduce_mean(ce)), float(tf.reduce_mean(-tf.reduce_sum(p * tf.math.log(p), -1)))

    before = reading()
    mu_kernel = next(p for p in grads if p.endswith("mu/kernel"))
    vae.encoder.get_layer("mu").kernel.assign_sub(0.5 * grads[mu_kernel])
    return before, reading()


def test_a_reversed_adversary_is_trained_to_read_the_digit_and_the_encoder_to_make_it_fail():
    vae, x, digits, eps = _adversary_model("reverse")
    grads = _gradients(vae, x, digits, eps, "adversary")
    assert grads[next(p for p in grads if "adversary_logits/kernel" in p)] is not None
    (ce_before, _), (ce_after, _) = _encoder_step_changes_the_adversarys_reading(vae, x, digits, grads)
    assert ce_after > ce_before


def test_a_confusing_encoder_pushes_the_adversary_to_uniform_without_training_it_to():
    vae, x, digits, eps = _adversary_model("confuse")
    grads = _gradients(vae, x, digits, eps, "adversary")
    only_ce = _gradients(vae, x, digits, eps, "digit_ce")
    for path, grad in grads.items():
        if "adversary" in path:  # the adversary learns from its cross-entropy alone
            np.testing.assert_allclose(grad.numpy(), only_ce[path].numpy(), rtol=1e-5, atol=1e-7)
        elif path.endswith("mu/kernel"):
            assert only_ce[path] is None and float(tf.reduce_sum(tf.abs(grad))) > 0
    (_, entropy_before), (_, entropy_after) = _encoder_step_changes_the_adversarys_reading(vae, x, digits, grads)
    assert entropy_after > entropy_before
    steps = DistributedSteps(vae, make_optimizer(TrainConfig(), vae.trainable_variables), global_batch=8)
    sums, _ = steps.train(x, digits, eps, 1.0)
    assert np.isfinite(sums.numpy()).all() and sums.numpy()[TERMS.index("digit_ce")] > 0


def test_a_standardising_adversary_reads_the_codes_whatever_their_scale():
    from vae.models import standardise

    x = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    z = standardise(x).numpy()
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-3)
    np.testing.assert_allclose(standardise(0.1 * x + 5.0).numpy(), z, atol=1e-3)

    vae, x, digits, eps = _adversary_model("confuse")
    vae.loss_cfg = replace(vae.loss_cfg, adversary_standardise=True)

    def ce() -> float:
        return float(tf.reduce_mean(vae.per_example_losses(x, digits, eps, training=False)["digit_ce"]))

    def logits(read) -> np.ndarray:
        return vae.adversary(read(vae.encode(x, digits)[0])).numpy()

    before, raw, standardised = ce(), logits(tf.identity), logits(standardise)
    mu = vae.encoder.get_layer("mu")
    mu.kernel.assign(0.5 * mu.kernel)
    mu.bias.assign(0.5 * mu.bias)
    # Codes halved: the same reading when standardised, another when not.
    assert abs(ce() - before) < 1e-3
    np.testing.assert_allclose(logits(standardise), standardised, atol=1e-3)
    assert np.abs(logits(tf.identity) - raw).max() > 1e-2


def test_the_between_digit_share_is_the_variance_the_digits_explain():
    from vae.models import between_digit_share

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50).astype(np.int32)
    noise = rng.standard_normal((200, 3)).astype(np.float32)
    centred = noise - np.stack([noise[labels == d].mean(0) for d in labels])  # every digit's mean code is 0
    assert float(tf.reduce_mean(between_digit_share(tf.constant(centred), labels))) < 1e-6
    by_digit = np.eye(4, 3, dtype=np.float32)[labels] * 5.0  # dimensions that are functions of the digit
    assert float(tf.reduce_mean(between_digit_share(tf.constant(by_digit), labels))) > 0.999
    share = float(tf.reduce_mean(between_digit_share(tf.constant(by_digit + noise), labels)))
    r2 = [
        np.var([by_digit[labels == d, k].mean() for d in labels]) / np.var((by_digit + noise)[:, k]) for k in range(3)
    ]
    np.testing.assert_allclose(share, np.mean(r2), rtol=0.1)


def test_moments_move_the_digits_mean_codes_together_and_only_train_the_adversary_to_watch():
    vae, x, digits, eps = _adversary_model("moments")
    digits = digits % 2  # two digits, four clips each
    grads = _gradients(vae, x, digits, eps, "adversary")
    only_ce = _gradients(vae, x, digits, eps, "digit_ce")
    for path, grad in grads.items():
        if "adversary" in path:
            np.testing.assert_allclose(grad.numpy(), only_ce[path].numpy(), rtol=1e-5, atol=1e-7)
    from vae.models import between_digit_share

    def share():  # as training computes it: BatchNorm on the batch's own statistics
        return float(tf.reduce_mean(between_digit_share(vae.encode(x, digits, training=True)[0], digits)))

    before = share()
    step = grads[next(p for p in grads if p.endswith("mu/kernel"))]
    vae.encoder.get_layer("mu").kernel.assign_sub(1e-2 * step / tf.reduce_max(tf.abs(step)))
    assert share() < before


def test_a_digit_adversary_needs_a_conditional_model():
    with pytest.raises(ConfigError, match="digit_adversary.*conditional"):
        RunConfig(model=preset(ModelConfig, "tiny", conditional=False), loss=LossConfig(digit_adversary=1.0)).validate()


def _local_model(**more):
    shape = preset(FeatureConfig, "default").shape
    cfg = replace(preset(ModelConfig, "tiny"), filters=(4, 8, 8), kernels=(3, 3, 3), strides=(2, 2, 2), **more)
    return shape, build_vae(shape, cfg.validate(), PriorConfig(), LossConfig(reconstruction="mse", recon_weight=10.0))


def test_a_local_code_sits_at_its_map_and_its_noise_follows_the_code_s():
    shape, vae = _local_model(local_channels=3, local_level=1)
    cfg = vae.model_cfg
    assert cfg.local_shape(shape) == (shape[0] // 4, shape[1] // 4, 3)
    assert cfg.noise_dim(shape) == cfg.latent_dim + shape[0] // 4 * shape[1] // 4 * 3
    assert vae.local_prior.output[0].shape[1:] == cfg.local_shape(shape)
    assert not hasattr(vae, "decoder")
    with pytest.raises(ConfigError, match="local_level"):
        replace(cfg, local_level=2).validate()  # the decoder never makes the last encoder map's size before its output
    with pytest.raises(ConfigError, match="local_channels"):
        replace(cfg, local_channels=-1).validate()


def test_the_local_code_s_kl_joins_the_code_s_and_reconstruction_reads_the_posterior():
    shape, vae = _local_model(local_channels=2, local_level=0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, *shape)).astype(np.float32)
    eps = np.zeros((1, 3, vae.model_cfg.noise_dim(shape)), np.float32)
    terms = vae.per_example_losses(x, eps=eps, training=False)
    mu, log_var = vae.encode(x)
    global_kl = vae.prior.kl(mu, log_var, mu[None], None).numpy()
    assert np.all(terms["kl"].numpy() > global_kl)  # an untrained posterior is not its prior
    assert terms["prior_recon"].shape == (3,) and np.all(terms["prior_recon"].numpy() > 0)
    np.testing.assert_allclose(vae.objective(terms), terms["loss"] + terms["prior_recon"], rtol=1e-6)
    # Zero noise draws the posterior's mean: the loss's reconstruction is the deterministic one.
    np.testing.assert_allclose(
        terms["recon_mse"], np.mean((vae.reconstruct(x).numpy()[..., 0] - x) ** 2, axis=(1, 2)), rtol=1e-5
    )
    assert not np.allclose(vae.reconstruct(x).numpy(), vae.decode(mu).numpy())


def test_decoding_draws_the_local_code_from_its_prior_at_the_temperature():
    shape, vae = _local_model(local_channels=2, local_level=1)
    z = np.random.default_rng(1).normal(size=(2, vae.model_cfg.latent_dim)).astype(np.float32)
    noise = np.random.default_rng(2).normal(size=(2, *vae.model_cfg.local_shape(shape))).astype(np.float32)
    mean = vae.decode(z).numpy()
    np.testing.assert_array_equal(vae.decode(z, local_noise=noise, temperature=0.0).numpy(), mean)
    assert not np.allclose(vae.decode(z, local_noise=noise, temperature=1.0).numpy(), mean)


def test_gaussian_kl_is_zero_between_equals_and_matches_the_closed_form():
    from vae.models import gaussian_kl

    mu, log_var = tf.constant([[0.5, -1.0]]), tf.constant([[0.2, -0.3]])
    np.testing.assert_allclose(gaussian_kl(mu, log_var, mu, log_var), [0.0], atol=1e-7)
    prior_mu, prior_log_var = tf.constant([[0.0, 1.0]]), tf.constant([[0.0, 0.5]])
    s2, p2 = np.exp(log_var.numpy()), np.exp(prior_log_var.numpy())
    expected = 0.5 * np.sum(np.log(p2 / s2) + (s2 + (mu.numpy() - prior_mu.numpy()) ** 2) / p2 - 1)
    np.testing.assert_allclose(gaussian_kl(mu, log_var, prior_mu, prior_log_var), [expected], rtol=1e-6)


def test_a_model_with_a_local_code_trains_and_reloads_identically(tmp_path):
    directory, vae, _ = _trained_checkpoint(tmp_path, "mixture", local_channels=2, local_level=0)
    x = np.random.default_rng(4).uniform(size=(3, *vae.input_hw)).astype(np.float32)
    loaded = checkpoint.load(directory)
    np.testing.assert_array_equal(loaded.model.reconstruct(x).numpy(), vae.reconstruct(x).numpy())
    assert np.all(np.isfinite(vae.reconstruct(x).numpy()))


def test_the_digit_eraser_gives_every_digit_one_mean_code_and_keeps_the_rest_of_each_code():
    from vae.evaluation.speakers import linear_probe
    from vae.models import DigitEraser

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 4000).astype(np.int32)
    offsets = 2.0 * rng.standard_normal((10, 16))
    codes = (offsets[labels] + rng.standard_normal((4000, 16))).astype(np.float32)
    eraser = DigitEraser(momentum=0.05)
    eraser.build((None, 16))
    for start in range(0, 2000, 50):  # training batches move the digits' running means
        eraser.update(tf.constant(codes[start : start + 50]), tf.constant(labels[start : start + 50]))
    seen = eraser.digit_sums.numpy().copy()
    erased = eraser(tf.constant(codes), tf.constant(labels)).numpy()
    np.testing.assert_array_equal(eraser.digit_sums.numpy(), seen)  # erasing moves nothing

    def spread(z):  # how far apart the digits' mean codes lie
        return np.std([z[labels == d].mean(0) for d in range(10)], axis=0).mean()

    assert spread(codes) > 1.0 and spread(erased) < 0.1
    np.testing.assert_allclose(erased.mean(0), 0.0, atol=0.1)  # the prior's mean
    train, test = slice(0, 2000), slice(2000, None)
    assert linear_probe().fit(codes[train], labels[train]).score(codes[test], labels[test]) > 0.95
    assert linear_probe().fit(erased[train], labels[train]).score(erased[test], labels[test]) < 0.2
    # Each code moved by its digit's mean alone: within a digit, codes keep their differences.
    np.testing.assert_allclose(erased - codes, -eraser.means().numpy()[labels], atol=1e-5)
    np.testing.assert_allclose(eraser.means().numpy(), offsets, atol=0.4)  # about 100 clips a digit: 0.1 each


def test_an_erasing_model_encodes_less_its_digits_mean_trains_the_means_and_reloads(tmp_path):
    directory, vae, _ = _trained_checkpoint(tmp_path, "normal", conditional=True, erase_digit=True, latent_dim=12)
    assert np.all(vae.eraser.digit_weights.numpy()[:8] > 0)  # the eight digits trained on
    loaded = checkpoint.load(directory)
    for a, b in zip(loaded.model.eraser.weights, vae.eraser.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = np.random.default_rng(4).uniform(size=(3, *vae.input_hw)).astype(np.float32)
    digits = np.array([1, 2, 3], np.int32)
    mu = vae.encode(x, digits)[0].numpy()
    np.testing.assert_array_equal(loaded.model.encode(x, digits)[0].numpy(), mu)
    raw = vae.encoder([tf.constant(x[..., None]), tf.one_hot(digits, 10)])[0].numpy()
    np.testing.assert_allclose(mu, raw - vae.eraser.means().numpy()[digits], atol=1e-5)
    before = vae.eraser.digit_sums.numpy().copy()
    vae.per_example_losses(x, digits, training=False)
    np.testing.assert_array_equal(vae.eraser.digit_sums.numpy(), before)  # only training moves them


def test_digit_erasure_needs_a_conditional_model():
    with pytest.raises(ConfigError, match="erase_digit.*conditional"):
        preset(ModelConfig, "tiny", conditional=False, erase_digit=True).validate()


def test_the_steps_sum_named_arrays_of_every_length_with_one_trace():
    import keras

    from vae.worker import pack, unpack

    shape = preset(FeatureConfig, "default").shape
    steps = DistributedSteps(build_vae(shape, preset(ModelConfig, "tiny"), PriorConfig()), keras.optimizers.Adam(), 4)
    for parts in ({"stop": np.array([1.0])}, {"val": {"loss": np.arange(5.0), "n": 3}}, {"codes": np.ones((10, 12))}):
        summed = unpack(steps.all_reduce(tf.constant(pack(parts))).numpy(), parts)  # one replica: the parts
        np.testing.assert_equal(summed, parts)
    assert steps.all_reduce.experimental_get_tracing_count() == 1
