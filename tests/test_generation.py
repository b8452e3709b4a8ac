"""jobs.generate and jobs.reconstruct on checkpoints of tiny models trained on real clips."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from vae import checkpoint, generation, storage
from vae.config import FeatureConfig, ModelConfig, PriorConfig, RunConfig, TrainConfig, preset
from vae.dataset import load_split_numpy, read_feature_config
from vae.models import build_vae
from vae.training import latent_stats, make_optimizer

from jobs import generate as generate_job
from jobs import reconstruct as reconstruct_job


@pytest.fixture(scope="module", params=["normal", "mixture"])
def trained_checkpoint(request, small_parquet, tmp_path_factory) -> str:
    """A tiny VAE trained for a few epochs in one process on the small Parquet, saved as a checkpoint."""
    features = read_feature_config(small_parquet)
    run_cfg = RunConfig(
        features=features,
        model=preset(ModelConfig, "tiny"),
        prior=PriorConfig(kind=request.param, components=3),
        train=TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3),
    ).validate()
    train = load_split_numpy(small_parquet, "train")
    vae = build_vae(features.shape, run_cfg.model, run_cfg.prior)
    vae.compile(optimizer=make_optimizer(run_cfg.train))
    vae.fit(train["spectrogram"], batch_size=16, epochs=3, verbose=0)
    stats = latent_stats(vae, request.param, [train])
    directory = str(tmp_path_factory.mktemp(f"ckpt_{request.param}") / "checkpoint_0003")
    checkpoint.save(directory, vae, vae.optimizer, 3, run_cfg, {"epoch": 3}, stats)
    return directory


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _check_wav(data: bytes, cfg: FeatureConfig) -> None:
    y, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert sr == cfg.sample_rate and len(y) == cfg.n_samples
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) > 0.5  # peak-normalised, not silent


def test_generate_from_the_prior_writes_sample_files(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "gen"
    assert generate_job.main(["--checkpoint", trained_checkpoint, "--out", str(out), "--n", "3", "--seed", "1"]) == 0
    result = _last_json(capsys)

    assert sorted(p.name for p in out.iterdir()) == [f"sample_{i}.{ext}" for i in range(3) for ext in ("png", "wav")]
    assert result["n"] == 3 and result["problems"] == [] and result["digit"] is None
    cfg = checkpoint.load(trained_checkpoint).run_config.features
    for f in result["files"]:
        _check_wav(storage.read_bytes(f), cfg)


def test_generate_a_digit_writes_digit_files_from_that_digits_latent_region(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "seven"
    assert generate_job.main(["--checkpoint", trained_checkpoint, "--out", str(out), "--n", "2", "--digit", "7", "--no-png"]) == 0
    result = _last_json(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["7_0.wav", "7_1.wav"]
    assert result["digit"] == 7 and result["problems"] == []

    loaded = checkpoint.load(trained_checkpoint)
    z7 = generation.sample_latents(loaded, 400, digit=7, seed=0)
    stats = loaded.latent_stats["digits"]["7"]
    if loaded.run_config.prior.kind == "normal":
        np.testing.assert_allclose(z7.mean(axis=0), stats["mean"], atol=4 * max(stats["spread"]) / np.sqrt(400) + 1e-6)
    else:
        # Draws from the components the digit's training clips fall in, weighted by their occupancy.
        occ = np.asarray(stats["occupancy"])
        means, scales = loaded.model.prior.means.numpy(), loaded.model.prior.scales().numpy()
        mean = occ @ means
        std = np.sqrt(occ @ (scales**2 + means**2) - mean**2)
        np.testing.assert_allclose(z7.mean(axis=0), mean, atol=4 * std.max() / np.sqrt(400))


def test_generate_a_digit_the_checkpoint_never_saw_is_a_clear_error(trained_checkpoint, tmp_path, capsys):
    copy = tmp_path / "ckpt"
    shutil.copytree(trained_checkpoint, copy)
    stats = json.loads((copy / checkpoint.LATENT_STATS).read_text())
    del stats["digits"]["9"]
    (copy / checkpoint.LATENT_STATS).write_text(json.dumps(stats))

    assert generate_job.main(["--checkpoint", str(copy), "--out", str(tmp_path / "out"), "--n", "1", "--digit", "9"]) == 1
    assert "digit 9" in _last_json(capsys)["error"]


def test_reconstruct_keeps_file_names_and_skips_bad_files(trained_checkpoint, fsdd_dir, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "nested").mkdir(parents=True)
    names = ["3_theo_0.wav", "8_george_2.wav", "nested/0_yweweler_1.wav"]
    for name in names:
        shutil.copy(fsdd_dir / name.split("/")[-1], src / name)
    (src / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (src / "empty.wav").write_bytes(b"")
    out = tmp_path / "out"

    assert reconstruct_job.main(["--checkpoint", trained_checkpoint, "--input", str(src), "--out", str(out)]) == 0
    captured = capsys.readouterr().out
    result = json.loads(captured.strip().splitlines()[-1])

    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.wav")) == sorted(names)
    assert sorted(s["file"].rsplit("/", 1)[-1] for s in result["skipped"]) == ["corrupt.wav", "empty.wav"]
    assert "skipped" in captured and "empty file" in captured
    assert result["written"] == 3 and np.isfinite(result["mean_log_spectral_distance_db"])
    cfg = checkpoint.load(trained_checkpoint).run_config.features
    for name in names:
        _check_wav((out / name).read_bytes(), cfg)


def test_reconstruct_and_generate_between_s3_locations(trained_checkpoint, fsdd_dir, make_bucket, capsys):
    bucket = make_bucket("generation-test")
    ckpt = f"{bucket}/runs/r/checkpoint_0003"
    storage.copy_tree(trained_checkpoint, ckpt)
    for name in ["5_lucas_3.wav", "6_jackson_4.wav"]:
        storage.write_bytes(f"{bucket}/in/{name}", (fsdd_dir / name).read_bytes())

    assert reconstruct_job.main(["--checkpoint", ckpt, "--input", f"{bucket}/in", "--out", f"{bucket}/out"]) == 0
    assert _last_json(capsys)["written"] == 2
    assert storage.list_files(f"{bucket}/out", ".wav") == [f"{bucket}/out/5_lucas_3.wav", f"{bucket}/out/6_jackson_4.wav"]

    assert generate_job.main(["--checkpoint", ckpt, "--out", f"{bucket}/gen", "--n", "1", "--digit", "2"]) == 0
    assert _last_json(capsys)["files"] == [f"{bucket}/gen/2_0.wav"]
    assert storage.exists(f"{bucket}/gen/2_0.png")


def test_per_clip_features_are_inverted_with_the_training_db_range():
    cfg = preset(FeatureConfig, "seed")
    loaded = checkpoint.LoadedModel(
        uri="mem",
        run_config=RunConfig(features=cfg),
        model=None,
        latent_stats={"db_min": -70.0, "db_max": 5.0, "digits": {"3": {"db_min": -60.0, "db_max": 2.0}}},
    )
    assert generation.db_range(loaded) == (-70.0, 5.0)
    assert generation.db_range(loaded, digit=3) == (-60.0, 2.0)
    assert generation.db_range(loaded, digit=4) == (-70.0, 5.0)
    fixed = checkpoint.LoadedModel(uri="mem", run_config=RunConfig(), model=None)
    assert generation.db_range(fixed) == (None, None)
