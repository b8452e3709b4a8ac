"""Reconstruction of other WAVs (e.g. voices the model never heard), against the vocoder floor.

:func:`read_voice` and :func:`reconstruct` are also how ``jobs.reconstruct`` turns WAV files
into reconstructions, so what that job writes is what this evaluator scores; :func:`transfer` is
how ``jobs.transfer`` has each voice say other digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vae import generation, storage
from vae.config import FeatureConfig
from vae.dataset import parse_name
from vae.evaluation import audio
from vae.evaluation import metrics as M
from vae.evaluation.context import Context
from vae.evaluation.evaluators.voice import spread
from vae.features import AudioError, check_header, decode_audio, fit_length, waveform_to_spectrogram
from vae.harmonics import pitch_tracks

# Longer files are skipped from their header, undecoded (the model hears FeatureConfig.clip_seconds).
MAX_VOICE_SECONDS = 60.0

METRICS: dict[str, tuple[bool, str]] = {
    "recon_lsd_db_wavs": (False, "log-spectral distance (dB) on the extra WAV folder (unseen voices)"),
    "recon_mse_wavs": (False, "spectrogram MSE on the extra WAV folder (unseen voices)"),
    "pesq_nb_wavs": (True, "narrow-band PESQ on the extra WAV folder (unseen voices)"),
}


@dataclass(frozen=True)
class Voice:
    """One WAV file as the model takes it."""

    uri: str
    waveform: np.ndarray  # at the features' sample rate, trimmed/padded to clip_seconds
    spectrogram: np.ndarray  # features of the whole decoded clip, as jobs.preprocess makes them
    db_range: tuple[float, float]
    digit: int | None


class DigitUnknown(AudioError):
    """A conditional model needs the clip's digit, and its file name does not give it."""


def evaluate(ctx: Context) -> dict[str, Any]:
    """Reconstruction distances on every usable WAV under ``ctx.wavs_uri`` (PESQ on at most
    ``voicing_clips`` of them, :func:`~vae.evaluation.evaluators.voice.spread`); nothing without one."""
    if not ctx.wavs_uri:
        return {}
    voices = read_voices(ctx.loaded, ctx.wavs_uri, ctx.notes)
    feats, waves = ctx.features, np.stack([v.waveform for v in voices])
    recon = reconstruct(ctx.loaded, voices, "unseen voices, griffin-lim")
    floor = _vocode(np.stack([v.spectrogram for v in voices]), voices, feats, "unseen voices floor, griffin-lim")
    some = spread(len(voices), ctx.config.voicing_clips)
    pesq, skipped = M.pesq_nb(waves[some], recon[some], feats.sample_rate)
    pesq_floor, skipped_floor = M.pesq_nb(waves[some], floor[some], feats.sample_rate)
    return {
        "wavs": storage.resolve(ctx.wavs_uri).uri,
        "wavs_clips": int(len(voices)),
        "recon_lsd_db_wavs": M.recon_lsd_db(waves, recon, feats),
        "recon_lsd_db_wavs_floor": M.recon_lsd_db(waves, floor, feats),
        "recon_mse_wavs": M.recon_mse(waves, recon, feats),
        "recon_mse_wavs_floor": M.recon_mse(waves, floor, feats),
        "pesq_nb_wavs": pesq,
        "pesq_nb_wavs_skipped": skipped,
        "pesq_nb_wavs_floor": pesq_floor,
        "pesq_nb_wavs_floor_skipped": skipped_floor,
    }


def read_voices(loaded, wavs_uri: str, notes: list[str]) -> list[Voice]:
    """Every usable WAV under ``wavs_uri``; each skipped one is noted. Raises ValueError when none is usable."""
    files = storage.list_files(wavs_uri, suffix=".wav")
    voices = []
    for uri in files:
        try:
            voices.append(read_voice(loaded, uri))
        except AudioError as exc:
            notes.append(f"{uri} skipped: {exc.reason}")
    if not voices:
        raise ValueError(f"no usable .wav file under {wavs_uri} ({len(files)} found)")
    return voices


def read_voice(loaded, uri: str, digit: int | None = None) -> Voice:
    """The WAV at ``uri`` for ``loaded``; a conditional model without ``digit`` reads it from the name.
    Raises :class:`AudioError` (undecodable, silent, or too long or an implausible sample rate
    by its header, see :func:`vae.features.check_header`) or :class:`DigitUnknown`."""
    feats = loaded.run_config.features
    data = storage.read_bytes(uri)
    check_header(data, MAX_VOICE_SECONDS)
    clip = decode_audio(data, feats)
    spec, db_min, db_max = waveform_to_spectrogram(clip.waveform, feats)
    if digit is None and loaded.run_config.model.conditional:
        try:
            digit = parse_name(uri).digit
        except ValueError as exc:
            raise DigitUnknown(f"a conditional model needs the digit: {exc}") from None
    return Voice(uri, fit_length(clip.waveform, feats), spec, (db_min, db_max), digit)


def reconstruct(loaded, voices: list[Voice], label: str = "reconstructions, griffin-lim") -> np.ndarray:
    """WAVs of ``voices`` through the encoder (posterior mean), the decoder and Griffin-Lim (clip ``i``: seed ``i``)."""
    digits = np.array([v.digit for v in voices]) if loaded.run_config.model.conditional else None
    specs = generation.reconstruct(loaded, np.stack([v.spectrogram for v in voices]), digits)
    return _vocode(specs, voices, loaded.run_config.features, label)


def transfer(
    loaded,
    voices: list[Voice],
    targets,
    label: str = "transfers, griffin-lim",
    match_voice: bool = True,
    code_scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``voices`` said as each digit of ``targets`` (:func:`vae.generation.transfer`, matched to each voice's
    colour and pitch unless ``match_voice`` is False; ``code_scale`` as there): spectrograms [n, k, n_bins,
    n_frames] and WAVs [n, k, n_samples] (Griffin-Lim, each with its voice's dB range)."""
    feats = loaded.run_config.features
    f0 = None
    if match_voice and loaded.run_config.model.pitch:
        f0 = pitch_tracks([v.waveform for v in voices], feats)
    specs = generation.transfer(
        loaded,
        np.stack([v.spectrogram for v in voices]),
        [v.digit for v in voices],
        targets,
        match_voice=match_voice,
        source_f0=f0,
        code_scale=code_scale,
    )
    flat = specs.reshape(-1, *specs.shape[2:])
    waves = _vocode(flat, [v for v in voices for _ in range(specs.shape[1])], feats, label)
    return specs, waves.reshape(*specs.shape[:2], -1)


def _vocode(specs: np.ndarray, voices: list[Voice], feats: FeatureConfig, label: str) -> np.ndarray:
    if feats.normalisation != "per_clip":
        return audio.resynthesise(specs, feats, label=label)
    lo, hi = np.array([v.db_range[0] for v in voices]), np.array([v.db_range[1] for v in voices])
    return audio.resynthesise(specs, feats, lo, hi, label=label)
