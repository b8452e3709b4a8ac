"""jobs.ingest on one long recording made by joining real FSDD clips of one speaker."""

from __future__ import annotations

import io
import json

import librosa
import numpy as np
import pytest
import soundfile as sf

from jobs import ingest as ingest_job
from vae.config import FeatureConfig, IngestConfig, preset
from vae.dataset import extract_clip, parse_name

RATE = 44100  # not the clips' 8 kHz: any sample rate goes in
SPEAKER, TAKES = "theo", (10, 11)


@pytest.fixture(scope="module")
def long_recording(fsdd_dir, tmp_path_factory):
    """0-9 said twice by theo (a quiet speaker: peaks near -30 dBFS), at 44.1 kHz stereo, with pauses
    of hiss or digital silence between the words; returns the file and each word's (digit, start s, end s)."""
    rng = np.random.default_rng(0)
    words = []
    for take in TAKES:
        for digit in range(10):
            y, rate = sf.read(fsdd_dir / f"{digit}_{SPEAKER}_{take}.wav", dtype="float32")
            words.append((digit, librosa.resample(y, orig_sr=rate, target_sr=RATE)))
    # A quiet room through a laptop microphone: hiss 55 dB below the loudest peak.
    hiss = 10 ** (-55 / 20) * max(float(np.abs(y).max()) for _, y in words)
    parts, truth, at = [], [], 0
    for digit, y in words:
        pause = int(rng.uniform(0.5, 1.0) * RATE)
        parts += [hiss * rng.standard_normal(pause).astype(np.float32) if digit % 3 else np.zeros(pause, np.float32), y]
        truth.append((digit, (at + pause) / RATE, (at + pause + len(y)) / RATE))
        at += pause + len(y)
    parts.append(hiss * rng.standard_normal(RATE // 2).astype(np.float32))
    mono = np.concatenate(parts)
    path = tmp_path_factory.mktemp("recording") / "me_counting.wav"
    sf.write(path, np.stack([mono, 0.7 * mono], axis=1), RATE, subtype="PCM_16")
    return path, truth


def _run(capsys, *args: str) -> tuple[int, dict, str]:
    code = ingest_job.main(list(args))
    out = capsys.readouterr().out
    return code, json.loads(out.strip().splitlines()[-1]), out


def test_every_word_comes_back_with_its_digit(long_recording, tmp_path, capsys):
    path, truth = long_recording
    out = tmp_path / "clips"
    code, result, _ = _run(
        capsys,
        "--input",
        str(path),
        "--digits",
        "0123456789",
        "--repeat",
        "2",
        "--speaker",
        "tester",
        "--out",
        str(out),
    )
    assert code == 0 and result["written"] == 20 and result["sample_rate"] == RATE
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{d}_tester_{t}.wav" for d in range(10) for t in (0, 1))

    features = preset(FeatureConfig, "default")
    for (digit, start, end), segment in zip(truth, result["segments"]):
        labels = parse_name(segment["clip"])
        assert (labels.digit, labels.speaker) == (digit, "tester")
        # The clip is that word: it lies within the word's place in the recording (give or take the
        # padding and one analysis frame) and covers most of it.
        slack = IngestConfig.pad_seconds + IngestConfig.frame_seconds
        assert start - slack <= segment["start"] and segment["end"] <= end + slack, (segment, start, end)
        assert min(end, segment["end"]) - max(start, segment["start"]) > 0.6 * (end - start), (segment, start, end)
        clip = out / segment["clip"]
        y, rate = sf.read(clip, dtype="float32")
        assert (
            rate == RATE
            and y.ndim == 1
            and len(y) == pytest.approx((segment["end"] - segment["start"]) * RATE, abs=0.002 * RATE)
        )  # JSON rounds to ms
        extract_clip(str(clip), clip.read_bytes(), features)  # what jobs.preprocess does with it: accepted
    # Takes count up per digit: the second "3" is take 1.
    assert [s["clip"] for s in result["segments"]][13] == "3_tester_1.wav"


def test_a_wrong_digit_count_writes_nothing_and_lists_the_segments(long_recording, tmp_path, capsys):
    path, truth = long_recording
    out = tmp_path / "clips"
    code, result, printed = _run(
        capsys, "--input", str(path), "--digits", "012345678", "--repeat", "2", "--speaker", "tester", "--out", str(out)
    )
    assert code == 1 and "found 20 utterances, expected 18" in result["error"] and "nothing written" in result["error"]
    assert not out.exists() or not any(out.iterdir())
    rows = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 20
    for (_, start, end), row in zip(truth, rows):
        assert (
            float(row[1]) < end
            and float(row[2]) > start
            and float(row[3]) == pytest.approx(float(row[2]) - float(row[1]), abs=0.011)
        )


def test_existing_clips_are_not_overwritten(long_recording, tmp_path, capsys):
    path, _ = long_recording
    out = tmp_path / "clips"
    args = ["--input", str(path), "--digits", "0123456789", "--repeat", "2", "--speaker", "tester", "--out", str(out)]
    assert _run(capsys, *args)[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, result, _ = _run(capsys, *args)
    assert code == 1 and "already exist" in result["error"] and "--first-take" in result["error"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    code, result, _ = _run(capsys, *args, "--first-take", "2")
    assert code == 0 and "0_tester_2.wav" in {p.rsplit("/", 1)[-1] for p in result["files"]}
    assert len(list(out.iterdir())) == 40


@pytest.mark.parametrize(
    "args, message",
    [
        (["--speaker", "two_words"], "speaker name 'two_words' cannot be used"),
        (["--speaker", ""], "speaker name '' cannot be used"),
        (["--digits", "01a"], "--digits must be a non-empty string of digits"),
        (["--repeat", "0"], "--repeat must be at least 1"),
        (["--top-db", "-3"], "IngestConfig.top_db=-3.0 must be positive"),
    ],
)
def test_bad_arguments_are_refused_naming_the_culprit(long_recording, tmp_path, capsys, args, message):
    path, _ = long_recording
    base = {
        "--input": str(path),
        "--digits": "0123456789",
        "--repeat": "2",
        "--speaker": "tester",
        "--out": str(tmp_path / "o"),
    }
    base.update(dict(zip(args[::2], args[1::2])))
    code, result, _ = _run(capsys, *[x for kv in base.items() for x in kv])
    assert code == 1 and message in result["error"], result
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "data, message", [(b"", "empty file"), (b"not a recording", "not decodable audio"), (None, "silent")]
)
def test_unusable_recordings_are_refused(tmp_path, capsys, data, message):
    path = tmp_path / "long.wav"
    if data is None:
        buf = io.BytesIO()
        sf.write(buf, np.zeros(RATE * 3, np.float32), RATE, format="WAV")
        data = buf.getvalue()
    path.write_bytes(data)
    code, result, _ = _run(
        capsys, "--input", str(path), "--digits", "01", "--speaker", "tester", "--out", str(tmp_path / "o")
    )
    assert code == 1 and str(path) in result["error"] and message in result["error"]
