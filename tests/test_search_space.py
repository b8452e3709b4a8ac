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
    cfg = space.run_config({"prior.kind": "mixture", "prior.reconstruction": "gaussian", "model.conditional": True}, RunConfig())
    assert (cfg.prior.kind, cfg.prior.components, cfg.prior.reconstruction, cfg.model.conditional) == ("mixture", 2, "gaussian", True)
    assert load_space("tune_spaces/cpu.yaml").run_config({"sampling.sampler": "prior"}, RunConfig()).sampling.sampler == "prior"
    with pytest.raises(SpaceError, match="prior.kind"):
        parse_space({"params": {"prior.kind": {"choice": ["normal", "wishart"]}}})


def test_fixed_values_and_model_preset_apply():
    cfg = load_space("tune_spaces/smoke.yaml").run_config({"model.latent_dim": 2}, RunConfig())
    assert cfg.train.epochs == 3 and cfg.model.latent_dim == 2 and cfg.model.filters == (4, 8)


@pytest.mark.parametrize(
    "raw, culprit",
    [
        ({"params": {"model.latnt_dim": {"choice": [8]}}}, "params.model.latnt_dim"),
        ({"params": {"modle.latent_dim": {"choice": [8]}}}, "params.modle.latent_dim"),
        ({"params": {"prior.recon_weight": {"loguniform": [0, 1]}}}, "params.prior.recon_weight.loguniform"),
        ({"params": {"prior.recon_weight": {"normal": [0, 1]}}}, "params.prior.recon_weight"),
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
