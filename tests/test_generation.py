"""jobs.generate and jobs.reconstruct on checkpoints of tiny models trained on real clips."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from in_process import train_in_process

from jobs import generate as generate_job
from jobs import reconstruct as reconstruct_job
from vae import checkpoint, generation, storage
from vae.config import (
    FeatureConfig,
    LossConfig,
    ModelConfig,
    PriorConfig,
    RunConfig,
    SamplingConfig,
    TrainConfig,
    preset,
)
from vae.dataset import load_split_numpy, read_feature_config
from vae.latent_stats import latent_stats

REPO = Path(__file__).resolve().parents[1]


# (prior kind, conditional model, where samples come from): the original setup, the mixture prior
# with occupancy weights, ex-post mixtures on an unconditional model, and a conditional model with
# a digit-tied prior and the calibrated decoder.
VARIANTS = {
    "normal-prior": ("normal", False, "prior", "mse"),
    "mixture-prior": ("mixture", False, "prior", "mse"),
    "normal-expost": ("normal", False, "expost", "mse"),
    "tied-conditional-expost": ("tied", True, "expost", "gaussian"),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def trained_checkpoint(request, small_parquet, tmp_path_factory) -> str:
    """A tiny VAE trained for a few epochs in one process on the small Parquet, saved as a checkpoint
    with its latent statistics and ex-post mixtures."""
    kind, conditional, sampler, reconstruction = VARIANTS[request.param]
    features = read_feature_config(small_parquet)
    run_cfg = RunConfig(
        features=features,
        model=replace(preset(ModelConfig, "tiny"), conditional=conditional),
        prior=PriorConfig(kind=kind, components=3),
        loss=LossConfig(reconstruction=reconstruction),
        train=TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3),
        sampling=SamplingConfig(sampler=sampler),
    ).validate()
    train = load_split_numpy(small_parquet, "train")
    vae, optimizer, _ = train_in_process(run_cfg, train)
    stats = latent_stats(vae, kind, [train])
    mu = generation.encode(checkpoint.LoadedModel("mem", run_cfg, vae), train["spectrogram"], train["digit"])
    expost = generation.fit_expost(mu, train["digit"], run_cfg.sampling)
    directory = str(tmp_path_factory.mktemp(f"ckpt_{request.param}") / "checkpoint_0003")
    checkpoint.save(directory, vae, optimizer, 3, run_cfg, {"epoch": 3}, stats, expost)
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
    assert (
        generate_job.main(
            ["--checkpoint", trained_checkpoint, "--out", str(out), "--n", "2", "--digit", "7", "--no-png"]
        )
        == 0
    )
    result = _last_json(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["7_0.wav", "7_1.wav"]
    assert result["digit"] == 7 and result["problems"] == []

    loaded = checkpoint.load(trained_checkpoint)
    z7, digits = generation.sample_latents(loaded, 400, digit=7, seed=0)
    assert np.all(digits == 7)
    mean, std = _expected_digit_latents(loaded, 7)
    np.testing.assert_allclose(z7.mean(axis=0), mean, atol=4 * std.max() / np.sqrt(400) + 1e-6)


def _expected_digit_latents(loaded, digit: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and per-dimension std of the latents a checkpoint should draw for ``digit``."""
    stats = loaded.latent_stats["digits"][str(digit)]
    if generation.sampler(loaded) == "expost":
        # The digit's own ex-post mixture.
        mixture = loaded.expost["digits"][str(digit)]
        w, means, covs = (np.asarray(mixture[k]) for k in ("weights", "means", "covariances"))
        mean = w @ means
        second = np.einsum("k,kd->d", w, np.diagonal(covs, axis1=1, axis2=2) + means**2)
        return mean, np.sqrt(second - mean**2)
    if loaded.run_config.prior.kind == "normal":
        return np.asarray(stats["mean"]), np.asarray(stats["spread"])
    # Draws from the components the digit's training clips fall in, weighted by their occupancy.
    occ = np.asarray(stats["occupancy"])
    means, scales = loaded.model.prior.means.numpy(), loaded.model.prior.scales().numpy()
    mean = occ @ means
    return mean, np.sqrt(occ @ (scales**2 + means**2) - mean**2)


def test_checkpoints_say_which_sampler_they_use_and_carry_their_ex_post_mixtures(trained_checkpoint):
    loaded = checkpoint.load(trained_checkpoint)
    assert generation.sampler(loaded) == loaded.run_config.sampling.sampler
    assert sorted(loaded.expost["digits"], key=int) == [str(d) for d in range(10)]
    # Unconditional draws take each digit with its training frequency, from that digit's region.
    z, digits = generation.sample_latents(loaded, 2000, seed=3)
    counts = np.bincount(digits, minlength=10) / 2000
    np.testing.assert_allclose(counts, 0.1, atol=0.03)
    if generation.sampler(loaded) == "expost":
        for d in (0, 5):
            mean, std = _expected_digit_latents(loaded, d)
            np.testing.assert_allclose(
                z[digits == d].mean(axis=0), mean, atol=5 * std.max() / np.sqrt((digits == d).sum())
            )


def test_a_conditional_model_decodes_with_the_digit_asked_for(trained_checkpoint):
    loaded = checkpoint.load(trained_checkpoint)
    if not loaded.run_config.model.conditional:
        pytest.skip("unconditional model")
    z = np.zeros((2, loaded.run_config.model.latent_dim), np.float32)
    three, eight = generation.decode(loaded, z, 3), generation.decode(loaded, z, 8)
    assert not np.allclose(three, eight)  # the same z says another digit
    with pytest.raises(generation.GenerationError, match="conditional"):
        generation.decode(loaded, z)


def test_generate_a_digit_the_checkpoint_never_saw_is_a_clear_error(trained_checkpoint, tmp_path, capsys):
    copy = tmp_path / "ckpt"
    shutil.copytree(trained_checkpoint, copy)
    stats = json.loads((copy / checkpoint.LATENT_STATS).read_text())
    del stats["digits"]["9"]
    checkpoint.write_json(str(copy), checkpoint.LATENT_STATS, stats)

    assert (
        generate_job.main(["--checkpoint", str(copy), "--out", str(tmp_path / "out"), "--n", "1", "--digit", "9"]) == 1
    )
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
    assert storage.list_files(f"{bucket}/out", ".wav") == [
        f"{bucket}/out/5_lucas_3.wav",
        f"{bucket}/out/6_jackson_4.wav",
    ]

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


@pytest.mark.parametrize("kind", ["normal", "mixture"])
def test_stored_legacy_checkpoints_load_and_generate(kind, tmp_path, capsys):
    """tests/data/legacy_checkpoints/: tiny checkpoints of an earlier layout (no manifest, no ex-post
    mixtures, no sampling section and the loss keys in ``prior`` in config.json, read by vae.compat):
    they load, say they sample from the prior, and generate a digit and from the prior."""
    legacy = str(REPO / "tests" / "data" / "legacy_checkpoints" / kind)
    loaded = checkpoint.load(legacy)
    assert loaded.run_config.prior.kind == kind and not loaded.run_config.model.conditional
    assert loaded.expost == {} and generation.sampler(loaded) == "prior"
    mean, std = _expected_digit_latents(loaded, 4)
    z4, _ = generation.sample_latents(loaded, 400, digit=4, seed=0)
    np.testing.assert_allclose(z4.mean(axis=0), mean, atol=4 * std.max() / np.sqrt(400) + 1e-6)

    for digit in (["--digit", "4"], []):
        out = tmp_path / f"gen{len(digit)}"
        assert generate_job.main(["--checkpoint", legacy, "--out", str(out), "--n", "2", "--no-png", *digit]) == 0
        assert _last_json(capsys)["problems"] == []
        for wav in out.iterdir():
            _check_wav(wav.read_bytes(), loaded.run_config.features)


def test_a_model_with_a_local_code_reconstructs_through_it_and_generates_from_its_prior(fsdd_dir, tmp_path, capsys):
    from tiny_checkpoint import make_checkpoint

    uri = make_checkpoint(tmp_path / "ckpt", fsdd_dir, conditional=True, pitch=True, local_channels=2)
    loaded = checkpoint.load(uri)
    model, feats = loaded.model, loaded.run_config.features
    from vae.dataset import extract_clip

    rows = [
        extract_clip(str(p), p.read_bytes(), feats) for p in (fsdd_dir / "3_theo_0.wav", fsdd_dir / "8_george_2.wav")
    ]
    specs, digits = np.stack([r["spectrogram"] for r in rows]), np.array([3, 8])

    raw = generation.reconstruct(loaded, specs, digits, harmonics=False)
    np.testing.assert_allclose(raw, model.reconstruct(specs, digits).numpy()[..., 0], rtol=1e-5, atol=1e-6)
    z = generation.encode(loaded, specs, digits)
    assert not np.allclose(raw, generation.decode(loaded, z, digits, harmonics=False))  # the local code counts

    mean = generation.decode(loaded, z, digits, harmonics=False)  # the default: the local prior's mean
    np.testing.assert_allclose(mean, model.decode(z, digits).numpy()[..., 0], rtol=1e-5, atol=1e-6)
    hot = replace(
        loaded,
        run_config=replace(loaded.run_config, sampling=replace(loaded.run_config.sampling, local_temperature=1.0)),
    )
    drawn = [generation.decode(hot, z, digits, harmonics=False, seed=s) for s in (0, 0, 1)]
    np.testing.assert_array_equal(drawn[0], drawn[1])
    assert not np.allclose(drawn[0], drawn[2]) and not np.allclose(drawn[0], mean)

    out = tmp_path / "recon"
    assert (
        reconstruct_job.main(["--checkpoint", uri, "--input", str(fsdd_dir / "3_theo_0.wav"), "--out", str(out)]) == 0
    )
    _check_wav((out / "3_theo_0.wav").read_bytes(), feats)
