"""Untrusted audio is bounded by its header before it is decoded (vae.features.check_header)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from vae.config import RunConfig
from vae.features import AudioError, TooLarge, check_header


def wav(y: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def test_check_header_reads_rate_frames_and_channels_and_bounds_them():
    stereo = wav(np.zeros((16_000, 2), np.float32), 16_000)
    header = check_header(stereo, max_seconds=1.0)
    assert (header.sample_rate, header.frames, header.channels) == (16_000, 16_000, 2)
    with pytest.raises(TooLarge, match=r"decodes to 128000 bytes \(16000 frames x 2 channels, float32\)"):
        check_header(stereo, max_seconds=1.0, max_decoded_bytes=100_000)
    with pytest.raises(TooLarge, match=r"clip is 1.0 s long \(16000 frames at 16000 Hz\)"):
        check_header(stereo, max_seconds=0.5)
    with pytest.raises(AudioError, match="sample rate 200000 Hz is outside 4000-192000 Hz"):
        check_header(wav(np.zeros(10, np.float32), 200_000), max_seconds=1.0)
    with pytest.raises(AudioError, match="not decodable audio"):
        check_header(b"not audio", max_seconds=1.0)
    with pytest.raises(AudioError, match="empty file"):
        check_header(b"", max_seconds=1.0)


def test_reconstruct_job_skips_an_implausible_file_undecoded(tmp_path):
    """``jobs.reconstruct`` (and the unseen-voices evaluator) read files through ``read_voice``."""
    from vae.evaluation.evaluators.unseen_voices import read_voice

    loaded = SimpleNamespace(run_config=RunConfig())
    path = tmp_path / "1hz.wav"
    path.write_bytes(wav(np.zeros(50_000, np.float32), 1))  # resampled, 400 M samples
    with pytest.raises(TooLarge, match=r"clip is 50000.0 s long \(50000 frames at 1 Hz\)"):
        read_voice(loaded, str(path))
