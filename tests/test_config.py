import dataclasses

import pytest

from vae.config import (
    ConfigError,
    FeatureConfig,
    IngestConfig,
    LossConfig,
    ModelConfig,
    PriorConfig,
    RunConfig,
    ServeConfig,
    TrainConfig,
    from_dict,
    from_json,
    preset,
    to_json,
)


def test_round_trip_through_json_keeps_nested_tuples():
    cfg = RunConfig(
        features=preset(FeatureConfig, "seed"), model=preset(ModelConfig, "seed"), prior=PriorConfig(kind="mixture")
    )
    back = from_json(RunConfig, to_json(cfg))
    assert back == cfg
    assert back.model.strides[-1] == (2, 1)


def test_seed_feature_preset_matches_the_original():
    seed = preset(FeatureConfig, "seed")
    assert seed.shape == (256, 64)
    assert (seed.sample_rate, seed.n_fft, seed.hop_length, seed.normalisation) == (22050, 512, 256, "per_clip")


@pytest.mark.parametrize(
    "cls, data, culprit",
    [
        (RunConfig, {"prior": {"kindd": "normal"}}, "RunConfig.prior: unknown key"),
        (RunConfig, {"train": {"epochs": "ten"}}, "RunConfig.train.epochs"),
        (RunConfig, {"train": {"learning_rate": float("nan")}}, "RunConfig.train.learning_rate"),
        (TrainConfig, {"use_gpu": "yes"}, "TrainConfig.use_gpu"),
    ],
)
def test_bad_values_name_the_key(cls, data, culprit):
    with pytest.raises(ConfigError, match=culprit.replace(".", r"\.")):
        from_dict(cls, data)


@pytest.mark.parametrize(
    "make, culprit",
    [
        (lambda: preset(ModelConfig, "tiny", latent_dim=0), "latent_dim"),
        (lambda: preset(FeatureConfig, "default", n_bins=4096), "n_bins"),
        (lambda: PriorConfig(kind="vamp").validate(), "kind"),
        (lambda: LossConfig(reconstruction="l1").validate(), "LossConfig.reconstruction"),
        (lambda: LossConfig(kl_warmup_epochs=-1).validate(), "LossConfig.kl_warmup_epochs"),
        (lambda: TrainConfig(mixed_precision=True).validate(), "mixed_precision"),
        (lambda: TrainConfig(clip_norm=-1.0).validate(), "TrainConfig.clip_norm"),
        (lambda: TrainConfig(weight_decay=-0.1).validate(), "TrainConfig.weight_decay"),
        (lambda: preset(ModelConfig, "huge"), "huge"),
        (lambda: ServeConfig(max_batch_size=64, max_ongoing_requests=32).validate(), "max_ongoing_requests"),
        (lambda: ServeConfig(vocoder_batch_sizes=(2, 4)).validate(), "vocoder_batch_sizes"),
        (lambda: ServeConfig(vocoder_batch_sizes=(1, 4, 4)).validate(), "vocoder_batch_sizes"),
        (lambda: ServeConfig(max_clips=0).validate(), "max_clips"),
        (lambda: IngestConfig(min_gap_seconds=0).validate(), "min_gap_seconds"),
        (lambda: LossConfig(pitch_weight=-1.0).validate(), "LossConfig.pitch_weight"),
        (lambda: TrainConfig(held_out_speaker="../theo").validate(), "held_out_speaker"),
    ],
)
def test_invalid_configs_are_rejected(make, culprit):
    with pytest.raises(ConfigError, match=culprit):
        make()


def test_demo_config_trains_the_default_for_its_budget():
    from vae.config import DemoConfig

    cfg = DemoConfig(max_epochs=7, train_budget_s=60, seed=3, checkpoint_every=2).run_config()
    assert (cfg.train.epochs, cfg.train.time_budget_s, cfg.train.seed, cfg.train.checkpoint_every) == (7, 60, 3, 2)
    # the default model with the sweep's choices (DemoConfig's comments)
    assert cfg.model == dataclasses.replace(RunConfig().model, latent_dim=64, local_channels=4)
    assert (cfg.train.learning_rate, cfg.train.clip_norm) == (1.3e-3, 1e5)
    assert cfg.loss == dataclasses.replace(RunConfig().loss, through_harmonics=False)
    assert cfg.prior == RunConfig().prior
    assert cfg.sampling == dataclasses.replace(RunConfig().sampling, harmonic_depth_db=15.0)
    with pytest.raises(ConfigError, match="train_budget_s"):
        DemoConfig(train_budget_s=0).validate()
    with pytest.raises(ConfigError, match="DemoConfig.clip_norm=-1"):
        DemoConfig(clip_norm=-1).validate()


def test_the_cosine_learning_rate_anneals_over_the_epochs_or_the_time_budget_whichever_runs_out_first():
    by_epochs = TrainConfig(learning_rate=1e-3, lr_schedule="cosine", lr_final_fraction=0.1, epochs=4).validate()
    assert [by_epochs.learning_rate_at(e) for e in (1, 3)] == pytest.approx([1e-3, 5.5e-4])
    assert by_epochs.learning_rate_at(4) > 1e-4  # the last epoch starts before the end of the curve
    by_time = dataclasses.replace(by_epochs, epochs=1000, time_budget_s=100.0)
    assert by_time.learning_rate_at(2, elapsed_s=50.0) == pytest.approx(5.5e-4)
    assert by_time.learning_rate_at(30, elapsed_s=150.0) == pytest.approx(1e-4)  # never below the final rate
    assert by_time.learning_rate_at(999, elapsed_s=1.0) < 1.1e-4  # the epochs may run out first too
    assert TrainConfig(learning_rate=2e-3).learning_rate_at(7, elapsed_s=99.0) == 2e-3
