"""The batched TensorFlow Griffin-Lim (vae.vocoder) on real FSDD clips: librosa's algorithm, batch
independence, round-trip quality, shapes for both presets, bad input."""

from __future__ import annotations

from dataclasses import replace

import librosa
import numpy as np
import pytest

from vae import features as F
from vae import vocoder
from vae.config import FeatureConfig, preset

# Real clips, different digits and speakers, test-split takes.
CLIPS = ("0_george_0", "2_jackson_1", "4_lucas_2", "6_theo_3", "8_yweweler_4", "9_george_1")


def _clips(fsdd_dir, cfg: FeatureConfig):
    """(original waveforms cut to the clip length, spectrograms, dB minima, dB maxima)."""
    rows = []
    for stem in CLIPS:
        y = F.fit_length(F.decode_audio((fsdd_dir / f"{stem}.wav").read_bytes(), cfg).waveform, cfg)
        rows.append((y, *F.waveform_to_spectrogram(y, cfg)))
    y, spec, lo, hi = zip(*rows)
    return np.stack(y), np.stack(spec), np.array(lo), np.array(hi)


def _librosa(spec, cfg: FeatureConfig, db_min, db_max, n_iter: int, seed: int) -> np.ndarray:
    """librosa.griffinlim on one clip with the vocoder's settings: what it must reproduce."""
    mag = F.db_to_magnitude(F.spectrogram_to_db(spec, cfg, db_min, db_max), cfg)
    full = np.zeros((cfg.n_fft // 2 + 1, cfg.n_frames), np.float32)
    full[: cfg.n_bins] = mag
    y = librosa.griffinlim(
        full,
        n_iter=n_iter,
        hop_length=cfg.hop_length,
        n_fft=cfg.n_fft,
        window="hann",
        center=True,
        length=cfg.n_samples,
        momentum=vocoder.MOMENTUM,
        init="random",
        random_state=seed,
    )
    return F.peak_normalise(y)


@pytest.mark.parametrize("name", ["default", "seed"])
def test_shapes_lengths_and_peak(fsdd_dir, name):
    cfg = preset(FeatureConfig, name)
    _, specs, lo, hi = _clips(fsdd_dir, cfg)
    ranges = (lo, hi) if cfg.normalisation == "per_clip" else (None, None)
    y = vocoder.spectrograms_to_waveforms(specs, cfg, *ranges, n_iter=4, batch_size=4)
    assert y.shape == (len(CLIPS), cfg.n_samples) and y.dtype == np.float32
    np.testing.assert_allclose(np.abs(y).max(axis=1), 0.99, atol=1e-6)  # each clip peak-normalised
    # A trailing channel axis (the models' layout) is accepted.
    np.testing.assert_array_equal(
        vocoder.spectrograms_to_waveforms(
            specs[:2, ..., None], cfg, *(r if r is None else r[:2] for r in ranges), n_iter=4
        ),
        y[:2],
    )


@pytest.mark.parametrize("name", ["default", "seed"])
def test_reproduces_librosa_griffinlim(fsdd_dir, name):
    """Same initial phase, same updates: equal to float32 rounding after a few iterations (64 iterations
    amplify rounding to ~5e-3 of full scale: the round-trip test below compares quality instead)."""
    cfg = preset(FeatureConfig, name)
    _, specs, lo, hi = _clips(fsdd_dir, cfg)
    y = vocoder.spectrograms_to_waveforms(specs, cfg, lo, hi, n_iter=3, seed=7)
    ref = np.stack([_librosa(s, cfg, a, b, 3, 7 + i) for i, (s, a, b) in enumerate(zip(specs, lo, hi))])
    np.testing.assert_allclose(y, ref, atol=1e-4)


def test_batches_are_independent_and_seeded(fsdd_dir):
    cfg = preset(FeatureConfig, "default")
    _, specs, _, _ = _clips(fsdd_dir, cfg)
    batched = vocoder.spectrograms_to_waveforms(specs, cfg, seed=5, batch_size=4)  # batches of 4 and 2
    alone = np.stack(
        [vocoder.spectrograms_to_waveforms(specs[i : i + 1], cfg, seed=5 + i)[0] for i in range(len(specs))]
    )
    # Measured equal to the bit; the tolerance allows another CPU's vectorisation to round differently.
    np.testing.assert_allclose(batched, alone, atol=1e-3)
    np.testing.assert_array_equal(vocoder.spectrograms_to_waveforms(specs, cfg, seed=5, batch_size=4), batched)
    other_seed = vocoder.spectrograms_to_waveforms(specs[:1], cfg, seed=6)[0]
    assert np.abs(other_seed - batched[0]).max() > 0.05
    # The single-clip helper is a batch of one.
    np.testing.assert_array_equal(vocoder.spectrogram_to_waveform(specs[2], cfg, seed=7), alone[2])
    # One seed per clip (a service's batch of unrelated requests): clip i sounds as it does alone with seed[i].
    seeds = [5 + i for i in range(len(specs))][::-1]
    np.testing.assert_allclose(
        vocoder.spectrograms_to_waveforms(specs[::-1], cfg, seed=seeds, batch_size=4), alone[::-1], atol=1e-3
    )


@pytest.mark.parametrize("name", ["default", "seed"])
def test_round_trip_quality_matches_librosa(fsdd_dir, name):
    """Spectrogram -> Griffin-Lim -> waveform vs the original clip: the same log-spectral distance as librosa's
    (over the 250 test clips benchmarks/griffin_lim.py measured them equal to 0.001 dB), and far better than
    random phase."""
    cfg = preset(FeatureConfig, name)
    originals, specs, lo, hi = _clips(fsdd_dir, cfg)
    y = vocoder.spectrograms_to_waveforms(specs, cfg, lo, hi)
    ref = [_librosa(s, cfg, a, b, cfg.griffin_lim_iters, i) for i, (s, a, b) in enumerate(zip(specs, lo, hi))]
    noise = vocoder.spectrograms_to_waveforms(specs, cfg, lo, hi, n_iter=0)
    lsd = np.mean([F.log_spectral_distance(o, w, cfg) for o, w in zip(originals, y)])
    lsd_librosa = np.mean([F.log_spectral_distance(o, w, cfg) for o, w in zip(originals, ref)])
    lsd_noise = np.mean([F.log_spectral_distance(o, w, cfg) for o, w in zip(originals, noise)])
    assert abs(lsd - lsd_librosa) < 0.1, (lsd, lsd_librosa)
    assert lsd < lsd_noise - 1.0, (lsd, lsd_noise)


def test_empty_batch_and_progress():
    cfg = preset(FeatureConfig, "default")
    for empty in (np.zeros((0, *cfg.shape), np.float32), []):
        out = vocoder.spectrograms_to_waveforms(empty, cfg)
        assert out.shape == (0, cfg.n_samples) and out.dtype == np.float32
    seen = []
    specs = np.random.default_rng(0).random((5, *cfg.shape)).astype(np.float32)
    vocoder.spectrograms_to_waveforms(
        specs, cfg, n_iter=1, batch_size=2, progress=lambda done, n: seen.append((done, n))
    )
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_bad_input_is_named():
    cfg = preset(FeatureConfig, "default")
    good = np.zeros((2, *cfg.shape), np.float32)
    with pytest.raises(ValueError, match=r"\(2, 64, 96\).*\(128, 96\)"):
        vocoder.spectrograms_to_waveforms(np.zeros((2, 64, 96), np.float32), cfg)
    with pytest.raises(ValueError, match=r"\(128, 96\)"):
        vocoder.spectrograms_to_waveforms(np.zeros(cfg.shape, np.float32), cfg)  # one clip without the batch axis
    with pytest.raises(ValueError, match="one value per spectrogram"):
        vocoder.spectrograms_to_waveforms(good, cfg, np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="give both or neither"):
        vocoder.spectrograms_to_waveforms(good, cfg, db_min=np.zeros(2))
    with pytest.raises(ValueError, match="give both or neither"):  # the one-clip helper made silence of it
        vocoder.spectrogram_to_waveform(good[0], cfg, db_min=-60.0)
    with pytest.raises(ValueError, match="n_iter"):
        vocoder.spectrograms_to_waveforms(good, cfg, n_iter=-1)
    with pytest.raises(ValueError, match="batch_size"):
        vocoder.spectrograms_to_waveforms(good, cfg, batch_size=0)
    with pytest.raises(ValueError, match=r"seed needs one value per spectrogram \(2\)"):
        vocoder.spectrograms_to_waveforms(good, cfg, seed=[1, 2, 3])


def test_generation_to_waveforms_undoes_the_right_db_range(fsdd_dir):
    """``to_waveforms`` hands every clip's dB range to the batched vocoder: the digit's training mean for
    samples (``per_clip`` features), the source's for reconstructions, none for ``fixed`` features."""
    from types import SimpleNamespace

    from vae import generation

    cfg = preset(FeatureConfig, "seed")
    _, specs, lo, hi = _clips(fsdd_dir, cfg)
    stats = {"digits": {"3": {"db_min": -75.0, "db_max": -5.0}}, "db_min": -70.0, "db_max": 0.0}
    cfg = replace(cfg, griffin_lim_iters=2)  # the checkpoint's features set the iterations
    loaded = SimpleNamespace(run_config=SimpleNamespace(features=cfg), latent_stats=stats)
    n = len(specs)

    def vocode(a, b):
        return vocoder.spectrograms_to_waveforms(specs, cfg, np.full(n, a), np.full(n, b), seed=4)

    def to_waveforms(**kw):
        return np.stack(generation.to_waveforms(loaded, specs, seed=4, **kw))

    np.testing.assert_array_equal(to_waveforms(digit=3), vocode(-75.0, -5.0))
    np.testing.assert_array_equal(to_waveforms(), vocode(-70.0, 0.0))
    np.testing.assert_array_equal(
        to_waveforms(db_ranges=list(zip(lo, hi))), vocoder.spectrograms_to_waveforms(specs, cfg, lo, hi, seed=4)
    )
    with pytest.raises(generation.GenerationError, match="every spectrogram or for none"):
        generation.to_waveforms(loaded, specs[:2], db_ranges=[(-80.0, 0.0), (None, None)])
    fixed = preset(FeatureConfig, "default", griffin_lim_iters=2)
    _, fixed_specs, _, _ = _clips(fsdd_dir, fixed)
    fixed_loaded = SimpleNamespace(run_config=SimpleNamespace(features=fixed), latent_stats=stats)
    np.testing.assert_array_equal(
        np.stack(generation.to_waveforms(fixed_loaded, fixed_specs, digit=3)),
        vocoder.spectrograms_to_waveforms(fixed_specs, fixed),
    )
