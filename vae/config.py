"""Typed configs: the only place a default value lives.

Every artefact (Parquet metadata, checkpoints, reports) carries the config that
made it, serialised with :func:`to_json` and read back with :func:`from_json` (older layouts:
:mod:`vae.compat`).
Presets are plain data: a preset is a dict of overrides applied to the
dataclass defaults, so ``replace(preset("default"), latent_dim=32)`` is all a
sweep needs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, TypeVar

from vae.errors import UserError
from vae.objective import SCORE_METRIC
from vae.objective import TERMS as OBJECTIVE_TERMS

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class Validated(Protocol):
    """A config dataclass: ``validate()`` checks it and returns it."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    def validate(self) -> Self: ...


D = TypeVar("D", bound="DataclassInstance")
T = TypeVar("T", bound=Validated)

N_DIGITS = 10  # FSDD's classes: every label, one-hot and per-digit table is this wide
# How far below a harmonic's peak the valleys between harmonics fall when drawn into a spectrogram
# (vae/harmonics.py): in training (LossConfig.through_harmonics) and, by default, in decoding.
HARMONIC_DEPTH_DB = 30.0
MAX_HARMONIC_DEPTH_DB = 90.0
DIGIT_RANGE = f"digits are 0-{N_DIGITS - 1}"  # what a request or flag naming another digit is told


# The largest value each config number may take (a key absent here: DEFAULT_MAX). Beyond them a run
# could only exhaust memory or time; a tuple's bound holds for each of its numbers.
DEFAULT_MAX = 1e9
# A speaker's name in {digit}_{speaker}_{take}.wav: letters, digits and hyphens (not first), at most 64,
# safe as a path segment and in HTML as it is.
SPEAKER = r"[A-Za-z0-9][A-Za-z0-9-]{0,63}"

UPPER_BOUNDS: dict[str, float] = {
    "FeatureConfig.sample_rate": 192_000,
    "FeatureConfig.n_fft": 16_384,
    "FeatureConfig.hop_length": 16_384,
    "FeatureConfig.clip_seconds": 60,
    "FeatureConfig.n_bins": 8_193,
    "FeatureConfig.griffin_lim_iters": 2_000,
    "FeatureConfig.db_ceiling": 200,
    "ModelConfig.filters": 2_048,
    "ModelConfig.kernels": 15,
    "ModelConfig.strides": 8,
    "ModelConfig.latent_dim": 2_048,
    "ModelConfig.decoder_width": 8,
    "ModelConfig.refine": 16,
    "ModelConfig.refine_channels": 512,
    "ModelConfig.local_channels": 512,
    "PriorConfig.components": 1_000,
    "LossConfig.kl_samples": 1_000,
    "TrainConfig.batch_size": 65_536,
    "TrainConfig.learning_rate": 10,
    "TrainConfig.num_workers": 10_000,
    "TrainConfig.cpus_per_worker": 1_024,
    "TrainConfig.seed": 2**31 - 1,
    "TrainConfig.checkpoints_to_keep": 1_000,
    "TrainConfig.tracking_samples": 10,
    "TrainConfig.max_failures": 1_000,
    "TrainConfig.augment_copies": 20,
    "SamplingConfig.expost_components": 50,
    "SamplingConfig.local_temperature": 10,
    "DemoConfig.local_channels": 512,
    "SweepConfig.reduction_factor": 100,
    "SweepConfig.max_failures": 1_000,
    "RecogniserConfig.filters": 2_048,
    "RecogniserConfig.downsample": 16,
    "RecogniserConfig.embedding_dim": 4_096,
    "RecogniserConfig.learning_rate": 10,
    "RecogniserConfig.gl_iters": 2_000,
    "EvalConfig.n_per_digit": 10_000,
    "EvalConfig.n_unconditional": 100_000,
    "EvalConfig.unconditional_draws": 100,
    "EvalConfig.n_report_per_digit": 100,
    "EvalConfig.tsne_perplexity": 1_000,
    "EvalConfig.voicing_clips": 10_000,
}


class ConfigError(UserError, ValueError):
    """A config value is missing, of the wrong type or out of range; the message names the key."""


# --------------------------------------------------------------------------- features


@dataclass(frozen=True)
class FeatureConfig:
    """How a waveform becomes a normalised spectrogram and back.

    The spectrogram has shape ``(n_bins, n_frames)``: frequency rows from DC up
    to (excluding) Nyquist, time columns.
    """

    sample_rate: int = 8000
    n_fft: int = 256
    hop_length: int = 64
    clip_seconds: float = 0.76
    n_bins: int = 128
    # "fixed": dB clipped to [db_floor, db_ceiling] after peak-normalising the
    # waveform, then mapped to [0, 1]; every clip shares one inverse.
    # "per_clip": min-max of each clip's dB (the original research setup);
    # the clip's db_min/db_max are stored beside it to undo the scaling.
    normalisation: str = "fixed"
    db_floor: float = -100.0
    db_ceiling: float = -10.0
    peak_normalise_input: bool = True
    griffin_lim_iters: int = 64
    # Clips whose peak amplitude is below this (full scale = 1) are rejected as silent.
    silence_peak: float = 1e-3
    # Clips shorter than this are rejected: no digit is said in 50 ms (FSDD's shortest clip is 0.14 s).
    min_clip_seconds: float = 0.05

    @property
    def n_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        # librosa.stft(center=True) yields 1 + floor(n / hop) frames.
        return 1 + self.n_samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_bins, self.n_frames)

    def validate(self) -> FeatureConfig:
        _within_bounds(self)
        _positive(self, "sample_rate", "n_fft", "hop_length", "clip_seconds", "n_bins", "griffin_lim_iters")
        if self.n_bins > self.n_fft // 2 + 1:
            raise ConfigError(f"FeatureConfig.n_bins={self.n_bins} exceeds n_fft // 2 + 1 = {self.n_fft // 2 + 1}")
        if self.hop_length > self.n_fft:
            raise ConfigError(f"FeatureConfig.hop_length={self.hop_length} exceeds n_fft={self.n_fft}")
        _choice(self, "normalisation", ("fixed", "per_clip"))
        if not self.db_floor < self.db_ceiling:
            raise ConfigError(f"FeatureConfig.db_floor={self.db_floor} must be below db_ceiling={self.db_ceiling}")
        if not 0 <= self.silence_peak < 1:
            raise ConfigError(f"FeatureConfig.silence_peak={self.silence_peak} must be in [0, 1)")
        if not 0 <= self.min_clip_seconds < self.clip_seconds:
            raise ConfigError(
                f"FeatureConfig.min_clip_seconds={self.min_clip_seconds} must be in [0, clip_seconds={self.clip_seconds})"
            )
        return self


FEATURE_PRESETS: dict[str, dict[str, Any]] = {
    # The original research notebook: 22,050 Hz, first 0.74 s, n_fft 512, hop 256,
    # Nyquist bin dropped -> 256 x 64, per-clip min-max dB scaling.
    "seed": dict(
        sample_rate=22050,
        n_fft=512,
        hop_length=256,
        clip_seconds=0.74,
        n_bins=256,
        normalisation="per_clip",
        db_floor=-80.0,
        db_ceiling=0.0,
        peak_normalise_input=False,
    ),
    # Native 8 kHz, 75% overlap for Griffin-Lim, one fixed dB range: docs/data.md, "Spectrogram presets".
    "default": dict(),
}


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelConfig:
    """Convolutional encoder/decoder. The decoder mirrors the encoder."""

    filters: tuple[int, ...] = (16, 32, 64, 128)
    kernels: tuple[int, ...] = (3, 3, 3, 3)
    strides: tuple[Any, ...] = (2, 2, 2, 2)
    latent_dim: int = 32
    # "batch": BatchNormalization synchronised across replicas; "none": no normalisation.
    normalisation: str = "batch"
    activation: str = "relu"
    # Digit-conditional VAE: the digit (one-hot) is an input of the encoder and of the decoder.
    conditional: bool = True
    # The decoder's channels as a multiple of the original's, whose transposed conv i (i >= 1) has
    # filters[i]: one level deeper than the encoder map of the size it makes. With filters doubling per
    # layer, 0.5 gives each decoder map the channels of the encoder map of its size: half the model's
    # FLOPs at 1.0 (speed and quality of both: docs/design.md, "The half-width decoder").
    decoder_width: float = 0.5
    # The decoder also predicts each frame's f0 and whether it is voiced (trained on the dataset's pYIN
    # track), and decoding draws those harmonics into its spectrogram (vae/harmonics.py).
    pitch: bool = True
    # Convolutions (3x3, refine_channels each) at the spectrogram's full resolution between the last
    # upsampling and the output, so the finest detail (harmonics a few bins apart) is not left to one
    # transposed convolution from a half-resolution map. 0: none (2 gained nothing on the demo's budget).
    refine: int = 0
    refine_channels: int = 8
    # A second code, local: this many numbers at every position of the encoder's map ``local_level`` (0: the
    # first convolution's), drawn from a prior the decoder predicts from the first code at that resolution,
    # which the rest of the decoder reads beside it (a two-level hierarchical VAE, as the ladder VAE and
    # NVAE): it carries the detail one code per clip cannot. Reconstruction decodes its posterior mean,
    # generation its prior's (SamplingConfig.local_temperature). 0: none.
    local_channels: int = 0
    local_level: int = 1
    # A conditional model's code less the running mean code of its clip's digit (vae.models.DigitEraser):
    # every digit's codes share one mean, so no linear probe reads the digit from a code and the label has
    # to decide it (docs/own-voice.md, "A code without the digit's mean").
    erase_digit: bool = False

    def validate(self) -> ModelConfig:
        _within_bounds(self)
        if not (len(self.filters) == len(self.kernels) == len(self.strides)) or not self.filters:
            raise ConfigError(
                "ModelConfig.filters, kernels and strides must be non-empty and of equal length, got "
                f"{len(self.filters)}, {len(self.kernels)}, {len(self.strides)}"
            )
        if any(not _is_number(f) or int(f) != f or f <= 0 for f in self.filters):
            raise ConfigError(f"ModelConfig.filters must be whole numbers of at least 1, got {self.filters}")
        if any(not _is_number(k) or int(k) != k or k < 1 for k in self.kernels):
            raise ConfigError(f"ModelConfig.kernels must be whole numbers of at least 1, got {self.kernels}")
        if any(int(s) != s or s < 1 for pair in self.stride_pairs() for s in pair) or any(
            isinstance(s, (list, tuple)) and len(s) != 2 for s in self.strides
        ):
            raise ConfigError(
                f"ModelConfig.strides must be whole numbers >= 1 or [rows, columns] pairs, got {self.strides}"
            )
        _choice(self, "activation", ACTIVATIONS)
        _positive(self, "latent_dim", "decoder_width")
        for name, least in (("refine", 0), ("refine_channels", 1), ("local_channels", 0), ("local_level", 0)):
            value = getattr(self, name)
            if not _is_number(value) or int(value) != value or value < least:
                raise ConfigError(f"ModelConfig.{name} must be a whole number of at least {least}, got {value!r}")
        _choice(self, "normalisation", ("batch", "none"))
        if self.erase_digit and not self.conditional:
            raise ConfigError(
                "ModelConfig.erase_digit needs ModelConfig.conditional: an unconditional decoder reads the "
                "digit from the code"
            )
        if self.local_channels and self.local_level > len(self.filters) - 2:
            raise ConfigError(
                f"ModelConfig.local_level must be below {len(self.filters) - 1} (a map the decoder also makes "
                f"before its output, for {len(self.filters)} layers), got {self.local_level}"
            )
        return self

    def stride_pairs(self) -> list[tuple[int, int]]:
        return [(s[0], s[-1]) if isinstance(s, (list, tuple)) else (int(s), int(s)) for s in self.strides]

    def map_shape(self, input_hw: tuple[int, int], level: int) -> tuple[int, int]:
        """Rows and columns of the encoder's map ``level`` (after its conv ``level``): "same" strides take ceilings."""
        h, w = input_hw
        for sh, sw in self.stride_pairs()[: level + 1]:
            h, w = math.ceil(h / sh), math.ceil(w / sw)
        return h, w

    def local_shape(self, input_hw: tuple[int, int]) -> tuple[int, int, int]:
        """Shape of a clip's local code: ``local_channels`` at every position of the map ``local_level``."""
        return (*self.map_shape(input_hw, self.local_level), int(self.local_channels))

    def noise_dim(self, input_hw: tuple[int, int]) -> int:
        """Standard-normal numbers per clip that drawing its codes takes: the code's, then the local code's."""
        return int(self.latent_dim) + math.prod(self.local_shape(input_hw))

    def decoder_filters(self) -> list[int]:
        """Channels out of the decoder's transposed conv i, for i >= 1 (index 0: the 1-channel output's)."""
        return [1] + [max(1, round(int(f) * self.decoder_width)) for f in self.filters[1:]]


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # The original architecture, kept faithful: 512 channels at full resolution.
    "seed": dict(
        filters=(512, 256, 128, 64, 32),
        kernels=(3, 3, 3, 3, 3),
        strides=(2, 2, 2, 2, (2, 1)),
        latent_dim=128,
        conditional=False,
        decoder_width=1.0,
        pitch=False,
    ),
    # Channels widen as resolution shrinks, a small fraction of seed's FLOPs (docs/training.md, "Model
    # presets"); digit-conditional (the tune_spaces/cpu.yaml sweep's choice).
    "default": dict(),
    # For tests: unconditional unless a test asks for the digit input.
    "tiny": dict(
        filters=(4, 8), kernels=(3, 3), strides=(4, 4), latent_dim=4, conditional=False, decoder_width=1.0, pitch=False
    ),
}


# --------------------------------------------------------------------------- prior / loss

# The variants by name: config validation, CLI choices and search spaces read these, and the model
# code's registries (vae.priors.PRIORS, vae.losses.RECONSTRUCTIONS) hold one class for each.
PRIOR_KINDS = ("mixture", "normal", "tied")
RECONSTRUCTION_KINDS = ("bernoulli", "gaussian", "laplace", "mse")


@dataclass(frozen=True)
class PriorConfig:
    """The latent prior p(z) (vae/priors.py); the loss that trains against it is :class:`LossConfig`."""

    # "normal": N(0, I), analytic KL; "mixture": learnable GMM, Monte Carlo KL;
    # "tied": one learnable Gaussian per digit, p(z | digit), analytic KL (vae/priors.py).
    kind: str = "normal"
    components: int = 10  # of "mixture" ("tied" has one per digit)

    def validate(self) -> PriorConfig:
        _within_bounds(self)
        _choice(self, "kind", PRIOR_KINDS)
        _positive(self, "components")
        return self


@dataclass(frozen=True)
class LossConfig:
    """The negative ELBO: its reconstruction term (vae/losses.py) and how its KL term is estimated and weighted."""

    # "gaussian" (learned variance), "laplace" (learned scale), "mse" or "bernoulli": vae/losses.py
    reconstruction: str = "gaussian"
    # Times the per-clip MEAN reconstruction term of "mse" and "bernoulli": for mse, a Gaussian
    # likelihood of variance n_pixels / (2 * recon_weight); 1e5 on 128 x 96 is sigma ~ 0.25 (the
    # original's 1e6 on 256 x 64: 0.09). Much smaller weights collapse the posterior: docs/training.md.
    recon_weight: float = 1e5
    # "gaussian" and "laplace": the learned scale's starting value (in units of the [0, 1] spectrogram).
    gaussian_init_scale: float = 0.1
    # Posterior draws z ~ q(z|x) per clip behind a Monte Carlo KL (the mixture prior's; analytic
    # KLs ignore them): how the loss estimates the KL, not a property of p(z).
    kl_samples: int = 1
    # The KL term's weight rises linearly from 1/(warm-up + 1) to 1 over the first this-many
    # epochs (0: full weight from the start).
    kl_warmup_epochs: int = 0
    # The KL term's weight once warmed up (beta-VAE; 1: the ELBO). Below 1 the code keeps more of each clip
    # (sharper reconstructions, voices never heard included) and the prior fits the codes less well: the
    # ex-post sampler draws from the codes' own mixtures instead (docs/training.md, "Rate").
    beta: float = 1.0
    # Weight of the pitch term of a model with ModelConfig.pitch: per clip, the voicing's cross-entropy
    # plus the squared log2-f0 error in tenths of an octave on voiced frames, summed over frames.
    pitch_weight: float = 1.0
    # A model with ModelConfig.pitch: score the reconstruction with each clip's own harmonics (its f0
    # track) drawn into the decoder's output, as decoding draws the predicted ones, so the decoder learns
    # the envelope they sit on instead of their average (vae/harmonics.py). A model without has none to draw.
    through_harmonics: bool = True
    # A conditional model: weight of a digit adversary on the code (0: none). A small classifier learns to
    # read the digit from mu while the encoder, through a reversed gradient, learns to hide it, so the
    # code carries the voice and the label alone says the digit (vae/models.py, docs/training.md).
    digit_adversary: float = 0.0
    # How the encoder hides the digit from it: "confuse" (its prediction pushed to uniform), "reverse" (its
    # cross-entropy through a reversed gradient, Ganin & Lempitsky 2015) or "moments" (no game: the share of
    # the code's variance that the digits' mean codes explain, vae.models.between_digit_share, with the
    # adversary only watching): vae.models.VAE.adversary_terms.
    adversary_kind: str = "confuse"
    # The adversary reads each code standardised over its batch (each dimension less its mean, over its
    # standard deviation), as a linear probe on standardised codes does: a digit held in differences far
    # smaller than the codes' spread is then as plain to it as any other (vae.models.standardise).
    adversary_standardise: bool = False
    # A model with a local code (ModelConfig.local_channels) is also scored decoding the local prior's mean
    # instead of the clip's local code, with a reconstruction term of its own (its own learned scale), at this
    # weight: generation decodes that way, so the decoder learns to do without the clip's detail too.
    local_prior_weight: float = 1.0

    def validate(self) -> LossConfig:
        _within_bounds(self)
        _choice(self, "reconstruction", RECONSTRUCTION_KINDS)
        _choice(self, "adversary_kind", ("confuse", "reverse", "moments"))
        _positive(self, "recon_weight", "kl_samples", "gaussian_init_scale", "beta")
        for key in ("pitch_weight", "digit_adversary", "local_prior_weight"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"LossConfig.{key}={getattr(self, key)} must be >= 0")
        if self.kl_warmup_epochs < 0:
            raise ConfigError(f"LossConfig.kl_warmup_epochs={self.kl_warmup_epochs} must be >= 0")
        return self

    def kl_weight(self, epoch: int) -> float:
        """The KL term's weight in training epoch ``epoch`` (1-based): ``beta``, after the warm-up."""
        if self.kl_warmup_epochs <= 0:
            return self.beta
        return self.beta * min(1.0, epoch / (self.kl_warmup_epochs + 1))


# --------------------------------------------------------------------------- training

# What a single run may rank its checkpoints by (TrainConfig.rank_by).
RANK_BY = (SCORE_METRIC, "samples")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    # Stop after the epoch that would otherwise end past this many seconds of training (0: no
    # limit), so a run fits a wall-clock budget on any machine; `epochs` stays the upper bound.
    time_budget_s: float = 0.0
    batch_size: int = 32  # per worker; the global batch is batch_size * num_workers
    learning_rate: float = 1e-3
    # The most the global norm of a step's gradient (of the loss averaged over the global batch,
    # summed over workers) may be: a larger one is scaled down to it (0: no clipping). Set for
    # `default`, whose rare very large steps were followed by collapses without it: docs/design.md,
    # "Gradient clipping at 3e4". Every epoch reports the norm's median and maximum and the share of
    # steps clipped, to set it for other losses and models.
    clip_norm: float = 3e4
    # "constant", or "cosine": from learning_rate down to lr_final_fraction of it over `epochs`, or
    # over the time budget when that runs out first (set at the start of each epoch).
    lr_schedule: str = "constant"
    lr_final_fraction: float = 0.05
    # Decoupled weight decay (AdamW) of the layers' kernels: each step takes learning rate x weight_decay of
    # each kernel off it (0: none). Biases, BatchNorm's scales and the prior's parameters are left alone.
    weight_decay: float = 0.0
    num_workers: int = 1
    cpus_per_worker: float = 1.0  # Ray CPUs each Train worker holds
    use_gpu: bool = False
    mixed_precision: bool = False
    # Ray placement of the workers: "PACK" fills a node first, "SPREAD" puts them on different nodes.
    placement_strategy: str = "PACK"
    seed: int = 0
    # A speaker none of whose clips train or validate the model (leave-one-speaker-out): evaluation
    # scores its reconstructions as a voice never heard. "": every speaker trains.
    held_out_speaker: str = ""
    # Speaker augmentation (vae/augment.py): this many warped copies of every training clip join the
    # training split (0: none), each with its frequencies scaled by up to 1 +- augment_warp (a longer or
    # shorter vocal tract, the pitch with it), its tempo by up to 1 +- augment_tempo and a spectral tilt of
    # up to +-augment_tilt_db across the band. Validation and evaluation see only real clips.
    augment_copies: int = 0
    augment_warp: float = 0.12
    augment_tempo: float = 0.1
    augment_tilt_db: float = 6.0
    # XLA-compile the train/eval steps where the strategy allows it (one worker): see
    # vae.models.DistributedSteps. Off by default: slower than the plain step on CPU
    # (benchmarks/train_throughput.py); try it on GPUs.
    jit_compile: bool = False
    # On one worker, BatchNorm's training pass through TensorFlow's fused kernel (vae.models.BatchNormalization):
    # a faster step (benchmarks/step_variants.py), the same maths; oneDNN's backward is less exact where a
    # gradient nearly cancels. Several workers use Keras' all-reduced moments.
    fused_batch_norm: bool = True
    # A checkpoint (with latent statistics and ex-post mixtures: a pass over the train shard
    # and a fit) after every this-many epochs, and always after the last one.
    checkpoint_every: int = 1
    checkpoints_to_keep: int = 2
    # What the checkpoints kept (and the run's best) are ranked by: "val_recon_mse", or "samples": the share
    # of the data's variance the validation reconstructions miss plus the share of rank_samples_per_digit
    # samples of each digit a recogniser does not hear as that digit (vae.objective), measured at each
    # checkpoint. With sampling.sampler "prior" and a conditional model those samples are z ~ N(0, I) with a
    # label. Needs a recogniser: the pipeline's own, or jobs.train --recogniser.
    rank_by: str = "val_recon_mse"
    rank_samples_per_digit: int = 10
    # Stop once what the run ranks by has not bettered its best for this many checkpoints in a row; 0: never.
    patience: int = 0
    # At every checkpoint, one generated clip of each of the first this-many digits goes to
    # TensorBoard as a spectrogram image and Griffin-Lim audio (vae/tracking.py); 0: none.
    tracking_samples: int = 4
    max_failures: int = 2

    def validate(self) -> TrainConfig:
        _within_bounds(self)
        if self.held_out_speaker and not re.fullmatch(SPEAKER, self.held_out_speaker):
            raise ConfigError(
                f"TrainConfig.held_out_speaker={self.held_out_speaker!r} is not a speaker name (letters, digits, hyphens)"
            )
        _positive(
            self,
            "epochs",
            "batch_size",
            "learning_rate",
            "num_workers",
            "cpus_per_worker",
            "checkpoints_to_keep",
            "checkpoint_every",
            "rank_samples_per_digit",
        )
        if self.clip_norm < 0:
            raise ConfigError(f"TrainConfig.clip_norm={self.clip_norm} must be >= 0 (0 = no clipping)")
        if self.time_budget_s < 0:
            raise ConfigError(f"TrainConfig.time_budget_s={self.time_budget_s} must be >= 0 (0 = no limit)")
        for key, top in (("augment_warp", 0.5), ("augment_tempo", 0.5), ("augment_tilt_db", 40.0)):
            if not 0 <= getattr(self, key) <= top:
                raise ConfigError(f"TrainConfig.{key}={getattr(self, key)} must be in [0, {top:g}]")
        if self.augment_copies < 0:
            raise ConfigError(f"TrainConfig.augment_copies={self.augment_copies} must be >= 0 (0 = no augmentation)")
        if self.patience < 0:
            raise ConfigError(f"TrainConfig.patience={self.patience} must be >= 0 (0 = train to the end)")
        if self.tracking_samples < 0:
            raise ConfigError(f"TrainConfig.tracking_samples={self.tracking_samples} must be >= 0 (0 = none)")
        if self.max_failures < -1:
            raise ConfigError(f"TrainConfig.max_failures={self.max_failures} must be >= -1 (-1 = retry forever)")
        _choice(self, "placement_strategy", ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"))
        _choice(self, "lr_schedule", ("constant", "cosine"))
        _choice(self, "rank_by", RANK_BY)
        if not 0 <= self.weight_decay <= 1:
            raise ConfigError(f"TrainConfig.weight_decay={self.weight_decay} must be in [0, 1] (0 = none)")
        if not 0 <= self.lr_final_fraction <= 1:
            raise ConfigError(f"TrainConfig.lr_final_fraction={self.lr_final_fraction} must be in [0, 1]")
        if self.mixed_precision and not self.use_gpu:
            raise ConfigError("TrainConfig.mixed_precision needs use_gpu: float16 on CPU is slower, not faster")
        return self

    def learning_rate_at(self, epoch: int, elapsed_s: float = 0.0) -> float:
        """The learning rate of ``epoch`` (from 1), begun ``elapsed_s`` seconds into training."""
        if self.lr_schedule == "constant":
            return self.learning_rate
        progress = (epoch - 1) / self.epochs
        if self.time_budget_s > 0:
            progress = max(progress, elapsed_s / self.time_budget_s)
        final = self.learning_rate * self.lr_final_fraction
        return final + (self.learning_rate - final) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@dataclass(frozen=True)
class FaultConfig:
    """Test-only fault switch: the worker of rank ``rank`` exits hard at the start of epoch ``epoch``,
    once. It reaches the workers through the loop config only, never a saved RunConfig."""

    epoch: int = -1  # -1: off
    rank: int = 1

    @property
    def armed(self) -> bool:
        return self.epoch > 0

    def validate(self) -> FaultConfig:
        _within_bounds(self)
        if self.rank < 0:
            raise ConfigError(f"FaultConfig.rank={self.rank} must be >= 0")
        return self


@dataclass(frozen=True)
class SamplingConfig:
    """Where generated latents are drawn from (vae/generation.py).

    "expost": per-digit Gaussian mixtures fitted to the training posterior means after each
    epoch and stored with the checkpoint (ex-post density estimation, Ghosh et al. 2020);
    "prior": the model's prior (p(z | digit) where the prior or the decoder knows digits, else
    the original's per-digit mean and spread of the training encodings).
    """

    sampler: str = "expost"
    expost_components: int = 3  # the most per digit; fewer when the Bayesian information criterion says so
    expost_covariance: str = "full"  # sklearn GaussianMixture covariance_type: "full" or "diag"
    # A transfer (vae.generation.transfer) decodes each clip's code moved towards the training codes' centre,
    # keeping this share of its distance (the truncation trick): 1 keeps the code, less leaves more of the
    # digit to the label. Chosen by benchmarks.transfer (docs/own-voice.md).
    transfer_code_scale: float = 0.5
    # A model with a local code (ModelConfig.local_channels) decodes generated codes with the local code
    # drawn from its prior at this share of the prior's spread: 0, the prior's mean, which training also
    # scores (LossConfig.local_prior_weight); measured in docs/benchmarks.md ("A second, local code").
    local_temperature: float = 0.0
    # A model with ModelConfig.pitch draws the harmonics of its predicted pitch into what it decodes, a comb
    # this many dB from peak to trough (vae/harmonics.py); 0 draws none. Training's comb
    # (LossConfig.through_harmonics) keeps its own depth. A model whose local code renders its own
    # harmonics sounds better under a shallower comb (docs/benchmarks.md, "The comb's depth").
    harmonic_depth_db: float = HARMONIC_DEPTH_DB

    def validate(self) -> SamplingConfig:
        _within_bounds(self)
        if not (_is_number(self.harmonic_depth_db) and 0 <= self.harmonic_depth_db <= MAX_HARMONIC_DEPTH_DB):
            raise ConfigError(
                f"SamplingConfig.harmonic_depth_db={self.harmonic_depth_db!r} must be in [0, {MAX_HARMONIC_DEPTH_DB:g}] "
                "(0 = no harmonics drawn)"
            )
        if not (_is_number(self.local_temperature) and self.local_temperature >= 0):
            raise ConfigError(
                f"SamplingConfig.local_temperature={self.local_temperature!r} must be >= 0 (0 = the local prior's mean)"
            )
        _choice(self, "sampler", ("expost", "prior"))
        _choice(self, "expost_covariance", ("full", "diag"))
        _positive(self, "expost_components")
        check_code_scale(self.transfer_code_scale, "SamplingConfig.transfer_code_scale")
        return self


@dataclass(frozen=True)
class RunConfig:
    """Everything a checkpoint needs to be understood alone."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # Last, so that positional RunConfig(features, model, prior, train) calls keep their meaning.
    loss: LossConfig = field(default_factory=LossConfig)

    def validate(self) -> RunConfig:
        _within_bounds(self)
        self.features.validate()
        self.model.validate()
        self.prior.validate()
        self.loss.validate()
        self.train.validate()
        self.sampling.validate()
        if self.loss.digit_adversary > 0 and not self.model.conditional:
            raise ConfigError(
                f"LossConfig.digit_adversary={self.loss.digit_adversary} needs ModelConfig.conditional: "
                "an unconditional decoder reads the digit from the code"
            )
        return self


# --------------------------------------------------------------------------- sweeps


@dataclass(frozen=True)
class SweepConfig:
    """How a sweep runs its trials (vae/tuning.py); what it searches is the space file's."""

    num_samples: int | None = None  # trials; None: the space file's num_samples
    max_concurrent: int | None = None  # trials at once; None: as many as the cluster fits
    workers_per_trial: int = TrainConfig.num_workers  # Ray Train workers of each trial
    use_gpu: bool = TrainConfig.use_gpu  # one GPU per Train worker
    n_per_digit: int = 3  # samples per digit the recogniser scores after each epoch of a trial
    # Terms the objective adds (vae/objective.py): "voicing" of those samples, "held_out" reconstruction of
    # the speaker the trials leave out (train.held_out_speaker, which it needs).
    objective: tuple[str, ...] = ()
    max_failures: int = 1  # times Tune retries a failed trial
    # The asha scheduler's settings where the space file gives none (max_t: train.epochs).
    grace_period: int = 1
    reduction_factor: float = 3.0
    search_seed: int = 0  # the search algorithm's seed where the space file gives none

    def validate(self) -> SweepConfig:
        _within_bounds(self)
        for name in ("num_samples", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"SweepConfig.{name}={value!r} must be an integer >= 1 (or unset)")
        _positive(self, "workers_per_trial", "n_per_digit", "grace_period")
        if self.max_failures < -1:
            raise ConfigError(f"SweepConfig.max_failures={self.max_failures} must be >= -1 (-1 = retry forever)")
        if not self.reduction_factor > 1:
            raise ConfigError(f"SweepConfig.reduction_factor={self.reduction_factor} must be above 1")
        if self.search_seed < 0:
            raise ConfigError(f"SweepConfig.search_seed={self.search_seed} must be >= 0")
        unknown = [t for t in self.objective if t not in OBJECTIVE_TERMS]
        if unknown or len(set(self.objective)) < len(self.objective):
            raise ConfigError(
                f"SweepConfig.objective={list(self.objective)}: each term once, of {list(OBJECTIVE_TERMS)}"
            )
        return self


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class RecogniserConfig:
    """The digit CNN that listens to generated audio (vae/evaluation/recogniser.py)."""

    # The input is average-pooled by this factor on both axes first: digits do not need full resolution.
    downsample: int = 2
    filters: tuple[int, ...] = (16, 32, 64, 64)  # one conv block (conv, batch norm, relu, 2x2 max-pool) each
    embedding_dim: int = 64  # the penultimate layer, read by the Frechet distance
    dropout: float = 0.2
    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 2e-3
    # Also train on every train clip after features -> Griffin-Lim -> features, so the
    # vocoder's artefacts (which all generated audio carries) are not read as content.
    # Fewer iterations than FeatureConfig.griffin_lim_iters: cheaper and harsher.
    gl_augment: bool = True
    gl_iters: int = 16
    seed: int = 0

    def validate(self) -> RecogniserConfig:
        _within_bounds(self)
        if not self.filters or any(not _is_number(f) or int(f) != f or f <= 0 for f in self.filters):
            raise ConfigError(f"RecogniserConfig.filters must be non-empty and positive, got {self.filters}")
        _positive(self, "downsample", "embedding_dim", "epochs", "batch_size", "learning_rate", "gl_iters")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"RecogniserConfig.dropout={self.dropout} must be in [0, 1)")
        return self


@dataclass(frozen=True)
class EvalConfig:
    """How a trained VAE is scored (vae/evaluation/run.py)."""

    # Digit-conditional samples per digit, for digit_accuracy. At 10 per digit (100 clips) its
    # binomial standard error is ~0.03 near 0.9, as large as the gaps it is read for; 30 brings it to ~0.017.
    n_per_digit: int = 30
    n_unconditional: int = 100  # prior samples, for inception_score and frechet_distance
    # inception_score and frechet_distance (and their floors) are means over this many draws of
    # n_unconditional clips: with 100 clips of 64-d embeddings, one draw's FD moves by a third
    # from one sampler seed to the next.
    unconditional_draws: int = 3
    n_report_per_digit: int = 3  # real / reconstructed / generated clips shown per digit in the report
    tsne_perplexity: float = 30.0
    seed: int = 0
    # Clips of each set the voice metrics (voicing, pesq_nb) score, spread evenly over it: pYIN takes
    # ~50 ms a clip, on four sets (reconstructions, samples, real clips, vocoder floor).
    voicing_clips: int = 60

    def validate(self) -> EvalConfig:
        _within_bounds(self)
        _positive(
            self, "n_per_digit", "n_unconditional", "unconditional_draws", "n_report_per_digit", "tsne_perplexity",
            "voicing_clips",
        )  # fmt: skip
        return self


# --------------------------------------------------------------------------- serving and ingest


@dataclass(frozen=True)
class ServeConfig:
    """The generation service (vae/serving): limits, batching and replicas."""

    max_clips: int = 16  # the most clips one /api/generate request may ask for (n=)
    # Requests decoded and inverted together by @serve.batch; 1 = one request at a time.
    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.01
    # Per replica; at least max_batch_size, or batches can never fill.
    max_ongoing_requests: int = 64
    num_replicas: int = 1
    num_cpus_per_replica: float = 1.0
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_seconds: float = 10.0  # longer uploads are refused (the model hears FeatureConfig.clip_seconds)
    # Clips per Griffin-Lim call are padded up to one of these sizes (beyond the largest, the
    # remainder after whole chunks of it), so that a compiled vocoder sees few batch shapes, each
    # compiled when a replica starts (as TF Serving's allowed_batch_sizes). () = no padding.
    vocoder_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    # How long Serve's controller waits for an HTTP proxy to start or answer a health check before it
    # restarts it (Serve's defaults, 5 s and 10 s, restart the proxies of a busy machine).
    proxy_timeout_s: float = 60.0
    # Bearer-token auth of every /api/* request: the name of an environment variable that holds the
    # token on every replica's node (so no secret sits in a config file); "" = no auth.
    auth_token_env: str = ""
    # /api/* requests a client address may make per minute, per replica (a token bucket holding a
    # minute's worth); 0 = no limit.
    rate_limit_per_minute: int = 0
    docs: bool = False  # FastAPI's /docs and /openapi.json; never with auth on

    def validate(self) -> ServeConfig:
        _within_bounds(self)
        _positive(
            self, "max_clips", "max_batch_size", "max_ongoing_requests", "num_replicas", "max_upload_bytes", "max_upload_seconds",
            "proxy_timeout_s",
        )  # fmt: skip
        if self.batch_wait_timeout_s < 0:
            raise ConfigError(f"ServeConfig.batch_wait_timeout_s={self.batch_wait_timeout_s} must be >= 0")
        if self.num_cpus_per_replica < 0:
            raise ConfigError(f"ServeConfig.num_cpus_per_replica={self.num_cpus_per_replica} must be >= 0")
        if self.max_ongoing_requests < self.max_batch_size:
            raise ConfigError(
                f"ServeConfig.max_ongoing_requests={self.max_ongoing_requests} must be >= max_batch_size={self.max_batch_size}"
            )
        sizes = list(self.vocoder_batch_sizes)
        if sizes and (sizes[0] != 1 or any(b <= a for a, b in zip(sizes, sizes[1:]))):
            raise ConfigError(
                f"ServeConfig.vocoder_batch_sizes={self.vocoder_batch_sizes} must start at 1 and increase"
            )
        if self.auth_token_env and not (self.auth_token_env.isascii() and self.auth_token_env.isidentifier()):
            raise ConfigError(
                f"ServeConfig.auth_token_env={self.auth_token_env!r} must name an environment variable (as FSDD_VAE_TOKEN)"
            )
        if self.rate_limit_per_minute < 0:
            raise ConfigError(
                f"ServeConfig.rate_limit_per_minute={self.rate_limit_per_minute} must be >= 0 (0 = no limit)"
            )
        if self.docs and self.auth_token_env:
            raise ConfigError("ServeConfig.docs=true needs auth off: /docs and /openapi.json take no token")
        return self


@dataclass(frozen=True)
class IngestConfig:
    """How one long recording is cut into utterances (vae/ingest.py)."""

    top_db: float = 30.0  # frames quieter than the recording's loudest by this many dB are silence
    frame_seconds: float = 0.025  # analysis frame of the silence detector (hop: a quarter of it)
    # Sounds closer than this are one utterance ("six" has a stop before its "ks").
    min_gap_seconds: float = 0.25
    min_utterance_seconds: float = 0.12  # shorter sounds (clicks, breaths) are dropped
    pad_seconds: float = 0.02  # kept either side of an utterance

    def validate(self) -> IngestConfig:
        _within_bounds(self)
        _positive(self, "top_db", "frame_seconds", "min_gap_seconds", "min_utterance_seconds")
        if self.pad_seconds < 0:
            raise ConfigError(f"IngestConfig.pad_seconds={self.pad_seconds} must be >= 0")
        return self


@dataclass(frozen=True)
class DemoConfig:
    """What ``make demo`` trains: the default RunConfig for as many epochs as fit its budget, so a
    faster machine (or a faster step) buys a better model in the same wall-clock time; the rest of
    the demo's time goes to extraction, the recogniser and evaluation."""

    max_epochs: int = 200
    train_budget_s: float = 600.0
    seed: int = 0
    # A checkpoint (latent statistics and the ex-post fit: a pass over the train shard) after every
    # this-many epochs and after the last one, which the budget's best model mostly is.
    checkpoint_every: int = 5
    # A speaker the demo never trains on, so its report scores a voice never heard ("": train on all).
    held_out_speaker: str = "theo"
    # Chosen by the sweep over the voice's choices (tune_spaces/voice.yaml, docs/benchmarks.md): the default
    # model with a 64-d code at a higher learning rate, no speaker augmentation (TrainConfig.augment_copies).
    latent_dim: int = 64
    learning_rate: float = 1.3e-3
    augment_copies: int = 0
    # A second, local code (ModelConfig.local_channels) at a quarter of the resolution, the pitch head's
    # harmonics drawn only when decoding (LossConfig.through_harmonics): the voice's detail, measured in
    # docs/benchmarks.md ("A second, local code").
    local_channels: int = 4
    through_harmonics: bool = False
    # The predicted pitch's harmonics drawn into what it decodes at this depth (SamplingConfig.harmonic_depth_db):
    # shallower than training's comb, since the local code renders the clip's own harmonics too.
    harmonic_depth_db: float = 15.0
    # TrainConfig.clip_norm for this model: its local code's gradients are larger than the default model's, and
    # at the default's 3e4 most steps were clipped; at 1e5 only the rare large ones are (docs/benchmarks.md,
    # "Gradient clipping for the local code").
    clip_norm: float = 1e5

    def validate(self) -> DemoConfig:
        _within_bounds(self)
        _positive(self, "max_epochs", "train_budget_s", "checkpoint_every", "latent_dim", "learning_rate")
        if self.clip_norm < 0:
            raise ConfigError(f"DemoConfig.clip_norm={self.clip_norm} must be >= 0 (0 = no clipping)")
        return self

    def run_config(self) -> RunConfig:
        base = RunConfig()
        train = dataclasses.replace(
            base.train,
            epochs=self.max_epochs,
            time_budget_s=self.train_budget_s,
            seed=self.seed,
            checkpoint_every=self.checkpoint_every,
            held_out_speaker=self.held_out_speaker,
            augment_copies=self.augment_copies,
            learning_rate=self.learning_rate,
            clip_norm=self.clip_norm,
        )
        model = dataclasses.replace(base.model, latent_dim=self.latent_dim, local_channels=self.local_channels)
        loss = dataclasses.replace(base.loss, through_harmonics=self.through_harmonics)
        sampling = dataclasses.replace(base.sampling, harmonic_depth_db=self.harmonic_depth_db)
        return dataclasses.replace(base, model=model, train=train, loss=loss, sampling=sampling).validate()


# --------------------------------------------------------------------------- helpers


PRESETS = {FeatureConfig: FEATURE_PRESETS, ModelConfig: MODEL_PRESETS}


def preset(cls: type[T], name: str, **overrides: Any) -> T:
    """``preset(FeatureConfig, "seed")``: a named preset with optional overrides, validated."""
    table = PRESETS[cls]
    if name not in table:
        raise ConfigError(f"unknown {cls.__name__} preset {name!r}; choose from {sorted(table)}")
    return from_dict(cls, {**table[name], **overrides}).validate()


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True)


def from_dict(cls: type[D], data: Mapping[str, Any], _path: str = "") -> D:
    """Build ``cls`` from plain data, recursing into nested config dataclasses.

    Unknown keys are an error (a typo must not silently fall back to a default).
    """
    prefix = _path or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{prefix}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            kwargs[name] = from_dict(type(default), value, f"{prefix}.{name}")
        else:
            kwargs[name] = _coerce(value, default, f"{prefix}.{name}")
    return cls(**kwargs)


def from_json(cls: type[D], text: str) -> D:
    return from_dict(cls, json.loads(text))


def _coerce(value: Any, default: Any, key: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if isinstance(default, int):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or int(value) != value
        ):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


# Keras activation names the models accept.
ACTIVATIONS = ("relu", "elu", "selu", "gelu", "silu", "swish", "tanh", "sigmoid", "leaky_relu", "softplus", "mish")


def check_code_scale(value: float, name: str) -> float:
    """``value``, a transfer's code scale (:attr:`SamplingConfig.transfer_code_scale`), if it is in [0, 1]."""
    if not 0 <= value <= 1:
        raise ConfigError(f"{name}={value} must be in [0, 1] (1 keeps each clip's code, 0 decodes the codes' centre)")
    return value


def _within_bounds(cfg: Any) -> None:
    """Every number of ``cfg`` (each number of a tuple too) at most its :data:`UPPER_BOUNDS` entry."""
    for f in fields(cfg):
        if f.type == "tuple[str, ...]":
            continue  # names: no number to bound
        value, key = getattr(cfg, f.name), f"{type(cfg).__name__}.{f.name}"
        numbers = _numbers(value, key)
        bound = UPPER_BOUNDS.get(key, DEFAULT_MAX)
        if any(n > bound for n in numbers):
            raise ConfigError(f"{key}={value!r} is over its bound {bound:g}")


def _numbers(value: Any, key: str) -> list[float]:
    """The numbers in a config value: itself, or those of a tuple of numbers and (for strides) pairs."""
    if isinstance(value, bool) or isinstance(value, str) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, tuple):
        out: list[float] = []
        for item in value:
            if isinstance(item, (tuple, list)) and all(_is_number(v) for v in item):
                out += list(item)
            elif _is_number(item):
                out.append(item)
            else:
                raise ConfigError(f"{key}: expected numbers (or pairs of them), got {item!r} in {list(value)!r}")
        return out
    return []


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            raise ConfigError(f"{type(cfg).__name__}.{name}={value!r} must be positive")


def _choice(cfg: Any, name: str, options: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in options:
        raise ConfigError(f"{type(cfg).__name__}.{name}={value!r}; choose from {list(options)}")
