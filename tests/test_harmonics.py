"""The pitch tracker and the harmonic renderer on signals whose pitch is known."""

from __future__ import annotations

import numpy as np
import pytest

from vae.config import HARMONIC_DEPTH_DB, FeatureConfig
from vae.features import magnitude, magnitude_to_db, waveforms_to_spectrograms
from vae.harmonics import comb_db, impose_harmonics, pitch_track


def _tone(f0: float, cfg: FeatureConfig, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * cfg.sample_rate)) / cfg.sample_rate
    return sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 8)).astype(np.float32) * 0.3


def test_a_harmonic_tone_is_tracked_at_its_pitch_and_its_end_is_unvoiced():
    cfg = FeatureConfig()
    f0 = pitch_track(_tone(150.0, cfg), cfg)
    assert f0.shape == (cfg.n_frames,)
    inside = f0[5 : int(0.45 * cfg.sample_rate / cfg.hop_length)]
    assert np.mean(inside > 0) > 0.9
    assert np.all(np.abs(1200 * np.log2(inside[inside > 0] / 150.0)) < 30), "within 30 cents"
    assert np.all(f0[int(0.55 * cfg.sample_rate / cfg.hop_length) :] == 0), "after the clip ends: unvoiced"


def test_white_noise_and_silence_are_mostly_unvoiced():
    cfg = FeatureConfig()
    noise = np.random.default_rng(0).normal(0, 0.3, cfg.n_samples).astype(np.float32)
    assert np.mean(pitch_track(noise, cfg) > 0) < 0.2
    assert not pitch_track(np.zeros(cfg.n_samples, np.float32), cfg).any()


def test_the_comb_peaks_at_multiples_of_f0_and_keeps_the_frame_mean():
    cfg = FeatureConfig()
    f0 = np.array([0.0, 125.0, 250.0], np.float32)
    comb = comb_db(f0, cfg, HARMONIC_DEPTH_DB)
    assert not comb[:, 0].any(), "an unvoiced frame is left as it is"
    bin_hz = cfg.sample_rate / cfg.n_fft
    for t in (1, 2):
        harmonics = (np.arange(1, int(3000 / f0[t])) * f0[t] / bin_hz).round().astype(int)
        between = ((np.arange(1, int(3000 / f0[t])) + 0.5) * f0[t] / bin_hz).round().astype(int)
        assert np.all(comb[harmonics, t] > comb[between, t] + 10), "peaks at h f0, valleys half-way"
        assert abs(comb[:, t].mean()) < 1e-3
        peaks = [k for k in range(1, cfg.n_bins - 1) if comb[k, t] > comb[k - 1, t] and comb[k, t] >= comb[k + 1, t]]
        assert np.allclose(np.array(peaks[:5]) * bin_hz / f0[t], np.arange(1, 6), atol=0.15)


def test_drawing_the_harmonics_into_a_blurred_tone_brings_its_peaks_back():
    cfg = FeatureConfig()
    spec = waveforms_to_spectrograms([_tone(200.0, cfg)], cfg).spec
    flat = np.repeat(spec.mean(axis=1, keepdims=True), cfg.n_bins, axis=1)  # no harmonics at all
    f0 = np.where(np.arange(cfg.n_frames) < 55, 200.0, 0.0)[None].astype(np.float32)
    drawn = impose_harmonics(flat, f0, cfg, HARMONIC_DEPTH_DB)
    assert drawn.shape == flat.shape and drawn.min() >= 0 and drawn.max() <= 1
    frame = drawn[0, :, 30]
    real = magnitude(_tone(200.0, cfg), cfg)[:, 30]
    assert np.argmax(frame[:10]) == np.argmax(real[:10]) == round(200 / (cfg.sample_rate / cfg.n_fft))
    assert np.array_equal(drawn[0, :, 60:], flat[0, :, 60:]), "unvoiced frames unchanged"


def test_the_sinusoidal_synthesiser_plays_the_pitch_it_is_given_on_the_envelope_it_is_given():
    from scipy.ndimage import gaussian_filter

    from benchmarks.blur_floor import sinusoidal

    cfg = FeatureConfig()
    envelope = np.full(cfg.shape, 0.6, np.float32)
    envelope[cfg.n_bins // 2 :] = 0.3  # (0.6 - 0.3) x 90 dB = 27 dB quieter above 2 kHz
    f0 = np.full(cfg.n_frames, 200.0, np.float32)
    f0[: cfg.n_frames // 4] = 0.0  # the first quarter unvoiced: noise only
    y = sinusoidal(envelope, f0, cfg, seed=0)
    assert y.shape == (cfg.n_samples,) and np.isclose(np.abs(y).max(), 0.99)
    spectrum = magnitude(y, cfg)[:, cfg.n_frames // 2 :].mean(axis=1)
    bin_hz = cfg.sample_rate / cfg.n_fft
    peaks = [int(round(h * 200.0 / bin_hz)) for h in range(1, 9)]
    valleys = [int(round((h + 0.5) * 200.0 / bin_hz)) for h in range(1, 9)]
    assert np.all(spectrum[peaks] > 10 * spectrum[valleys]), "harmonics at multiples of f0, noise between them"
    for frame in (cfg.n_frames // 8, cfg.n_frames // 2):  # noise alone, then harmonics and noise
        level = gaussian_filter(magnitude_to_db(magnitude(y, cfg), cfg), 1.5)[:, frame]
        step = np.median(level[8 : cfg.n_bins // 2 - 8]) - np.median(level[cfg.n_bins // 2 + 8 : -8])
        assert abs(step - 27.0) < 4.0, f"the envelope's levels kept (frame {frame}: {step:.1f} dB)"
    assert np.mean(pitch_track(y, cfg)[cfg.n_frames // 2 : -4] > 0) > 0.9


def test_the_fine_structure_benchmark_finds_a_tones_harmonics_at_its_pitch_and_less_of_them_in_a_blur():
    from benchmarks.blur_floor import blurred, rendered_share
    from benchmarks.fine_structure import comb_correlations

    cfg = FeatureConfig()
    specs = np.stack([magnitude_to_db(magnitude(_tone(hz, cfg), cfg), cfg) for hz in (150.0, 200.0)])
    specs = ((specs - cfg.db_floor) / (cfg.db_ceiling - cfg.db_floor)).astype(np.float32)
    assert rendered_share(specs, specs) == pytest.approx(1.0)
    assert rendered_share(np.full_like(specs, 0.5), specs) == pytest.approx(0.0, abs=1e-6)
    assert 0 < rendered_share(blurred(specs, (1.5, 1.5)), specs) < 0.5  # a blur keeps a little of it
    f0 = np.stack([np.full(cfg.n_frames, hz, np.float32) for hz in (150.0, 200.0)])
    at_pitch = comb_correlations(specs, f0, cfg)[1]
    off_pitch = comb_correlations(specs, f0 * 1.1, cfg)[1]
    assert at_pitch["shift_frames"] == 0 and at_pitch["0-1000 Hz"] > 0.5
    assert at_pitch["0-1000 Hz"] > off_pitch["0-1000 Hz"] + 0.3
