"""Speaker augmentation (vae/augment.py): what each transform does to a hand-made spectrogram, that a
copy depends on its clip alone, and the Ray Data stage on the real small dataset."""

from __future__ import annotations

import numpy as np
import pytest

from vae.augment import augment_batch, change_tempo, tilt, warp_frequency
from vae.config import ConfigError, FeatureConfig, RunConfig, TrainConfig
from vae.dataset import parse_name, read_feature_config
from vae.training import augmented, load_datasets
from vae.worker import TRAIN, VAL

CFG = FeatureConfig()


def _peak_at(bin_: int, n_bins: int = 128, n_frames: int = 8) -> np.ndarray:
    spec = np.zeros((n_bins, n_frames), np.float32)
    spec[bin_] = 1.0
    return spec


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_a_warp_moves_a_formant_by_alpha(alpha):
    warped = warp_frequency(_peak_at(40), alpha)
    assert abs(np.argmax(warped[:, 0]) - 40 * alpha) <= 1
    assert np.allclose(warped, warped[:, :1])


def test_a_faster_tempo_ends_sooner_and_carries_the_pitch_along():
    spec = np.zeros((4, 20), np.float32)
    spec[:, 10] = 1.0
    f0 = np.where(np.arange(20) < 15, 120.0, 0.0).astype(np.float32)
    out, f0_out = change_tempo(spec, f0, 2.0)
    assert np.argmax(out[0]) == 5
    assert f0_out[7] == 120.0 and f0_out[8] == 0.0 and f0_out[-1] == 0.0


def test_a_tilt_raises_the_top_lowers_the_bottom_and_keeps_the_middle():
    flat = np.full((129, 3), 0.5, np.float32)
    out = tilt(flat, 9.0, CFG)
    width = CFG.db_ceiling - CFG.db_floor
    assert out[-1, 0] == pytest.approx(0.5 + 4.5 / width) and out[0, 0] == pytest.approx(0.5 - 4.5 / width)
    assert out[64, 0] == pytest.approx(0.5)


def test_a_copy_depends_on_its_clip_alone_and_scales_its_pitch_with_its_warp():
    rng = np.random.default_rng(0)
    batch = {
        "id": np.array(["3_theo_1", "4_george_2", "5_lucas_3"], dtype=object),
        "digit": np.array([3, 4, 5]),
        "spectrogram": rng.random((3, 128, 96), dtype=np.float32),
        "f0": np.full((3, 96), 100.0, np.float32),
    }
    tcfg = TrainConfig(augment_copies=1, augment_tempo=0.0)
    whole = augment_batch(batch, 1, tcfg, CFG)
    alone = augment_batch({k: v[1:2] for k, v in batch.items()}, 1, tcfg, CFG)
    assert np.array_equal(whole["spectrogram"][1], alone["spectrogram"][0])
    assert list(whole["id"]) == ["3_theo_1~a1", "4_george_2~a1", "5_lucas_3~a1"]
    assert np.array_equal(whole["digit"], batch["digit"])
    alphas = whole["f0"][:, 0] / 100.0
    assert np.all(np.abs(np.log(alphas)) <= np.log1p(tcfg.augment_warp) + 1e-6) and len(set(alphas)) == 3
    assert not np.array_equal(augment_batch(batch, 2, tcfg, CFG)["spectrogram"], whole["spectrogram"])


@pytest.mark.parametrize(
    "key, value", [("augment_copies", -1), ("augment_warp", 0.7), ("augment_tempo", -0.1), ("augment_tilt_db", 99)]
)
def test_bad_augmentation_settings_are_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=f"TrainConfig.{key}"):
        TrainConfig(**{key: value}).validate()


def test_the_stage_adds_copies_of_the_training_clips_only(ray_local, small_parquet):
    cfg = RunConfig(
        features=read_feature_config(small_parquet),
        train=TrainConfig(augment_copies=2, held_out_speaker="theo"),
    )
    real = load_datasets(small_parquet, cfg)
    both = augmented(real, cfg)
    assert both[VAL] is real[VAL]
    rows = both[TRAIN].to_pandas()
    n = real[TRAIN].count()
    assert len(rows) == 3 * n and rows["id"].nunique() == 3 * n
    copies = rows[rows["id"].str.contains("~a")]
    assert {parse_name(i.split("~")[0] + ".wav").speaker for i in copies["id"]} <= {
        "george",
        "jackson",
        "lucas",
        "yweweler",
    }
    spec = np.stack(copies["spectrogram"].to_numpy())
    assert spec.shape[1:] == (cfg.features.n_bins, cfg.features.n_frames) and 0 <= spec.min() and spec.max() <= 1


def test_the_copies_can_be_trained_on_beside_the_real_clips(ray_local, small_parquet):
    from vae.worker import load_shard

    cfg = RunConfig(features=read_feature_config(small_parquet), train=TrainConfig(augment_copies=1))
    data = load_shard(augmented(load_datasets(small_parquet, cfg), cfg)[TRAIN])
    assert data["spectrogram"].shape[0] == data["f0"].shape[0] == 2 * 150
    assert data["spectrogram"].dtype == np.float32 and data["f0"].dtype == np.float32
