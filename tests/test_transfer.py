"""Any digit in your voice: vae.generation.transfer and jobs.transfer on untrained tiny checkpoints (no Ray)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tiny_checkpoint import make_checkpoint

from jobs import transfer as transfer_job
from vae import checkpoint, generation, storage
from vae.dataset import parse_name

REPO = Path(__file__).resolve().parents[1]
CLIPS = ("3_theo_0.wav", "5_george_1.wav", "8_lucas_2.wav")


@pytest.fixture(scope="module")
def conditional(fsdd_dir, tmp_path_factory) -> str:
    """A conditional model with a pitch head: decoding draws its harmonics in."""
    return make_checkpoint(tmp_path_factory.mktemp("cond") / "checkpoint_0000", fsdd_dir, conditional=True, pitch=True)


@pytest.fixture(scope="module")
def unconditional(fsdd_dir, tmp_path_factory) -> str:
    return make_checkpoint(tmp_path_factory.mktemp("uncond") / "checkpoint_0000", fsdd_dir)


def _run(job_main, argv: list[str], capsys) -> tuple[int, dict]:
    code = job_main(argv)
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_clip_said_as_its_own_digit_is_its_reconstruction(conditional, fsdd_dir):
    from vae.evaluation.evaluators.unseen_voices import read_voice

    loaded = checkpoint.load(conditional)
    voices = [read_voice(loaded, str(fsdd_dir / name)) for name in CLIPS]
    specs, digits = np.stack([v.spectrogram for v in voices]), np.array([v.digit for v in voices])
    said = generation.transfer(loaded, specs, digits, range(10), match_voice=False, code_scale=1.0)
    assert loaded.run_config.model.pitch and said.shape == (len(CLIPS), 10, *loaded.run_config.features.shape)
    raw = generation.transfer(loaded, specs, digits, range(10), harmonics=False, match_voice=False, code_scale=1)
    z = generation.encode(loaded, specs, digits)
    np.testing.assert_allclose(
        raw[np.arange(len(CLIPS)), digits], generation.decode(loaded, z, digits, harmonics=False), atol=1e-5
    )
    # Drawn, a frame whose voicing the untrained head puts at ~0.5 may fall either side in another batch.
    recon = generation.reconstruct(loaded, specs, digits)
    assert np.mean(np.isclose(said[np.arange(len(CLIPS)), digits], recon, atol=1e-5)) > 0.95
    assert np.abs(said[:, 1] - said[:, 7]).max() > 1e-3, "the decoder ignores the digit it is given"
    one = generation.transfer(loaded, specs[:1], 3, [7], match_voice=False, code_scale=1.0)  # one digit for all
    # float32 kernels differ by batch size (~1e-5), and drawn voicing may flip as above
    assert np.mean(np.isclose(one[0, 0], said[0, 7], atol=1e-4)) > 0.95


@pytest.mark.parametrize("local_channels", [0, 2])
def test_an_adapted_transfer_says_its_clip_closer_and_leaves_the_checkpoint_as_it_was(
    local_channels, fsdd_dir, tmp_path
):
    from vae.evaluation.evaluators.unseen_voices import read_voice

    uri = make_checkpoint(tmp_path / "ckpt", fsdd_dir, conditional=True, pitch=True, local_channels=local_channels)
    loaded = checkpoint.load(uri)
    voices = [read_voice(loaded, str(fsdd_dir / name)) for name in CLIPS]
    specs, digits = np.stack([v.spectrogram for v in voices]), np.array([v.digit for v in voices])
    before = [v.numpy().copy() for v in loaded.model.weights]
    kw = {"harmonics": False, "match_voice": False, "code_scale": 1.0}
    plain = generation.transfer(loaded, specs, digits, range(10), **kw)
    adapted = generation.transfer(loaded, specs, digits, range(10), adapt_steps=80, adapt_rate=1e-2, **kw)

    own = np.arange(len(CLIPS)), digits
    assert adapted.shape == plain.shape
    # each clip, said as its own digit, is nearer the clip once the renderer has been fitted to it
    error, error_before = (np.abs(said[own] - specs).mean(axis=(1, 2)) for said in (adapted, plain))
    assert np.all(error < error_before) and error.mean() < 0.85 * error_before.mean(), (error, error_before)
    assert np.abs(adapted[:, 1] - adapted[:, 7]).max() > 1e-3, "the adapted decoder ignores the digit it is given"
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, loaded.model.weights, strict=True))
    again = generation.transfer(loaded, specs[1:2], digits[1:2], range(10), adapt_steps=80, adapt_rate=1e-2, **kw)
    np.testing.assert_allclose(again[0], adapted[1], atol=1e-4)  # each clip starts from the checkpoint's weights
    for bad in ({"adapt_steps": -1}, {"adapt_steps": 2.5}, {"adapt_steps": 3, "adapt_rate": 0.0}):
        with pytest.raises(generation.GenerationError, match="adapt_steps="):
            generation.transfer(loaded, specs[:1], digits[:1], [4], **bad, **kw)


def test_a_transfer_keeps_its_share_of_each_code_from_the_codes_centre(conditional, fsdd_dir):
    from vae.config import ConfigError
    from vae.evaluation.evaluators.unseen_voices import read_voice

    loaded = checkpoint.load(conditional)
    voices = [read_voice(loaded, str(fsdd_dir / name)) for name in CLIPS]
    specs, digits = np.stack([v.spectrogram for v in voices]), np.array([v.digit for v in voices])
    stats = loaded.latent_stats["digits"].values()
    counts = np.array([d["count"] for d in stats], float)
    centre = generation.code_centre(loaded)
    np.testing.assert_allclose(centre, counts @ np.array([d["mean"] for d in stats]) / counts.sum(), atol=1e-6)
    assert np.abs(centre).max() > 0  # an untrained encoder's codes are not centred on 0: the centre is read

    def raw(**kw):
        return generation.transfer(loaded, specs, digits, range(10), harmonics=False, match_voice=False, **kw)

    z = generation.encode(loaded, specs, digits)
    half = raw(code_scale=0.5)
    expected = generation.decode(
        loaded, np.repeat(centre + 0.5 * (z - centre), 10, axis=0), np.tile(range(10), 3), harmonics=False
    )
    np.testing.assert_allclose(half.reshape(-1, *half.shape[2:]), expected, atol=1e-5)
    # None of the clip's code: every clip said as a digit is the same, the label alone decides.
    nothing = raw(code_scale=0.0)
    np.testing.assert_allclose(nothing[0], nothing[1], atol=1e-5)
    assert np.abs(half[0] - half[1]).max() > 1e-4  # (an untrained decoder barely follows its code)
    # The default is the checkpoint's own.
    assert loaded.run_config.sampling.transfer_code_scale == 0.5
    np.testing.assert_allclose(raw(), raw(code_scale=0.5), atol=1e-6)
    with pytest.raises(ConfigError, match=r"code_scale=1.5 must be in \[0, 1\]"):
        raw(code_scale=1.5)


def test_a_matched_transfer_takes_the_colour_and_pitch_of_its_voice(conditional, fsdd_dir):
    from vae.evaluation.evaluators.unseen_voices import read_voice
    from vae.features import long_term_spectrum, long_term_spread

    loaded = checkpoint.load(conditional)
    feats = loaded.run_config.features
    voices = [read_voice(loaded, str(fsdd_dir / name)) for name in CLIPS]
    specs, digits = np.stack([v.spectrogram for v in voices]), np.array([v.digit for v in voices])
    own = np.arange(len(CLIPS)), digits
    plain = generation.transfer(loaded, specs, digits, range(10), match_voice=False, code_scale=1)
    matched = generation.transfer(loaded, specs, digits, range(10), code_scale=1)
    # Said as its own digit, a clip's long-term spectrum is its own, not the untrained decoder's.
    colour = long_term_spectrum(specs, feats)
    before = np.abs(long_term_spectrum(plain[own], feats) - colour).mean()
    after = np.abs(long_term_spectrum(matched[own], feats) - colour).mean()
    assert after < 0.25 * before, (before, after)
    # And the spread of its level about that colour moves towards the clip's, by at most SPREAD_RATIO_LIMIT.
    spread, limit = long_term_spread(specs, feats), generation.SPREAD_RATIO_LIMIT
    plain_spread, matched_spread = long_term_spread(plain[own], feats), long_term_spread(matched[own], feats)
    assert np.abs(matched_spread - spread).mean() < np.abs(plain_spread - spread).mean()
    assert np.all(matched_spread <= limit * plain_spread + 0.05)
    # Every digit of a clip is moved by the same colour: the differences between its digits stay.
    np.testing.assert_allclose(
        np.mean(matched[:, 1] - matched[:, 7], axis=-1), np.mean(plain[:, 1] - plain[:, 7], axis=-1), atol=0.05
    )
    # The pitch: a source at the pitch the model predicts draws what no source pitch does; one an octave up does not.
    predicted = generation.decode_pitch(loaded, generation.encode(loaded, specs, digits), digits)
    same = generation.transfer(loaded, specs, digits, range(10), source_f0=predicted, code_scale=1)
    np.testing.assert_allclose(same, matched, atol=1e-5)
    octave = generation.transfer(loaded, specs, digits, range(10), source_f0=2 * predicted, code_scale=1)
    assert np.abs(octave - matched).max() > 0.05


def test_the_posterior_gives_the_codes_means_and_their_spread(conditional, fsdd_dir):
    from vae.evaluation.evaluators.unseen_voices import read_voice

    loaded = checkpoint.load(conditional)
    voices = [read_voice(loaded, str(fsdd_dir / name)) for name in CLIPS]
    specs, digits = np.stack([v.spectrogram for v in voices]), np.array([v.digit for v in voices])
    means, log_var = generation.posterior(loaded, specs, digits, batch_size=2)
    assert means.shape == log_var.shape == (len(CLIPS), loaded.run_config.model.latent_dim)
    np.testing.assert_allclose(means, generation.encode(loaded, specs, digits), atol=1e-5)
    assert np.all(np.isfinite(log_var)) and np.ptp(log_var) > 0


def test_pitch_ratio_compares_the_voiced_frames_medians():
    f0 = np.array([[0, 200, 200, 220, 0], [0, 0, 0, 0, 0], [100, 100, 0, 0, 0]], np.float32)
    reference = np.array([[100, 100, 110, 0, 0], [100, 100, 0, 0, 0], [0, 0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(generation.pitch_ratio(f0, reference), [2.0, 1.0, 1.0], rtol=1e-6)


def test_the_loudness_probe_reads_a_digit_from_how_long_it_is_said_and_nothing_from_one_contour():
    from benchmarks.transfer import reference_probes
    from vae.config import FeatureConfig

    rng = np.random.default_rng(0)

    def clips(n: int, by_digit: bool) -> dict:
        digits = np.arange(n) % 10
        specs = rng.uniform(0, 0.1, (n, 8, 40))
        for i, d in enumerate(digits):
            specs[i, :, 5 : 5 + (3 * d + 6 if by_digit else 20)] += 0.8
        return {"spectrogram": specs, "digit": digits}

    def loudness(train: dict, test: dict) -> float:
        return reference_probes(train, test, FeatureConfig())["loudness"]["linear"]

    assert loudness(clips(400, True), clips(200, True)) >= 0.9
    assert loudness(clips(400, False), clips(200, False)) <= 0.25


def test_an_unconditional_checkpoint_is_refused_by_name(unconditional, fsdd_dir, tmp_path, capsys):
    loaded = checkpoint.load(unconditional)
    message = f"checkpoint {unconditional} is not digit-conditional: transfer needs a digit-conditional model"
    with pytest.raises(generation.GenerationError, match=message):
        generation.transfer(loaded, np.zeros((1, *loaded.run_config.features.shape), np.float32), [3], [4])
    argv = ["--checkpoint", unconditional, "--wavs", str(fsdd_dir / CLIPS[0]), "--out", str(tmp_path / "out")]
    code, last = _run(transfer_job.main, argv, capsys)
    assert code == 1 and message in last["error"] and "--conditional" in last["error"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--digits", "7", "10"], "digits are 0-9, got 10"),
        (["--digits", "-1"], "digits are 0-9, got -1"),
        (["--digit", "12"], "digits are 0-9, got 12"),
        (["--code-scale", "1.5"], "--code-scale=1.5 must be in [0, 1]"),
        (["--code-scale", "half"], "expected a number, got 'half'"),
    ],
)
def test_bad_digits_and_code_scales_are_refused_before_anything_loads(flags, said, fsdd_dir, tmp_path, capsys):
    argv = ["--checkpoint", str(tmp_path / "nowhere"), "--wavs", str(fsdd_dir / CLIPS[0]), "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        transfer_job.main(argv + flags)
    assert exit_.value.code == 2 and said in capsys.readouterr().err
    with pytest.raises(generation.GenerationError, match="digits are 0-9"):
        generation.check_digits([3, 10])


def test_a_digit_named_twice_is_refused(fsdd_dir, tmp_path, capsys):
    argv = ["--checkpoint", str(tmp_path / "nowhere"), "--wavs", str(fsdd_dir / CLIPS[0]), "--out", str(tmp_path)]
    code, last = _run(transfer_job.main, argv + ["--digits", "4", "4"], capsys)
    assert code == 1 and "name a digit twice" in last["error"], last


def test_every_file_is_named_after_its_target_digit(conditional, fsdd_dir, tmp_path, capsys):
    wavs = tmp_path / "wavs"
    (wavs / "sub").mkdir(parents=True)
    shutil.copy(fsdd_dir / CLIPS[0], wavs / CLIPS[0])
    shutil.copy(fsdd_dir / "3_jackson_4.wav", wavs / "sub" / "me three.wav")  # no digit in its name: --digit
    out = tmp_path / "out"
    argv = ["--checkpoint", conditional, "--wavs", str(wavs), "--out", str(out), "--digit", "3", "--digits", "7", "0"]
    code, last = _run(transfer_job.main, argv, capsys)
    assert code == 0 and last["written"] == 4 and last["digits"] == [7, 0] and not last["skipped"]
    wavs_written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    folder = storage.safe_relpath("sub/me three")  # the input's path made safe, as jobs.reconstruct does
    assert wavs_written == [
        "3_theo_0/0_theo_0.wav",
        "3_theo_0/7_theo_0.wav",
        f"{folder}/0_me-three_0.wav",
        f"{folder}/7_me-three_0.wav",
    ]
    for item in last["inputs"]:
        assert item["digit"] == 3
        assert [parse_name(f).digit for f in item["files"]] == [7, 0]
    for wav in out.rglob("*.wav"):
        y, rate = sf.read(wav)
        assert rate == 8000 and np.all(np.isfinite(y))
        assert wav.with_suffix(".png").exists()
    assert json.loads((out / "transfer.json").read_text()) == last
    page = (out / "index.html").read_text()
    assert page.count("<audio") == 4 and "me three.wav" in page and 'src="3_theo_0/7_theo_0.wav"' in page
    raw = tmp_path / "raw"
    code, said = _run(
        transfer_job.main, [*argv[:5], str(raw), *argv[6:], "--no-match-voice", "--no-png", "--code-scale", "1"], capsys
    )
    assert said["match_voice"] is False and said["code_scale"] == 1.0
    matched, unmatched = (sf.read(folder / "3_theo_0" / "7_theo_0.wav")[0] for folder in (out, raw))
    assert code == 0 and np.abs(matched - unmatched).max() > 0.01, "--no-match-voice changed nothing"


def test_the_digit_comes_from_the_name_and_every_digit_by_default(conditional, fsdd_dir, tmp_path, capsys):
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    shutil.copy(fsdd_dir / CLIPS[1], wavs / CLIPS[1])
    shutil.copy(fsdd_dir / CLIPS[1], wavs / "unnamed.wav")  # a conditional model needs its digit: skipped
    out = tmp_path / "out"
    code, last = _run(
        transfer_job.main, ["--checkpoint", conditional, "--wavs", str(wavs), "--out", str(out), "--no-png"], capsys
    )
    assert code == 0 and last["written"] == 10 and [i["digit"] for i in last["inputs"]] == [5]
    assert last["match_voice"] is True and last["code_scale"] == 0.5  # what it used: the checkpoint's
    assert len(last["skipped"]) == 1 and "pass --digit" in last["skipped"][0]["reason"]
    names = sorted(p.name for p in (out / "5_george_1").iterdir())
    assert names == [f"{d}_george_1.wav" for d in range(10)]


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\nfrom jobs import transfer\ntry:\n    transfer.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--digits" in proc.stdout and proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("kind", ["voice_print", "cepstral", "cepstral_mean_normalised"])
def test_the_speaker_recogniser_knows_each_voice_from_its_other_takes(kind, small_parquet, fsdd_dir):
    from vae.dataset import load_split_numpy, read_feature_config
    from vae.evaluation.speakers import CepstralSpeakerRecogniser, SpeakerRecogniser

    feats = read_feature_config(small_parquet)
    train = load_split_numpy(small_parquet, "train", ["speaker", "spectrogram"])
    if kind == "voice_print":
        speakers = SpeakerRecogniser(train["spectrogram"], train["speaker"], feats)
    else:
        normalised = kind == "cepstral_mean_normalised"
        speakers = CepstralSpeakerRecogniser(train["spectrogram"], train["speaker"], feats, normalised)
    test = load_split_numpy(small_parquet, "test", ["id", "speaker"])
    waves = [sf.read(fsdd_dir / f"{clip_id}.wav", dtype="float32")[0] for clip_id in test["id"]]
    heard = speakers.listen(waves)
    assert np.mean(heard == test["speaker"]) >= 0.8, list(zip(heard, test["speaker"]))


def test_cepstra_less_their_mean_ignore_a_constant_colour(small_parquet):
    from vae.dataset import load_split_numpy, read_feature_config
    from vae.evaluation.speakers import cepstra

    feats = read_feature_config(small_parquet)
    specs = 0.2 + 0.6 * load_split_numpy(small_parquet, "test", ["spectrogram"])["spectrogram"][:8]
    coloured = specs + np.linspace(-0.05, 0.05, feats.n_bins, dtype=np.float32)[:, None]  # a tilt, none clipped
    plain, normalised = cepstra(specs, feats, False), cepstra(specs, feats, True)
    moved, kept = cepstra(coloured, feats, False), cepstra(coloured, feats, True)
    shift = np.mean([np.abs(a.mean(0) - b.mean(0)).mean() for a, b in zip(plain, moved)])
    residual = np.mean([np.abs(a - b).mean() for a, b in zip(normalised, kept)])
    assert residual < 0.25 * shift, (shift, residual)


def test_the_trained_speakers_probe_leaves_the_held_out_speaker_out_of_its_fit(conditional, fsdd_dir):
    from dataclasses import replace

    from benchmarks.transfer import probe, probes
    from vae.evaluation.evaluators.unseen_voices import read_voice

    loaded = checkpoint.load(conditional)
    names = [f"{d}_{s}_{t}.wav" for s in ("theo", "george") for d in range(10) for t in range(2)]
    voices = [read_voice(loaded, str(fsdd_dir / name)) for name in names]
    split = {
        "spectrogram": np.stack([v.spectrogram for v in voices]),
        "digit": np.array([v.digit for v in voices]),
        "speaker": np.array([parse_name(n).speaker for n in names]),
    }
    assert "digit_probe_trained_speakers_accuracy" not in probes(loaded, split, split)  # no speaker held out
    train_cfg = replace(loaded.run_config.train, held_out_speaker="theo")
    held_out = replace(loaded, run_config=replace(loaded.run_config, train=train_cfg))
    measured = probes(held_out, split, split)["digit_probe_trained_speakers_accuracy"]
    z = generation.posterior(loaded, split["spectrogram"], split["digit"])[0]
    george = split["speaker"] == "george"
    assert measured == probe(z[george], split["digit"][george], z, split["digit"])


@pytest.mark.parametrize(("spread", "readable"), [(0.01, True), (30.0, False)])
def test_the_network_probe_on_drawn_codes_reads_only_what_survives_the_posteriors_spread(monkeypatch, spread, readable):
    from types import SimpleNamespace

    from benchmarks.transfer import probes

    rng = np.random.default_rng(0)
    digits = np.repeat(np.arange(10), 30)
    means = np.eye(10)[digits] + 0.05 * rng.standard_normal((len(digits), 10))  # the digit, plain in the means
    split = {"spectrogram": means, "digit": digits, "speaker": np.array(["theo", "george"] * 150)}
    posterior = (means, np.full_like(means, 2 * np.log(spread)))
    monkeypatch.setattr(generation, "posterior", lambda loaded, spectrograms, labels: posterior)
    loaded = SimpleNamespace(run_config=SimpleNamespace(train=SimpleNamespace(held_out_speaker="")))
    measured = probes(loaded, split, split)
    assert measured["digit_probe_network_accuracy"] > 0.9
    drawn = measured["digit_probe_network_drawn_accuracy"]
    assert drawn > 0.9 if readable else drawn < 0.3, drawn


def test_the_reference_probes_read_a_digit_from_its_colour_and_nothing_once_its_mean_is_taken_out():
    from benchmarks.transfer import reference_probes
    from vae.config import FeatureConfig

    rng = np.random.default_rng(0)

    def clips(n: int) -> dict:
        digits = np.arange(n) % 10
        colours = 0.4 + 0.03 * np.sin(np.outer(digits + 1, np.arange(16)))  # each digit its own colour
        specs = np.repeat(colours[:, :, None], 30, axis=2) + 0.02 * rng.standard_normal((n, 16, 30))
        return {"spectrogram": specs, "digit": digits}

    measured = reference_probes(clips(400), clips(200), FeatureConfig())
    assert measured["colour"]["linear"] >= 0.9 and measured["colour"]["network"] >= 0.9, measured
    assert max(measured["colour_less_digit_mean"].values()) <= 0.25, measured
