"""Who is speaking: speaker recognisers, fit on a dataset's train split.

A clip's voice print (:func:`voice_print`) is its long-term spectrum (the mean over its loud frames of
each bin's normalised level) and each bin's spread over those frames: the voice and the microphone, not
the words. A logistic regression on it (:class:`SpeakerRecogniser`) names the speaker of real FSDD clips,
of their reconstructions by a model that trained on that speaker, and of the same clips through the
vocoder alone; a model that never heard the speaker may make them sound like someone it did.
:class:`CepstralSpeakerRecogniser` asks another way, from single frames; less each clip's mean cepstrum,
it hears how the spectrum moves and not its colour.
"""

from __future__ import annotations

import numpy as np

from vae.config import FeatureConfig
from vae.features import long_term_spectrum, long_term_spread, loud_frames, spectrogram_to_db


def voice_print(specs: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(clips, 2 n_bins) voice prints of normalised spectrograms (clips, n_bins, n_frames): each bin's
    long-term level and its spread about it."""
    return np.concatenate([long_term_spectrum(specs, cfg), long_term_spread(specs, cfg)], axis=1)


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


CEPSTRAL_COEFFICIENTS = 20  # mel-cepstral coefficients per frame, the level (c0) left out
MEL_BANDS = 40
SPEAKER_MIXTURE = 8  # diagonal Gaussians per speaker


def cepstra(specs: np.ndarray, cfg: FeatureConfig, mean_normalised: bool) -> list[np.ndarray]:
    """Per clip of normalised spectrograms (clips, n_bins, n_frames), the mel cepstra (c1-c20) of its loud
    frames, (loud frames, 20); ``mean_normalised``: less their mean over the clip, which takes away every
    filter that stays put over a clip (the microphone, and with it the voice's long-term colour)."""
    import librosa
    from scipy.fft import dct

    mel = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=MEL_BANDS)[:, : cfg.n_bins]
    power = 10.0 ** (spectrogram_to_db(specs, cfg) / 10.0)
    log_mel = np.log(np.maximum(np.einsum("mb,nbt->ntm", mel, power), 1e-10))
    cep = dct(log_mel, type=2, norm="ortho", axis=-1)[..., 1 : CEPSTRAL_COEFFICIENTS + 1]
    out = []
    for c, loud in zip(cep, loud_frames(specs, cfg)):
        frames = c[loud]
        out.append(frames - frames.mean(axis=0) if mean_normalised else frames)
    return out


class CepstralSpeakerRecogniser:
    """A speaker recogniser of another kind than :class:`SpeakerRecogniser`, after Reynolds (1995): a mixture of
    diagonal Gaussians per speaker over the mel cepstra of single loud frames (:func:`cepstra`), fit on
    ``specs`` of ``speakers``; a clip is the speaker whose mixture gives its frames the highest mean
    likelihood. ``mean_normalised`` takes each clip's mean cepstrum away: what is left is how the spectrum
    moves, not its colour."""

    def __init__(self, specs: np.ndarray, speakers: np.ndarray, cfg: FeatureConfig, mean_normalised: bool):
        from sklearn.mixture import GaussianMixture

        self.cfg, self.mean_normalised = cfg, mean_normalised
        frames = cepstra(specs, cfg, mean_normalised)
        speakers = np.asarray(speakers)
        self.speakers = np.unique(speakers)
        self.mixtures = [
            GaussianMixture(SPEAKER_MIXTURE, covariance_type="diag", reg_covar=1e-3, random_state=0).fit(
                np.concatenate([f for f, s in zip(frames, speakers) if s == name])
            )
            for name in self.speakers
        ]

    def listen(self, waves) -> np.ndarray:
        """The speaker heard in each waveform of ``waves``, as :meth:`SpeakerRecogniser.listen`."""
        from vae.features import waveforms_to_spectrograms

        specs = waveforms_to_spectrograms(list(waves), self.cfg).spec
        frames = cepstra(specs, self.cfg, self.mean_normalised)
        scores = np.array([[m.score(f) for m in self.mixtures] for f in frames])
        return self.speakers[np.argmax(scores, axis=1)]
