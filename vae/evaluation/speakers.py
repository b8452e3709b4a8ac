"""Who is speaking: a voice-print speaker recogniser, fit on a dataset's train split.

A clip's voice print (:func:`voice_print`) is its long-term spectrum (the mean over its loud frames of
each bin's normalised level) and each bin's spread over those frames: the voice and the microphone, not
the words. A logistic regression on it (:class:`SpeakerRecogniser`) names the speaker of real FSDD clips,
of their reconstructions by a model that trained on that speaker, and of the same clips through the
vocoder alone; a model that never heard the speaker may make them sound like someone it did.
"""

from __future__ import annotations

import numpy as np

from vae.config import FeatureConfig

LOUD_DB = 20.0  # a frame is loud within this many dB of the clip's loudest (by its mean level)


def voice_print(specs: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(clips, 2 n_bins) voice prints of normalised spectrograms (clips, n_bins, n_frames)."""
    level = specs.mean(axis=1)
    loud = level >= level.max(axis=1, keepdims=True) - LOUD_DB / (cfg.db_ceiling - cfg.db_floor)
    weights = loud[:, None, :] / loud.sum(axis=1)[:, None, None]
    mean = (specs * weights).sum(axis=2)
    spread = np.sqrt(((specs - mean[..., None]) ** 2 * weights).sum(axis=2))
    return np.concatenate([mean, spread], axis=1)


def linear_probe():
    """An unfitted logistic regression on standardised inputs (sklearn): the project's probe of what features hold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))


class SpeakerRecogniser:
    """A logistic regression from voice prints to speakers, fit on ``specs`` of ``speakers``."""

    def __init__(self, specs: np.ndarray, speakers: np.ndarray, cfg: FeatureConfig):
        self.cfg = cfg
        self.model = linear_probe().fit(voice_print(specs, cfg), np.asarray(speakers))

    def listen(self, waves) -> np.ndarray:
        """The speaker heard in each waveform of ``waves`` (a sequence, or an array of rows, at the features'
        sample rate), analysed by the features."""
        from vae.features import waveforms_to_spectrograms

        return self.model.predict(voice_print(waveforms_to_spectrograms(list(waves), self.cfg).spec, self.cfg))
