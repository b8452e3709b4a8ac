"""The voice metrics: pYIN's voiced share of a tone and of noise, PESQ of a real clip against itself and a noisy
copy, without TensorFlow; and the voice evaluator's every value on an untrained tiny checkpoint (no Ray)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from vae.config import ConfigError, EvalConfig, FeatureConfig
from vae.evaluation import metrics
from vae.evaluation.evaluators import REFERENCES
from vae.evaluation.evaluators.voice import spread
from vae.features import resample

CFG = FeatureConfig()
RATE = CFG.sample_rate


def _tone(hz: float = 150.0, seconds: float = 0.7, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def clip(fsdd_dir) -> np.ndarray:
    """A real FSDD clip at the features' rate, trimmed/padded to clip_seconds."""
    from vae.evaluation.context import read_originals

    return read_originals([str(fsdd_dir / "3_george_0.wav")], CFG)[0]


def test_a_tone_is_voiced_and_noise_is_not():
    noise = (0.3 * np.random.default_rng(0).standard_normal(len(_tone()))).astype(np.float32)
    per_clip = metrics.voicing_per_clip(np.stack([_tone(), noise]), RATE)
    assert per_clip[0] > 0.9 and per_clip[1] < 0.2, per_clip
    assert metrics.voicing(np.stack([_tone(), noise]), RATE) == pytest.approx(per_clip.mean())


def test_voicing_counts_only_the_loud_frames_and_silence_is_unvoiced():
    quiet_tail = np.concatenate([_tone(), np.zeros(RATE // 2, np.float32)])  # half a second of silence
    silent = np.zeros_like(quiet_tail)
    assert metrics.voicing_per_clip(np.stack([quiet_tail, silent]), RATE).tolist() == [pytest.approx(1.0), 0.0]
    assert metrics.loud_voiced_share(np.array([True, False, False]), np.array([1.0, 0.2, 0.05])) == 0.5


def test_other_sample_rates_are_scored_at_the_voice_rate():
    assert metrics.voicing(_tone(rate=16_000)[None], 16_000) > 0.9
    y = _tone()
    assert metrics.pesq_nb(resample(y, RATE, 22_050)[None], resample(y, RATE, 22_050)[None], 22_050)[0] > 4.4


def test_pesq_of_a_clip_with_itself_is_the_top_and_noise_lowers_it(clip):
    noisy = clip + 0.3 * np.abs(clip).max() * np.random.default_rng(1).standard_normal(len(clip)).astype(np.float32)
    scores = metrics.pesq_nb_per_clip(np.stack([clip, clip]), np.stack([clip, noisy]), RATE)
    assert scores[0] > 4.4 and scores[1] < scores[0] - 1, scores


def test_pesq_skips_and_counts_what_it_cannot_score(clip):
    silent = np.zeros_like(clip)
    mean, skipped = metrics.pesq_nb(np.stack([clip, clip, silent]), np.stack([clip, silent, clip]), RATE)
    assert mean == pytest.approx(metrics.pesq_nb_per_clip(clip[None], clip[None], RATE)[0]) and skipped == 2
    assert metrics.pesq_nb(silent[None], silent[None], RATE) == (None, 1)
    with pytest.raises(ValueError, match="as many reconstructions as originals"):
        metrics.pesq_nb(np.stack([clip, clip]), clip[None], RATE)


VOICE_WITHOUT_TENSORFLOW = """
import json, sys
import numpy as np
from vae.evaluation import metrics
t = np.arange(5600) / 8000
y = (0.5 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)[None]
metrics.voicing(y, 8000), metrics.pesq_nb(y, y, 8000)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))))
"""


def test_the_voice_metrics_run_without_tensorflow():
    proc = subprocess.run([sys.executable, "-c", VOICE_WITHOUT_TENSORFLOW], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_voicing_clips_is_a_bounded_positive_count():
    assert EvalConfig().voicing_clips == 60
    with pytest.raises(ConfigError, match="voicing_clips=0 must be positive"):
        EvalConfig(voicing_clips=0).validate()
    with pytest.raises(ConfigError, match="voicing_clips=20000 is over its bound"):
        EvalConfig(voicing_clips=20_000).validate()


def test_subsets_are_spread_evenly_over_the_set():
    assert spread(300, 60).tolist() == list(range(0, 300, 5))  # 6 of each digit's 30 samples
    assert spread(5, 60).tolist() == [0, 1, 2, 3, 4]
    assert spread(7, 3).tolist() == [0, 2, 4]


# --------------------------------------------------------------------------- the evaluators


@pytest.fixture(scope="module")
def context(fsdd_dir, tmp_path_factory):
    """A Context of an untrained tiny checkpoint whose test split is 10 real clips (one per digit), made in
    this process as jobs.preprocess makes rows (no Ray); its WAV folder holds two of them."""
    from tiny_checkpoint import make_checkpoint

    from vae import checkpoint
    from vae.dataset import extract_clip
    from vae.evaluation.context import TEST_COLUMNS, Context

    folder = make_checkpoint(tmp_path_factory.mktemp("ckpt"), fsdd_dir, digits=tuple(range(10)))
    wavs = tmp_path_factory.mktemp("wavs")
    paths = [fsdd_dir / f"{d}_george_0.wav" for d in range(10)]
    for path in paths[:2]:
        shutil.copy(path, wavs / path.name)
    rows = [extract_clip(str(p), p.read_bytes(), CFG) for p in paths]
    config = EvalConfig(n_per_digit=2, voicing_clips=6).validate()
    ctx = Context(checkpoint.load(folder), None, config, wavs_uri=str(wavs))
    ctx.__dict__["test"] = {k: np.array([r[k] for r in rows]) for k in TEST_COLUMNS}  # what Context.test caches
    return ctx


def test_the_voice_evaluator_yields_every_value(context):
    from vae.evaluation.evaluators import voice

    m = voice.evaluate(context)
    assert (m["voice_clips"], m["voicing_samples_clips"]) == (6, 6)
    for name in voice.METRICS:  # every headline metric, with the floor the report shows beside it
        assert name in m and f"{REFERENCES.get(name, name)}_floor" in m, name
    for name in ("voicing_recon", "voicing_samples", "voicing_real", "voicing_floor"):
        assert 0 <= m[name] <= 1, (name, m[name])
    assert m["voicing_real"] > 0.5 and m["voicing_floor"] > 0.5  # george's clips are voiced, through Griffin-Lim too
    assert m["pesq_nb_skipped"] + m["pesq_nb_floor_skipped"] == 0
    assert 1 <= m["pesq_nb"] < m["pesq_nb_floor"] <= 4.6  # an untrained model sounds worse than the vocoder alone


def test_the_unseen_voices_evaluator_adds_pesq(context):
    from vae.evaluation.evaluators import unseen_voices

    m = unseen_voices.evaluate(context)
    assert m["wavs_clips"] == 2 and m["pesq_nb_wavs_skipped"] == m["pesq_nb_wavs_floor_skipped"] == 0
    assert 1 <= m["pesq_nb_wavs"] < m["pesq_nb_wavs_floor"] <= 4.6
