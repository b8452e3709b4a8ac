"""The original research notebook's preprocessing, re-created as a script: the baseline of benchmarks/preprocess.py.

    python -m benchmarks.notebook_loop SRC DST

One file at a time, as the notebook's pipeline did: ``librosa.load`` of the first
0.74 s at 22,050 Hz (mono), right-padded with zeros, ``librosa.stft`` n_fft 512
hop 256 with the Nyquist row dropped, ``amplitude_to_db``, min-max to [0, 1],
``np.save`` per clip and every clip's dB min/max in one pickle. The notebook also
printed a line per file; that is left out. Ends with one JSON line: clips, seconds
from start to the loop, and the loop's wall and CPU seconds (the first clip, which
pays librosa's lazy imports, reported apart).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402 - timed from here on, like the notebook's first cell
import os  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402

import librosa  # noqa: E402
import numpy as np  # noqa: E402

SAMPLE_RATE = 22050
DURATION = 0.74
FRAME_SIZE = 512
HOP_LENGTH = 256


def spectrogram(path: str) -> tuple[np.ndarray, float, float]:
    signal = librosa.load(path, sr=SAMPLE_RATE, duration=DURATION, mono=True)[0]
    expected = int(SAMPLE_RATE * DURATION)
    if len(signal) < expected:
        signal = np.pad(signal, (0, expected - len(signal)), mode="constant")
    stft = librosa.stft(signal, n_fft=FRAME_SIZE, hop_length=HOP_LENGTH)[:-1]
    log_spectrogram = librosa.amplitude_to_db(np.abs(stft))
    lo, hi = log_spectrogram.min(), log_spectrogram.max()
    return (log_spectrogram - lo) / (hi - lo), float(lo), float(hi)


def main(src: str, dst: str) -> dict:
    os.makedirs(dst, exist_ok=True)
    startup_s = time.perf_counter() - STARTED
    t, c = time.perf_counter(), time.process_time()
    first_cpu_s, min_max, n = 0.0, {}, 0
    for root, _, files in os.walk(src):
        for name in files:
            norm, lo, hi = spectrogram(os.path.join(root, name))
            save_path = os.path.join(dst, name + ".npy")
            np.save(save_path, norm)
            min_max[save_path] = {"min": lo, "max": hi}
            n += 1
            if n == 1:
                first_cpu_s = time.process_time() - c
    with open(os.path.join(dst, "min_max_values.pkl"), "wb") as f:
        pickle.dump(min_max, f)
    return dict(
        clips=n,
        startup_s=round(startup_s, 3),
        loop_s=round(time.perf_counter() - t, 3),
        loop_cpu_s=round(time.process_time() - c, 3),
        first_clip_cpu_s=round(first_cpu_s, 3),
    )


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3])))
