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
    said = generation.transfer(loaded, specs, digits, range(10))
    assert loaded.run_config.model.pitch and said.shape == (len(CLIPS), 10, *loaded.run_config.features.shape)
    raw = generation.transfer(loaded, specs, digits, range(10), harmonics=False)
    z = generation.encode(loaded, specs, digits)
    np.testing.assert_allclose(
        raw[np.arange(len(CLIPS)), digits], generation.decode(loaded, z, digits, harmonics=False), atol=1e-5
    )
    # Drawn, a frame whose voicing the untrained head puts at ~0.5 may fall either side in another batch.
    recon = generation.reconstruct(loaded, specs, digits)
    assert np.mean(np.isclose(said[np.arange(len(CLIPS)), digits], recon, atol=1e-5)) > 0.95
    assert np.abs(said[:, 1] - said[:, 7]).max() > 1e-3, "the decoder ignores the digit it is given"
    one = generation.transfer(loaded, specs[:1], 3, [7])  # one source digit for all, one target
    # float32 kernels differ by batch size (~1e-5), and drawn voicing may flip as above
    assert np.mean(np.isclose(one[0, 0], said[0, 7], atol=1e-4)) > 0.95


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
    ],
)
def test_bad_digits_are_refused_before_anything_loads(flags, said, fsdd_dir, tmp_path, capsys):
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


def test_the_speaker_recogniser_knows_each_voice_from_its_other_takes(small_parquet, fsdd_dir):
    from vae.dataset import load_split_numpy, read_feature_config
    from vae.evaluation.speakers import SpeakerRecogniser

    feats = read_feature_config(small_parquet)
    train = load_split_numpy(small_parquet, "train", ["speaker", "spectrogram"])
    speakers = SpeakerRecogniser(train["spectrogram"], train["speaker"], feats)
    test = load_split_numpy(small_parquet, "test", ["id", "speaker"])
    waves = [sf.read(fsdd_dir / f"{clip_id}.wav", dtype="float32")[0] for clip_id in test["id"]]
    heard = speakers.listen(waves)
    assert np.mean(heard == test["speaker"]) >= 0.8, list(zip(heard, test["speaker"]))
