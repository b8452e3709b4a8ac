import glob

import pytest

from vae.config import RunConfig
from vae.search_space import SpaceError, load_space, parse_space


@pytest.mark.parametrize("path", sorted(glob.glob("tune_spaces/*.yaml")))
def test_shipped_spaces_load(path):
    space = load_space(path)
    assert space.params and space.num_samples >= 1
    cfg = space.run_config({p.key: p.grid(2)[0] for p in space.params}, RunConfig())
    assert cfg.validate() is cfg


def test_prior_kind_loss_and_sampler_are_plain_config_keys():
    space = load_space("tune_spaces/smoke.yaml")
    cfg = space.run_config(
        {"prior.kind": "mixture", "loss.reconstruction": "gaussian", "model.conditional": True}, RunConfig()
    )
    assert (cfg.prior.kind, cfg.prior.components, cfg.loss.reconstruction, cfg.model.conditional) == (
        "mixture",
        2,
        "gaussian",
        True,
    )
    assert (
        load_space("tune_spaces/cpu.yaml").run_config({"sampling.sampler": "prior"}, RunConfig()).sampling.sampler
        == "prior"
    )
    with pytest.raises(SpaceError, match="prior.kind"):
        parse_space({"params": {"prior.kind": {"choice": ["normal", "wishart"]}}})


def test_a_space_naming_a_moved_key_fails_naming_its_new_place(tmp_path):
    """prior.recon_weight & co. moved to loss.*: a space file written before says where they went."""
    old = tmp_path / "old.yaml"
    old.write_text("params:\n  prior.recon_weight: {loguniform: [1.0e4, 1.0e6]}\n")
    with pytest.raises(
        SpaceError, match=r"old\.yaml: params\.prior\.recon_weight: has moved: write 'loss\.recon_weight'"
    ):
        load_space(old)
    with pytest.raises(SpaceError, match=r"fixed\.prior\.kl_warmup_epochs: has moved: write 'loss\.kl_warmup_epochs'"):
        parse_space({"fixed": {"prior.kl_warmup_epochs": 2}, "params": {"model.latent_dim": {"choice": [8]}}})


def test_a_space_naming_what_a_sweep_ranks_by_is_refused():
    with pytest.raises(
        SpaceError, match=r"fixed\.train\.rank_by: a sweep ranks every trial's checkpoints by its objective"
    ):
        parse_space({"fixed": {"train.rank_by": "samples"}, "params": {"model.latent_dim": {"choice": [8]}}})
    with pytest.raises(SpaceError, match=r"params\.train\.rank_samples_per_digit: a sweep scores sweep\.n_per_digit"):
        parse_space({"params": {"train.rank_samples_per_digit": {"choice": [5, 10]}}})


def test_fixed_values_and_model_preset_apply():
    cfg = load_space("tune_spaces/smoke.yaml").run_config({"model.latent_dim": 2}, RunConfig())
    assert cfg.train.epochs == 2 and cfg.model.latent_dim == 2 and cfg.model.filters == (4, 8)


@pytest.mark.parametrize(
    "raw, culprit",
    [
        ({"params": {"model.latnt_dim": {"choice": [8]}}}, "params.model.latnt_dim"),
        ({"params": {"modle.latent_dim": {"choice": [8]}}}, "params.modle.latent_dim"),
        ({"params": {"loss.recon_weight": {"loguniform": [0, 1]}}}, "params.loss.recon_weight.loguniform"),
        ({"params": {"loss.recon_weight": {"normal": [0, 1]}}}, "params.loss.recon_weight"),
        ({"params": {"train.learning_rate": {"uniform": [1, 0.1]}}}, "params.train.learning_rate.uniform"),
        ({"params": {"model.latent_dim": {"choice": [0, 8]}}}, "params.model.latent_dim"),
        ({"params": {"model.latent_dim": {"choice": [8]}}, "num_sampels": 3}, "num_sampels"),
        ({"params": {"model.latent_dim": {"choice": [8]}}, "scheduler": {"type": "hyperband"}}, "scheduler.type"),
        ({"params": {"model.latent_dim": {"choice": [8]}}, "base": {"model": "huge"}}, "base.model"),
        ({"params": {}}, "params"),
    ],
)
def test_malformed_space_names_the_key(raw, culprit):
    with pytest.raises(SpaceError) as err:
        parse_space(raw, "bad.yaml")
    assert f"bad.yaml: {culprit}:" in str(err.value)


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(SpaceError, match="not found"):
        load_space(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: [unclosed")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(bad)


def test_start_with_points_are_complete_and_inside_the_space():
    space = load_space("tune_spaces/cpu.yaml")
    assert len(space.start_with) == 2 and all(set(p) == {q.key for q in space.params} for p in space.start_with)
    base = {"params": {"model.latent_dim": {"choice": [8, 16]}, "train.learning_rate": {"loguniform": [1e-4, 1e-2]}}}
    ok = parse_space(
        {**base, "search": {"type": "random", "start_with": [{"model.latent_dim": 8, "train.learning_rate": 1e-3}]}}
    )
    assert ok.start_with == ({"model.latent_dim": 8, "train.learning_rate": 1e-3},)
    with pytest.raises(SpaceError, match=r"start_with\[0\].*missing \['train.learning_rate'\]"):
        parse_space({**base, "search": {"type": "optuna", "start_with": [{"model.latent_dim": 8}]}})
    with pytest.raises(SpaceError, match=r"start_with\[0\].model.latent_dim"):
        parse_space(
            {
                **base,
                "search": {"type": "optuna", "start_with": [{"model.latent_dim": 12, "train.learning_rate": 1e-3}]},
            }
        )
    with pytest.raises(SpaceError, match=r"start_with\[0\].train.learning_rate"):
        parse_space(
            {**base, "search": {"type": "optuna", "start_with": [{"model.latent_dim": 8, "train.learning_rate": 1.0}]}}
        )
    with pytest.raises(SpaceError, match="search.points"):
        parse_space({**base, "search": {"type": "optuna", "points": []}})


BASE = {"fixed": {"train.epochs": 4}, "params": {"model.latent_dim": {"choice": [8]}}}


@pytest.mark.parametrize(
    "extra, culprit",
    [
        ({"scheduler": {"type": "asha", "grace_periood": 2}}, "scheduler.grace_periood"),
        ({"scheduler": {"type": "fifo", "grace_period": 2}}, "scheduler.grace_period"),
        ({"search": {"type": "optuna", "sed": 3}}, "search.sed"),
        ({"metric": "val_loss"}, "metric"),
        ({"scheduler": {"type": "asha", "grace_period": 0.5}}, "scheduler.grace_period"),
        ({"scheduler": {"type": "asha", "grace_period": 0}}, "scheduler.grace_period"),
        ({"scheduler": {"type": "asha", "grace_period": True}}, "scheduler.grace_period"),
        ({"scheduler": {"type": "asha", "grace_period": 5}}, "scheduler.grace_period"),  # > train.epochs (4)
        ({"scheduler": {"type": "asha", "max_t": 9}}, "scheduler.max_t"),
        ({"scheduler": {"type": "asha", "max_t": 2, "grace_period": 3}}, "scheduler.grace_period"),
        ({"scheduler": {"type": "asha", "reduction_factor": 1}}, "scheduler.reduction_factor"),
        ({"scheduler": {"type": "asha", "reduction_factor": "3"}}, "scheduler.reduction_factor"),
        ({"scheduler": "asha"}, "scheduler"),
        ({"search": {"type": "random", "seed": -1}}, "search.seed"),
        ({"search": {"type": "optuna", "seed": 1.5}}, "search.seed"),
        ({"params": {"prior.components": {"choice": [0, -2]}}}, "params.prior.components"),
        ({"params": {"prior.components": {"choice": [2.5]}}}, "params.prior.components"),
        ({"params": {"prior.components": {"loguniform": [1, 20]}}}, "params.prior.components"),
        ({"fixed": {}, "params": {"train.epochs": {"choice": [2, 4]}}}, "params.train.epochs"),
        ({"fixed": {"train.epochs": 4, "prior.components": -1}}, "fixed"),
    ],
)
def test_every_part_of_a_space_is_validated(extra, culprit):
    with pytest.raises(SpaceError) as err:
        parse_space({**BASE, **extra}, "bad.yaml")
    assert f"bad.yaml: {culprit}:" in str(err.value)


def test_scheduler_bounds_follow_the_fixed_epochs():
    space = parse_space({**BASE, "scheduler": {"type": "asha", "grace_period": 4, "max_t": 4, "reduction_factor": 1.5}})
    assert space.scheduler["grace_period"] == 4
    assert parse_space({"params": {"train.epochs": {"choice": [2, 4]}}, "scheduler": {"type": "fifo"}}).params
    assert not hasattr(space, "metric")
