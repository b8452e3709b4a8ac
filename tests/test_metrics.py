"""Each metric on known inputs: exact values on synthetic ones, and through the real recogniser, real FSDD
clips near the top, white noise near the bottom, real clips through Griffin-Lim (the vocoder floor) in between."""

from __future__ import annotations

import numpy as np
import pytest

from vae.config import FeatureConfig
from vae.dataset import load_split_numpy
from vae.evaluation import audio, metrics, recogniser
from vae.evaluation.context import read_originals

CFG = FeatureConfig()


# --------------------------------------------------------------------------- exact values


def test_digit_accuracy_counts_the_argmax():
    probs = np.eye(10)[[0, 1, 2, 3]] * 0.9 + 0.01
    assert metrics.digit_accuracy(probs, [0, 1, 2, 9]) == 0.75


def test_binomial_se_is_the_spread_of_a_share_over_its_clips():
    assert metrics.binomial_se(0.9, 100) == pytest.approx(0.03)
    assert metrics.binomial_se(0.9, 300) == pytest.approx(0.03 / np.sqrt(3))
    assert metrics.binomial_se(1.0, 50) == 0.0
    with pytest.raises(ValueError, match="n=0"):
        metrics.binomial_se(0.5, 0)


def test_inception_score_bounds():
    confident_balanced = np.eye(10)[np.arange(100) % 10]
    assert metrics.inception_score(confident_balanced) == pytest.approx(10.0, rel=1e-6)
    confident_one_class = np.eye(10)[np.zeros(100, int)]
    assert metrics.inception_score(confident_one_class) == pytest.approx(1.0, rel=1e-6)
    unsure = np.full((100, 10), 0.1)
    assert metrics.inception_score(unsure) == pytest.approx(1.0, rel=1e-6)
    two_classes = np.eye(10)[np.arange(100) % 2]
    assert metrics.inception_score(two_classes) == pytest.approx(2.0, rel=1e-6)


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 8))
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, mean shifted by 2 along every axis: distance 8 * 2^2 = 32.
    shifted = rng.standard_normal((4000, 8)) + 2.0
    assert metrics.frechet_distance(shifted, a) == pytest.approx(32.0, rel=0.05)
    # Scaled by 3: Tr(S + 9S - 2*3S) = 4 * 8 = 32.
    assert metrics.frechet_distance(3.0 * rng.standard_normal((4000, 8)), a) == pytest.approx(32.0, rel=0.1)
    # Fewer clips than dimensions still gives a finite number.
    assert np.isfinite(metrics.frechet_distance(rng.standard_normal((5, 64)), rng.standard_normal((7, 64))))


def test_reconstruction_metrics_are_zero_for_identical_audio():
    t = np.arange(CFG.n_samples) / CFG.sample_rate
    clips = np.stack([np.sin(2 * np.pi * f * t) * np.hanning(len(t)) for f in (300.0, 700.0)]).astype(np.float32)
    assert metrics.recon_lsd_db(clips, clips, CFG) == pytest.approx(0.0, abs=1e-9)
    assert metrics.recon_mse(clips, clips, CFG) == pytest.approx(0.0, abs=1e-12)
    assert metrics.recon_lsd_db(clips, clips[::-1], CFG) > 10


def test_metrics_name_the_mismatch():
    with pytest.raises(ValueError, match="3 predictions but 2 digits"):
        metrics.digit_accuracy(np.eye(10)[:3], [0, 1])
    with pytest.raises(ValueError, match="same d"):
        metrics.frechet_distance(np.zeros((5, 4)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="as many reconstructions as originals"):
        metrics.recon_lsd_db(np.zeros((2, 10)), np.zeros((1, 10)), CFG)


def test_silent_audio_is_the_floor_spectrogram_not_an_error():
    specs = audio.to_spectrograms(np.zeros((2, CFG.n_samples), np.float32), CFG.sample_rate, CFG)
    assert specs.shape == (2, *CFG.shape) and not specs.any()


# --------------------------------------------------------------------------- known audio through the recogniser


@pytest.fixture(scope="module")
def heard(recogniser_dir, full_parquet):
    """The recogniser's reading of real test clips, real train clips, their Griffin-Lim floor and white noise."""
    rec = recogniser.load(recogniser_dir)
    test = load_split_numpy(full_parquet, "test", columns=["digit", "source", "spectrogram"])
    train = load_split_numpy(full_parquet, "train", columns=["digit", "source"])
    pick = np.random.default_rng(0).choice(len(train["digit"]), 250, replace=False)
    real = read_originals(test["source"], CFG)
    floor = audio.resynthesise(test["spectrogram"], CFG)
    noise = (0.3 * np.random.default_rng(1).standard_normal(real.shape)).astype(np.float32)
    digits = test["digit"]
    return {
        "digits": digits,
        "waves": {"real": real, "floor": floor, "noise": noise},
        "real": rec.listen(real, CFG.sample_rate),
        "train": rec.listen(read_originals(train["source"][pick], CFG), CFG.sample_rate),
        "floor": rec.listen(floor, CFG.sample_rate),
        "noise": rec.listen(noise, CFG.sample_rate),
    }


def test_real_clips_score_near_the_top(heard):
    assert metrics.digit_accuracy(heard["real"].probs, heard["digits"]) >= 0.95
    assert metrics.inception_score(heard["real"].probs) >= 8.5
    # Other real clips (train split) are close to the test clips; noise is far away.
    fd_real = metrics.frechet_distance(heard["train"].embeddings, heard["real"].embeddings)
    fd_noise = metrics.frechet_distance(heard["noise"].embeddings, heard["real"].embeddings)
    assert fd_real < 0.1 * fd_noise, (fd_real, fd_noise)


def test_white_noise_scores_near_the_bottom(heard):
    assert metrics.digit_accuracy(heard["noise"].probs, heard["digits"]) <= 0.25
    assert metrics.inception_score(heard["noise"].probs) <= 1.5


def test_vocoder_floor_sits_between_real_and_noise(heard):
    waves, digits = heard["waves"], heard["digits"]
    assert metrics.digit_accuracy(heard["floor"].probs, digits) >= 0.95
    assert metrics.inception_score(heard["floor"].probs) >= 8.5
    fd_floor = metrics.frechet_distance(heard["floor"].embeddings, heard["real"].embeddings)
    assert fd_floor < 0.1 * metrics.frechet_distance(heard["noise"].embeddings, heard["real"].embeddings)

    lsd_floor = metrics.recon_lsd_db(waves["real"], waves["floor"], CFG)
    lsd_noise = metrics.recon_lsd_db(waves["real"], waves["noise"], CFG)
    assert 0 < lsd_floor < 6 < lsd_noise
    assert (
        0
        < metrics.recon_mse(waves["real"], waves["floor"], CFG)
        < 0.1 * metrics.recon_mse(waves["real"], waves["noise"], CFG)
    )


def test_other_recordings_are_no_test_clips_and_score_above_the_floor(recogniser_dir, full_parquet, heard):
    """``frechet_distance_real``: train-split recordings against the test clips, drawn as the floor draws test
    clips; the floor's draws overlap what they are compared with, so they score lower."""
    import types

    from vae.config import EvalConfig, RunConfig
    from vae.evaluation.context import Context
    from vae.evaluation.evaluators import samples

    loaded = types.SimpleNamespace(run_config=RunConfig(features=CFG))
    config = EvalConfig(n_unconditional=100, unconditional_draws=2)
    ctx = Context(loaded, full_parquet, config, recogniser=recogniser.load(recogniser_dir))
    assert ctx.other_recordings.shape == (200, CFG.n_samples)
    test_waves = {w.tobytes() for w in ctx.originals}
    assert not any(w.tobytes() in test_waves for w in ctx.other_recordings)
    noise, heard = heard, (ctx.heard("floor").embeddings, ctx.heard("originals").embeddings)
    floor = np.mean([metrics.frechet_distance(heard[0][s], heard[1]) for s in samples.reference_subsets(250, config)])
    real = samples._other_recordings(ctx)["frechet_distance_real"]
    assert 0 < floor < real < 0.1 * metrics.frechet_distance(noise["noise"].embeddings, heard[1])


def test_no_train_split_no_other_recordings():
    import types

    from vae.config import RunConfig
    from vae.evaluation.context import Context
    from vae.evaluation.evaluators import samples

    assert Context(types.SimpleNamespace(run_config=RunConfig(features=CFG)), None).other_recordings.shape[0] == 0
    ctx = types.SimpleNamespace(other_recordings=np.zeros((0, CFG.n_samples), np.float32))
    assert samples._other_recordings(ctx) == {}
