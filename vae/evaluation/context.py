"""What several evaluators need of one checkpoint, computed on first use and kept.

An evaluator (:mod:`vae.evaluation.evaluators`) reads its inputs from a :class:`Context`:
the test clips and their model reconstructions as audio, the vocoder floor (the test
clips through features and Griffin-Lim alone), digit-conditional and unconditional
samples as audio, and the recogniser's reading of any of them. Nothing is computed
until an evaluator (or the report) asks for it, and nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from vae import generation, storage
from vae.config import N_DIGITS, EvalConfig, FeatureConfig
from vae.dataset import load_split_numpy, parse_name
from vae.evaluation import audio
from vae.evaluation.recogniser import Heard, Recogniser
from vae.features import AudioError, decode_audio, fit_length

TEST_COLUMNS = ["id", "digit", "speaker", "spectrogram", "source", "db_min", "db_max"]
# Waveform sets the recogniser can be asked about: Context attributes of (N, n_samples) audio.
AUDIO = ("originals", "floor", "reconstructions", "generated", "unconditional", "other_recordings")


@dataclass
class Context:
    """One checkpoint's evaluation inputs. ``data_uri`` (its ``test`` split) is read only when a
    test-clip value is asked for; ``recogniser`` is needed only for :meth:`heard`."""

    loaded: Any  # vae.checkpoint.LoadedModel
    data_uri: str | None
    config: EvalConfig = field(default_factory=EvalConfig)
    recogniser: Recogniser | None = None
    wavs_uri: str | None = None
    notes: list[str] = field(default_factory=list)
    _heard: dict[str, Heard] = field(default_factory=dict, repr=False)

    @property
    def features(self) -> FeatureConfig:
        return self.loaded.run_config.features

    # ------------------------------------------------------------------ test clips

    @cached_property
    def test(self) -> dict[str, np.ndarray]:
        """The test split's columns (:data:`TEST_COLUMNS`)."""
        if self.data_uri is None:
            raise ValueError("this evaluation has no dataset: test clips are not available")
        test = load_split_numpy(self.data_uri, "test", columns=TEST_COLUMNS)
        if len(test["id"]) < 2:
            raise ValueError(f"{self.data_uri}: the test split has {len(test['id'])} clips; at least 2 are needed")
        return test

    @property
    def specs(self) -> np.ndarray:
        return self.test["spectrogram"]

    @cached_property
    def digits(self) -> np.ndarray:
        return self.test["digit"].astype(np.int64)

    @property
    def ranges(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Per-clip dB ranges to undo ``per_clip`` normalisation; ``(None, None)`` for ``fixed``."""
        return (self.test["db_min"], self.test["db_max"]) if self.features.normalisation == "per_clip" else (None, None)

    @cached_property
    def originals(self) -> np.ndarray:
        """The test clips' source WAVs, trimmed to ``clip_seconds``."""
        return read_originals(self.test["source"], self.features, self.test["id"])

    @cached_property
    def latents(self) -> np.ndarray:
        """Posterior means of the test clips."""
        return generation.encode(self.loaded, self.specs, self.digits)

    @cached_property
    def recon_specs(self) -> np.ndarray:
        """The decoder's raw output for the test clips (as training scores it)."""
        return generation.reconstruct(self.loaded, self.specs, self.digits, harmonics=False)

    @cached_property
    def reconstructions(self) -> np.ndarray:
        specs = generation.render(self.loaded, self.recon_specs, self.latents, self.digits)
        return audio.resynthesise(specs, self.features, *self.ranges, label="reconstructions, griffin-lim")

    @cached_property
    def floor(self) -> np.ndarray:
        """The test clips through features and Griffin-Lim alone: the best any model can sound here."""
        return audio.resynthesise(self.specs, self.features, *self.ranges, label="vocoder floor, griffin-lim")

    @cached_property
    def other_recordings(self) -> np.ndarray:
        """Real clips that are not test clips (the train split, every speaker), untouched: ``config.unconditional_draws``
        draws of ``config.n_unconditional`` (fewer when the split holds fewer), one after the other; empty when
        the dataset has no train split."""
        if self.data_uri is None:
            return np.zeros((0, self.features.n_samples), np.float32)
        other = load_split_numpy(self.data_uri, "train", columns=["id", "source"])
        n = min(self.config.n_unconditional, len(other["id"]))
        if n < 2:
            return np.zeros((0, self.features.n_samples), np.float32)
        rng = np.random.default_rng([self.config.seed, len(other["id"])])
        picked = np.concatenate([rng.permutation(len(other["id"]))[:n] for _ in range(self.config.unconditional_draws)])
        return read_originals(other["source"][picked], self.features, other["id"][picked])

    @cached_property
    def components(self) -> np.ndarray | None:
        """Each test clip's prior component, for a prior with components (None for one without)."""
        assigned = self.loaded.model.prior.assign(self.latents)
        return None if assigned is None else np.asarray(assigned, np.int64)

    # ------------------------------------------------------------------ samples

    @property
    def generated_digits(self) -> np.ndarray:
        return np.repeat(np.arange(N_DIGITS), self.config.n_per_digit)

    @cached_property
    def generated(self) -> np.ndarray:
        """``config.n_per_digit`` digit-conditional samples of each digit, in digit order, as audio."""
        n = self.config.n_per_digit
        return sample_waves(self.loaded, [(d, n) for d in range(N_DIGITS)], self.config.seed + 1)

    @cached_property
    def unconditional(self) -> np.ndarray:
        """``config.unconditional_draws`` draws of ``config.n_unconditional`` samples of the model's sampler, as audio."""
        n = self.config.n_unconditional * self.config.unconditional_draws
        return sample_waves(self.loaded, [(None, n)], self.config.seed)

    def heard(self, name: str) -> Heard:
        """The recogniser's reading of one of the :data:`AUDIO` sets."""
        if name not in AUDIO:
            raise KeyError(f"{name!r} is not one of {AUDIO}")
        if self.recogniser is None:
            raise ValueError("no recogniser given: nothing can be heard")
        if name not in self._heard:
            self._heard[name] = self.recogniser.listen(getattr(self, name), self.features.sample_rate)
        return self._heard[name]


def sample_waves(loaded, requests: list[tuple[int | None, int]], seed: int) -> np.ndarray:
    """WAVs of ``n`` samples per ``(digit or None for the sampler, n)``, in order: request ``i`` is
    sampled with seed ``seed + 1000 i``, and clip ``j`` of all gets the Griffin-Lim seed ``seed + j``."""
    specs: list[np.ndarray] = []
    lows: list[np.ndarray] = []
    highs: list[np.ndarray] = []
    for i, (digit, n) in enumerate(requests):
        specs.append(generation.sample(loaded, n, digit=digit, seed=seed + 1000 * i))
        a, b = generation.db_range(loaded, digit)
        lows.append(np.full(n, np.nan if a is None else a))
        highs.append(np.full(n, np.nan if b is None else b))
    lo, hi = np.concatenate(lows), np.concatenate(highs)
    known = not (np.isnan(lo).any() or np.isnan(hi).any())  # else the config's range, for every clip
    what = "unconditional samples" if requests[0][0] is None else "digit-conditional samples"
    return audio.resynthesise(
        np.concatenate(specs),
        loaded.run_config.features,
        db_min=lo if known else None,
        db_max=hi if known else None,
        seed=seed,
        label=f"{what}, griffin-lim",
    )


def check_source(source: str, clip_id: str) -> None:
    """Raise ValueError unless ``source`` can be the recording of clip ``clip_id``: a local path or s3://
    URI without ``..``, named ``<clip_id>.wav`` (a dataset's ``source`` is read, so it may not point anywhere)."""
    try:
        uri = storage.resolve(source).uri
        named = parse_name(source).id
    except (storage.StorageError, ValueError) as exc:
        raise ValueError(f"clip {clip_id!r}: its source {source!r} cannot be its recording: {exc}") from None
    if named != clip_id or (not storage.is_s3(uri) and uri != source):
        raise ValueError(
            f"clip {clip_id!r}: its source {source!r} is not <id>.wav at a plain path; the dataset is not one jobs.preprocess wrote"
        )


def read_originals(sources, feats: FeatureConfig, ids=None) -> np.ndarray:
    """The source WAVs of the test clips at the features' sample rate, trimmed/padded to ``clip_seconds``.
    With ``ids``, each source is first checked to be its clip's recording (:func:`check_source`)."""
    out = np.zeros((len(sources), feats.n_samples), np.float32)
    for i, src in enumerate(sources):
        if ids is not None:
            check_source(str(src), str(ids[i]))
        try:
            out[i] = fit_length(decode_audio(storage.read_bytes(str(src)), feats).waveform, feats)
        except AudioError as exc:
            raise AudioError(f"{src}: {exc.reason}") from exc
    return out
