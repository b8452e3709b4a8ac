"""Priors and reconstruction terms: the numbers they must agree with."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from vae import losses
from vae.config import PRIOR_KINDS, RECONSTRUCTION_KINDS, ConfigError, LossConfig, PriorConfig
from vae.priors import PRIORS, UNIT_RAW_SCALE, MixturePrior, NormalPrior, TiedPrior, analytic_normal_kl, build_prior


def mixture(latent_dim: int, components: int) -> MixturePrior:
    return MixturePrior(latent_dim, PriorConfig(kind="mixture", components=components))


def _posterior(batch=5, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 1.0, (batch, dim)).astype(np.float32)
    log_var = rng.normal(-0.5, 0.5, (batch, dim)).astype(np.float32)
    return mu, log_var


def _samples(mu, log_var, n, seed=1):
    eps = np.random.default_rng(seed).standard_normal((n, *mu.shape)).astype(np.float32)
    return mu[None] + np.exp(0.5 * log_var)[None] * eps


def test_mixture_monte_carlo_kl_matches_analytic_kl_for_one_standard_normal_component():
    prior = mixture(4, 1)
    prior.means.assign(np.zeros((1, 4), np.float32))
    prior.raw_scales.assign(np.full((1, 4), UNIT_RAW_SCALE, np.float32))
    mu, log_var = _posterior()
    analytic = analytic_normal_kl(mu, log_var).numpy()

    mc = prior.kl(mu, log_var, _samples(mu, log_var, 40_000)).numpy()

    assert analytic.shape == mc.shape == (5,)
    assert np.all(analytic > 0.1)
    np.testing.assert_allclose(mc, analytic, rtol=0.03, atol=0.02)
    # ... and the analytic prior's KL is that same formula, whatever samples it is given.
    np.testing.assert_allclose(NormalPrior(4, PriorConfig()).kl(mu, log_var, None).numpy(), analytic, rtol=1e-6)


def test_mixture_log_prob_is_the_gaussian_mixture_density():
    k, d = 3, 2
    rng = np.random.default_rng(3)
    prior = mixture(d, k)
    logits, means, raw = rng.normal(size=k), rng.normal(0, 2, (k, d)), rng.normal(size=(k, d))
    prior.logits.assign(logits.astype(np.float32))
    prior.means.assign(means.astype(np.float32))
    prior.raw_scales.assign(raw.astype(np.float32))
    scales = np.log1p(np.exp(raw)) + 1e-5
    z = rng.normal(0, 2, (7, d))

    log_w = logits - logsumexp(logits)
    reference = logsumexp(
        [log_w[j] + multivariate_normal(means[j], np.diag(scales[j] ** 2)).logpdf(z) for j in range(k)], axis=0
    )

    np.testing.assert_allclose(prior.log_prob(z.astype(np.float32)).numpy(), reference, rtol=1e-4, atol=1e-4)


def test_mixture_sampling_follows_the_given_component_weights_and_assign_recovers_them():
    prior = mixture(3, 4)
    prior.means.assign(np.array([[-20, 0, 0], [0, 20, 0], [20, 0, 0], [0, -20, 0]], np.float32))

    z = prior.sample(200, seed=5, weights=np.array([0.0, 0.0, 1.0, 0.0]))
    assert z.shape == (200, 3) and z.dtype == np.float32
    assert np.all(prior.assign(z) == 2)

    unconditional = prior.assign(prior.sample(400, seed=6))
    assert set(unconditional.tolist()) == {0, 1, 2, 3}


def test_mixture_parameters_receive_gradients_from_the_kl():
    prior = mixture(2, 3)
    mu, log_var = _posterior(batch=4, dim=2)
    with tf.GradientTape() as tape:
        kl = tf.reduce_mean(prior.kl(mu, log_var, _samples(mu, log_var, 2)))
    grads = tape.gradient(kl, prior.trainable_variables)
    assert len(grads) == 3
    assert all(g is not None and np.any(g.numpy() != 0) for g in grads)


def test_normal_prior_kl_is_zero_at_the_prior_and_positive_elsewhere():
    prior = build_prior(PriorConfig(kind="normal"), 3)
    zeros = np.zeros((2, 3), np.float32)
    np.testing.assert_allclose(prior.kl(zeros, zeros).numpy(), 0.0, atol=1e-7)
    assert np.all(prior.kl(zeros + 1, zeros).numpy() == pytest.approx(1.5))
    assert prior.sample(6, seed=0).shape == (6, 3)


def test_tied_prior_kl_is_the_analytic_kl_to_the_component_of_each_clips_digit():
    prior = build_prior(PriorConfig(kind="tied"), 2)
    assert isinstance(prior, TiedPrior) and prior.components == 10 and prior.uses_digits
    rng = np.random.default_rng(4)
    means, raw = rng.normal(0, 2, (10, 2)).astype(np.float32), rng.normal(size=(10, 2)).astype(np.float32)
    prior.means.assign(means)
    prior.raw_scales.assign(raw)
    scales = np.log1p(np.exp(raw)) + 1e-5
    mu, log_var = _posterior(batch=3, dim=2)
    digits = np.array([7, 0, 7])

    kl = prior.kl(mu, log_var, None, digits).numpy()

    var_q, var_p = np.exp(log_var), scales[digits] ** 2
    reference = 0.5 * np.sum(np.log(var_p / var_q) + (var_q + (mu - means[digits]) ** 2) / var_p - 1.0, axis=1)
    np.testing.assert_allclose(kl, reference, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="digit"):
        prior.kl(mu, log_var, None)


def test_tied_prior_samples_a_digit_from_its_own_component_and_assign_finds_it():
    prior = build_prior(PriorConfig(kind="tied"), 3)
    prior.means.assign((np.eye(10, 3) * 0 + np.arange(10)[:, None] * 30.0).astype(np.float32))
    z = prior.sample(50, seed=1, digit=6)
    np.testing.assert_allclose(z.mean(axis=0), [180.0] * 3, atol=1.0)
    assert np.all(prior.assign(z) == 6)
    # Unconditional draws mix every digit's component; the weights are not trained.
    assert set(prior.assign(prior.sample(300, seed=2)).tolist()) == set(range(10))
    assert not prior.logits.trainable


def test_every_prior_kind_is_registered_and_built_by_name():
    assert sorted(PRIORS) == ["mixture", "normal", "tied"]
    for kind in PRIORS:
        prior = build_prior(PriorConfig(kind=kind, components=4), 5)
        assert prior.kind == kind and prior.sample(3, seed=0).shape == (3, 5)
    with pytest.raises(ValueError, match="PriorConfig.kind"):
        build_prior(PriorConfig(kind="vamp"), 2)


def test_the_model_registries_hold_one_class_for_each_kind_the_config_knows():
    """Config validation knows the kinds by name only (it never imports the model code)."""
    assert tuple(sorted(PRIORS)) == PRIOR_KINDS
    assert tuple(sorted(losses.RECONSTRUCTIONS)) == RECONSTRUCTION_KINDS
    for kind in PRIOR_KINDS:
        assert PriorConfig(kind=kind).validate().kind == kind
    for kind in RECONSTRUCTION_KINDS:
        assert LossConfig(reconstruction=kind).validate().reconstruction == kind
    with pytest.raises(ConfigError, match=r"PriorConfig.kind='vamp'; choose from \['mixture', 'normal', 'tied'\]"):
        PriorConfig(kind="vamp").validate()
    with pytest.raises(
        ConfigError, match=r"LossConfig.reconstruction='l1'; choose from \['bernoulli', 'gaussian', 'laplace', 'mse'\]"
    ):
        LossConfig(reconstruction="l1").validate()


def test_every_prior_answers_for_its_components_and_for_a_digit_itself():
    """What the rest of the code asks a prior instead of comparing its kind (generation, latent
    statistics, evaluation): its components, which one a latent falls in, and draws for a digit."""
    stats = {"mean": [5.0, -5.0, 5.0], "spread": [0.01, 0.01, 0.01]}
    for kind in PRIORS:
        cfg = PriorConfig(kind=kind, components=4)
        prior = build_prior(cfg, 3)
        assert prior.components == PRIORS[kind].components_of(cfg)
        z = prior.sample(20, seed=0)
        assigned = prior.assign(z)
        if prior.components == 1:
            assert assigned is None
        else:
            assert assigned.shape == (20,) and set(assigned.tolist()) <= set(range(prior.components))
        occupancy = np.eye(prior.components)[0] if prior.components > 1 else [1.0]
        drawn = prior.sample_digit(7, 2, {**stats, "occupancy": occupancy}, seed=1)
        assert drawn.shape == (7, 3) and drawn.dtype == np.float32
        np.testing.assert_array_equal(drawn, prior.sample_digit(7, 2, {**stats, "occupancy": occupancy}, seed=1))
    # normal: the digit's training encodings; tied: the digit's own component (needs no statistics).
    np.testing.assert_allclose(
        build_prior(PriorConfig(kind="normal"), 3).sample_digit(50, 2, stats).mean(axis=0), stats["mean"], atol=0.01
    )
    tied = build_prior(PriorConfig(kind="tied"), 3)
    tied.means.assign((np.arange(10)[:, None] * np.full((1, 3), 30.0)).astype(np.float32))
    assert np.all(tied.assign(tied.sample_digit(30, 8, {}, seed=3)) == 8)
    assert PRIORS["tied"].uses_digits and not PRIORS["normal"].uses_digits and not PRIORS["mixture"].uses_digits


def test_reconstruction_terms_are_weighted_per_clip_means():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 8, 6, 1)).astype(np.float32)
    x_hat = rng.uniform(0.05, 0.95, size=(3, 8, 6, 1)).astype(np.float32)

    mse = losses.build_reconstruction(LossConfig(reconstruction="mse", recon_weight=1000.0))(x, x_hat).numpy()
    np.testing.assert_allclose(mse, 1000.0 * ((x - x_hat) ** 2).reshape(3, -1).mean(axis=1), rtol=1e-5)

    bce = -(x * np.log(x_hat) + (1 - x) * np.log(1 - x_hat)).reshape(3, -1).mean(axis=1)
    bernoulli = losses.build_reconstruction(LossConfig(reconstruction="bernoulli", recon_weight=2.0))(x, x_hat).numpy()
    np.testing.assert_allclose(bernoulli, 2.0 * bce, rtol=1e-5)

    with pytest.raises(ValueError, match="LossConfig.reconstruction"):
        losses.build_reconstruction(LossConfig(reconstruction="l1"))


@pytest.mark.parametrize(
    "kind,distribution,best_scale",
    [
        ("gaussian", "norm", lambda error: np.sqrt(np.mean(error**2))),  # the RMS error
        ("laplace", "laplace", lambda error: np.mean(np.abs(error))),  # the mean absolute error
    ],
)
def test_calibrated_terms_are_summed_negative_log_likelihoods_with_a_learned_scale(kind, distribution, best_scale):
    import scipy.stats

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 8, 6, 1)).astype(np.float32)
    x_hat = rng.uniform(size=(3, 8, 6, 1)).astype(np.float32)
    term = losses.build_reconstruction(LossConfig(reconstruction=kind, gaussian_init_scale=0.2))
    density = getattr(scipy.stats, distribution)(x_hat.reshape(3, -1), 0.2)
    np.testing.assert_allclose(term(x, x_hat).numpy(), -density.logpdf(x.reshape(3, -1)).sum(axis=1), rtol=1e-5)

    # The scale is a trainable weight, and gradient descent finds its maximum-likelihood value.
    assert [w.name for w in term.trainable_weights] == ["log_scale"]
    for _ in range(300):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(term(x, x_hat)) / x[0].size
        (grad,) = tape.gradient(loss, term.trainable_weights)
        term.log_scale.assign_sub(0.5 * grad)
    assert float(term.scale()) == pytest.approx(float(best_scale(x - x_hat)), rel=1e-3)


def test_laplace_pulls_a_two_valued_pixel_to_its_median_where_squared_error_pulls_it_to_the_mean():
    x = tf.constant([0.0, 0.0, 1.0], shape=(3, 1, 1, 1))
    for kind, expected in (("gaussian", 1 / 3), ("laplace", 0.0)):
        term = losses.build_reconstruction(LossConfig(reconstruction=kind))
        x_hat = tf.Variable(0.6)
        for _ in range(2000):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(term(x, tf.fill(tf.shape(x), x_hat)))
            x_hat.assign_sub(3e-4 * tape.gradient(loss, x_hat))
        assert float(x_hat) == pytest.approx(expected, abs=0.02), kind
