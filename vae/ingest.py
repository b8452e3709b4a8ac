"""One long recording of digits said in sequence -> one clip per digit, named as FSDD names them.

The recording is decoded with the extraction's own checks (:func:`vae.features.decode_audio`:
any sample rate and channel count, mixed down to mono), cut into utterances where it is
silent (:func:`librosa.effects.split`, then gaps shorter than ``min_gap_seconds`` closed and
sounds shorter than ``min_utterance_seconds`` dropped), and the utterances are labelled
with the expected digits in order. Clips keep the recording's sample rate and are named
``{digit}_{speaker}_{take}.wav``, the names ``jobs.preprocess``, ``jobs.reconstruct``,
``jobs.evaluate --wavs`` and the service read labels from. When the count of utterances
is not the count of digits expected, nothing is written (:class:`CountMismatch` carries
the segments found, so the user can re-record or change the threshold).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np

from vae import storage
from vae.config import FeatureConfig, IngestConfig
from vae.dataset import parse_name
from vae.errors import UserError
from vae.features import decode_audio


class IngestError(UserError, ValueError):
    """The recording or the arguments cannot give labelled clips; the message says why."""


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the recording
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


class CountMismatch(IngestError):
    """The recording holds a different number of utterances than digits were expected."""

    def __init__(self, found: list[Segment], expected: int, cfg: IngestConfig):
        self.segments, self.expected = found, expected
        hint = (
            "a word cut in two shows as two short segments close together (raise --top-db or --min-gap); "
            "a noise shows as a short segment on its own (lower --top-db)"
            if len(found) > expected
            else "words run together show as one long segment (lower --top-db or --min-gap, or pause longer); "
            "a quiet word is missing altogether (raise --top-db)"
        )
        super().__init__(
            f"found {len(found)} utterances, expected {expected} (top_db {cfg.top_db:g}, min gap {cfg.min_gap_seconds:g} s); "
            f"nothing written. {hint}"
        )


@dataclass(frozen=True)
class Utterance:
    digit: int
    take: int
    segment: Segment
    name: str  # {digit}_{speaker}_{take}.wav


def read_recording(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples at the recording's own sample rate, after the extraction's checks
    (empty, truncated, undecodable, non-finite, silent: :class:`vae.features.AudioError`)."""
    import soundfile as sf

    try:
        rate = int(sf.info(io.BytesIO(data)).samplerate)
    except Exception:  # undecodable: decode_audio names the problem
        rate = FeatureConfig.sample_rate
    clip = decode_audio(data, replace(FeatureConfig(), sample_rate=rate))
    return clip.waveform, rate


def find_utterances(y: np.ndarray, sample_rate: int, cfg: IngestConfig) -> list[Segment]:
    """Non-silent stretches of ``y``, closed over short gaps, short sounds dropped, padded."""
    import librosa

    frame = max(16, int(2 ** round(np.log2(cfg.frame_seconds * sample_rate))))
    intervals = librosa.effects.split(y, top_db=cfg.top_db, frame_length=frame, hop_length=frame // 4)
    merged: list[list[int]] = []
    for start, end in intervals:
        if merged and start - merged[-1][1] < cfg.min_gap_seconds * sample_rate:
            merged[-1][1] = int(end)
        else:
            merged.append([int(start), int(end)])
    pad = int(cfg.pad_seconds * sample_rate)
    return [
        Segment(max(0, start - pad) / sample_rate, min(len(y), end + pad) / sample_rate)
        for start, end in merged
        if end - start >= cfg.min_utterance_seconds * sample_rate
    ]


def clip_name(digit: int, speaker: str, take: int) -> str:
    """``{digit}_{speaker}_{take}.wav``, checked with the dataset's own name parser, so every
    clip written is one that extraction accepts with these labels."""
    name = f"{digit}_{speaker}_{take}.wav"
    try:
        labels = parse_name(name)
    except ValueError as exc:
        raise IngestError(f"speaker name {speaker!r} cannot be used: {exc}") from None
    if (labels.digit, labels.speaker, labels.take) != (digit, speaker, take):
        raise IngestError(f"speaker name {speaker!r} cannot be used: {name} reads back as {labels}")
    return name


def expected_digits(digits: str, repeat: int) -> list[int]:
    """The digits said, in order: ``digits`` said ``repeat`` times over ("012" x 2 = 0 1 2 0 1 2)."""
    if not digits or not digits.isdigit() or not digits.isascii():
        raise IngestError(f"--digits must be a non-empty string of digits 0-9, got {digits!r}")
    if repeat < 1:
        raise IngestError(f"--repeat must be at least 1, got {repeat}")
    return [int(c) for c in digits] * repeat


def label(
    segments: list[Segment], digits: list[int], speaker: str, first_take: int, cfg: IngestConfig
) -> list[Utterance]:
    """Pair segments with digits in order; a digit's takes count up from ``first_take``."""
    if len(segments) != len(digits):
        raise CountMismatch(segments, len(digits), cfg)
    takes: dict[int, int] = {}
    out = []
    for segment, digit in zip(segments, digits):
        take = first_take + takes.get(digit, 0)
        takes[digit] = takes.get(digit, 0) + 1
        out.append(Utterance(digit, take, segment, clip_name(digit, speaker, take)))
    return out


def split_recording(
    data: bytes, digits: str, repeat: int, speaker: str, cfg: IngestConfig, first_take: int = 0
) -> tuple[list[Utterance], np.ndarray, int]:
    """Labelled utterances of one recording, and its mono samples and sample rate."""
    expected = expected_digits(digits, repeat)
    clip_name(expected[0], speaker, first_take)  # a bad speaker name fails before any audio work
    y, rate = read_recording(data)
    return label(find_utterances(y, rate, cfg), expected, speaker, first_take, cfg), y, rate


def write_clips(utterances: list[Utterance], y: np.ndarray, sample_rate: int, out: str) -> list[str]:
    """Write every utterance as a 16-bit WAV under ``out``; refuses (writing nothing) if any exists."""
    import soundfile as sf

    targets = [storage.join(out, u.name) for u in utterances]
    existing = [t for t in targets if storage.exists(t)]
    if existing:
        raise IngestError(
            f"{len(existing)} clip(s) already exist under {out} (first: {existing[0]}); "
            "nothing written. Use another --out, or --first-take to number new takes after the old ones"
        )
    for u, target in zip(utterances, targets):
        buf = io.BytesIO()
        part = y[int(round(u.segment.start * sample_rate)) : int(round(u.segment.end * sample_rate))]
        sf.write(buf, part, sample_rate, subtype="PCM_16", format="WAV")
        storage.write_bytes(target, buf.getvalue())
    return targets
