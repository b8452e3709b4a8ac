"""A model that learns the voice's pitch, and leave-one-speaker-out training, on a real local Ray with the
tiny model and the real small Parquet dataset."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from vae import checkpoint, generation
from vae.config import ConfigError, EvalConfig, ModelConfig, PriorConfig, RunConfig, TrainConfig, preset
from vae.dataset import load_split_numpy, parquet_files, parse_name, write_dataset
from vae.evaluation.run import evaluate_run
from vae.training import fit, load_datasets
from vae.worker import TRAIN, VAL

HELD_OUT = "theo"


def _speakers(ds) -> set[str]:
    return {parse_name(f"{i}.wav").speaker for i in ds.to_pandas()["id"]}


@pytest.fixture(scope="module")
def pitch_run(ray_local, small_parquet, tmp_path_factory):
    cfg = RunConfig(
        model=preset(ModelConfig, "tiny", pitch=True, conditional=True),
        prior=PriorConfig(kind="normal"),
        train=TrainConfig(epochs=2, batch_size=16, num_workers=1, max_failures=0, held_out_speaker=HELD_OUT),
    )
    return fit(cfg, small_parquet, str(tmp_path_factory.mktemp("runs")), "pitch")


def test_the_dataset_carries_a_pitch_track_per_frame(small_parquet):
    test = load_split_numpy(small_parquet, "test", ["f0", "spectrogram"])
    assert test["f0"].shape == (len(test["spectrogram"]), test["spectrogram"].shape[2])
    voiced = test["f0"][test["f0"] > 0]
    assert 0.15 < len(voiced) / test["f0"].size < 0.8 and 60 <= voiced.min() and voiced.max() <= 400


def test_a_held_out_speaker_never_trains_or_validates(ray_local, small_parquet):
    everyone = load_datasets(small_parquet)
    held_out = load_datasets(small_parquet, RunConfig(train=TrainConfig(held_out_speaker=HELD_OUT)))
    for split in (TRAIN, VAL):
        assert HELD_OUT in _speakers(everyone[split])
        assert _speakers(held_out[split]) == _speakers(everyone[split]) - {HELD_OUT}
        assert held_out[split].count() == everyone[split].count() * 4 // 5


def test_a_pitch_model_trains_generates_with_harmonics_and_scores_the_held_out_voice(pitch_run, small_parquet):
    loaded = checkpoint.load(pitch_run.best_checkpoint)
    assert loaded.run_config.model.pitch and loaded.run_config.train.held_out_speaker == HELD_OUT
    z = np.zeros((3, loaded.run_config.model.latent_dim), np.float32)
    f0 = generation.decode_pitch(loaded, z, [1, 2, 3])
    assert f0.shape == (3, loaded.run_config.features.n_frames) and np.all((f0 == 0) | (f0 > 10))
    raw = generation.decode(loaded, z, [1, 2, 3], harmonics=False)
    drawn = generation.render(loaded, raw, z, [1, 2, 3])
    assert np.array_equal(drawn[:, :, f0[0] == 0][0], raw[:, :, f0[0] == 0][0])
    # A shallower comb moves the voiced frames less; none at depth 0.
    moved = {}
    for depth in (0.0, 10.0, 30.0):
        shallow = checkpoint.with_sampling(loaded, {"harmonic_depth_db": depth})
        moved[depth] = float(np.abs(generation.render(shallow, raw, z, [1, 2, 3]) - raw).sum())
    assert moved[0.0] == 0
    if (f0 > 0).any():
        assert 0 < moved[10.0] <= moved[30.0]

    metrics = evaluate_run(loaded, small_parquet, config=EvalConfig(n_per_digit=1, n_unconditional=4))
    assert metrics["held_out_speaker"] == HELD_OUT and metrics["held_out_clips"] == 20
    assert metrics["held_out_lsd_db"] > metrics["held_out_lsd_db_floor"] > 0
    assert 0 <= metrics["held_out_voicing"] <= 1 and 0 <= metrics["held_out_voicing_floor"] <= 1
    assert 1 <= metrics["held_out_pesq_nb_floor"] <= 4.6
    assert 0 <= metrics["held_out_heard_as_speaker"] <= 1 and metrics["held_out_heard_as_speaker_floor"] >= 0.8


def test_a_sweep_scores_the_voicing_of_samples_and_the_held_out_speakers_train_takes(pitch_run, small_parquet):
    from vae.evaluation.evaluators.held_out import train_takes
    from vae.evaluation.evaluators.samples import SampleScorer
    from vae.evaluation.evaluators.voice import voicing_floor

    loaded = checkpoint.load(pitch_run.best_checkpoint)
    measured = SampleScorer(None, n_per_digit=1, terms=("voicing", "held_out"), data_uri=small_parquet)(loaded)
    assert set(measured) == {"voicing_samples", "held_out_recon_mse"} and 0 <= measured["voicing_samples"] <= 1

    train = load_split_numpy(small_parquet, "train", ["speaker", "digit", "spectrogram"])
    takes = train_takes(small_parquet, HELD_OUT)  # the train split's takes: its test takes stay unseen
    theo = train["speaker"] == HELD_OUT
    assert np.array_equal(takes["spectrogram"], train["spectrogram"][theo]) and len(takes["digit"]) == 30
    recon = generation.reconstruct(loaded, takes["spectrogram"], takes["digit"])  # harmonics drawn, as heard
    assert measured["held_out_recon_mse"] == pytest.approx(np.mean((recon - takes["spectrogram"]) ** 2), rel=1e-5)
    with pytest.raises(ValueError, match="no clip of the held-out speaker 'nobody'"):
        train_takes(small_parquet, "nobody")
    assert 0.3 < voicing_floor(small_parquet, EvalConfig(voicing_clips=10)) <= 1  # real speech is mostly voiced


def test_a_pitch_model_on_a_dataset_without_pitch_tracks_is_refused_by_name(small_parquet, tmp_path):
    loc, files = parquet_files(small_parquet)
    write_dataset(str(tmp_path / "old"), pq.read_table(files[0], filesystem=loc.fs).drop_columns(["f0"]))
    pitch = RunConfig(model=preset(ModelConfig, "tiny", pitch=True))
    with pytest.raises(ConfigError, match="no 'f0' column.*preprocess its recordings again"):
        load_datasets(str(tmp_path / "old"), pitch)
