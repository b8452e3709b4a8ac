"""vae.compat: every reader of an earlier layout, on a stored artefact of that layout (tests/data/)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from vae import checkpoint, compat
from vae.config import ConfigError, LossConfig, PriorConfig, RunConfig, SweepConfig, from_dict, to_dict

DATA = Path(__file__).parent / "data"
LEGACY_CHECKPOINTS = DATA / "legacy_checkpoints"


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_run_config_with_the_loss_in_prior_loads_into_the_loss_section_with_the_same_values():
    old = _json(DATA / "old_layouts" / "run_config.json")
    assert "loss" not in old and "recon_weight" in old["prior"]

    cfg = compat.run_config(old).validate()

    assert cfg.prior == PriorConfig(kind="mixture", components=4)
    assert cfg.loss == LossConfig(
        reconstruction="bernoulli",
        recon_weight=250.0,
        gaussian_init_scale=0.3,
        kl_samples=3,
        kl_warmup_epochs=5,
        through_harmonics=False,  # it was trained before harmonics were drawn
    )
    assert cfg.loss.kl_weight(3) == 0.5
    assert compat.run_config(to_dict(cfg)) == cfg  # today's layout reads back as it is
    # The new layout is the only one from_dict takes, and a key in both places is an error.
    with pytest.raises(ConfigError, match=r"RunConfig\.prior: unknown key"):
        from_dict(RunConfig, old)
    with pytest.raises(ConfigError, match=r"prior\.recon_weight.*loss\.recon_weight"):
        compat.run_config({**old, "loss": {"recon_weight": 1.0}})


def test_keys_a_run_config_lacks_take_the_values_it_was_trained_with():
    old = _json(DATA / "old_layouts" / "run_config.json")
    cfg = compat.run_config(old)
    assert (cfg.model.conditional, cfg.model.decoder_width) == (False, 1.0)
    assert (cfg.train.clip_norm, cfg.train.fused_batch_norm) == (0.0, False)
    assert cfg.sampling.sampler == "prior"
    del old["prior"]["reconstruction"]
    assert compat.run_config(old).loss.reconstruction == "mse"


def test_the_fault_keys_of_a_run_config_are_dropped():
    old = _json(DATA / "old_layouts" / "run_config.json")
    assert "fault_epoch" in old["train"]
    assert not [k for k in to_dict(RunConfig())["train"] if "fault" in k]
    today = to_dict(RunConfig())
    today["train"].update(fault_epoch=-1, fault_rank=1)
    assert compat.run_config(today) == RunConfig()


@pytest.mark.parametrize("kind", ["normal", "mixture"])
def test_stored_legacy_checkpoint_configs_load(kind):
    folder = LEGACY_CHECKPOINTS / kind
    raw = _json(folder / "config.json")
    assert "fault_epoch" in raw["train"]
    cfg = compat.run_config(raw).validate()
    assert (cfg.prior.kind, cfg.prior.components) == (kind, raw["prior"]["components"])
    assert (cfg.loss.reconstruction, cfg.loss.recon_weight, cfg.loss.kl_samples) == (
        raw["prior"]["reconstruction"],
        raw["prior"]["recon_weight"],
        raw["prior"]["kl_samples"],
    )
    _, checked = checkpoint.check(str(folder))
    assert checked == cfg


def test_stored_trial_parameters_with_moved_keys_apply_at_their_place_today():
    """Ray Tune hands a resumed sweep back the parameters it stored, in the keys they had then."""
    from vae.search_space import load_space

    params = compat.trial_params({"prior.kind": "normal", "prior.recon_weight": 300.0, "prior.reconstruction": "mse"})
    assert params == {"prior.kind": "normal", "loss.recon_weight": 300.0, "loss.reconstruction": "mse"}
    cfg = load_space("tune_spaces/smoke.yaml").run_config(params, RunConfig())
    assert (cfg.loss.recon_weight, cfg.loss.reconstruction) == (300.0, "mse")


def test_a_sweep_json_with_its_settings_at_the_top_level():
    from vae.tuning import sweep_settings

    old = compat.sweep(_json(DATA / "old_layouts" / "sweep.json"))
    assert sweep_settings(old) == SweepConfig(num_samples=4, n_per_digit=2)
    assert not {"num_samples", "n_per_digit", "workers_per_trial", "use_gpu"} & set(old)
    base = from_dict(RunConfig, old["base"])
    assert (base.loss.recon_weight, base.train.epochs, base.model.conditional) == (300.0, 2, False)
    today = {"settings": to_dict(SweepConfig(num_samples=5)), "base": to_dict(RunConfig())}
    assert compat.sweep(today) == today and sweep_settings(today) == SweepConfig(num_samples=5)


@pytest.mark.parametrize("kind", ["normal", "mixture"])
def test_a_stored_checkpoint_without_a_manifest_is_whole_with_every_file_it_held(kind, tmp_path):
    folder = LEGACY_CHECKPOINTS / kind
    assert not (folder / checkpoint.MANIFEST).exists()
    assert checkpoint.problem(str(folder)) is None
    assert compat.unmanifested_checkpoint_missing(lambda name: (folder / name).exists()) == []
    half = tmp_path / "half"
    shutil.copytree(folder, half)
    os.remove(half / checkpoint.STATE)
    assert (
        checkpoint.problem(str(half))
        == f"{checkpoint.MANIFEST} and {checkpoint.STATE} missing: not a complete checkpoint"
    )
    with pytest.raises(checkpoint.CheckpointError, match=checkpoint.STATE):
        checkpoint.check(str(half))


def test_the_unmanifested_checkpoint_files_are_checkpoint_file_names():
    names = (checkpoint.WEIGHTS, checkpoint.CONFIG, checkpoint.STATE, checkpoint.METRICS, checkpoint.LATENT_STATS)
    assert compat.UNMANIFESTED_CHECKPOINT == names


def _old_dataset(tmp_path: Path) -> Path:
    """A copy of the stored dataset folder that holds its parts and summary itself (no published version)."""
    folder = tmp_path / "old"
    shutil.copytree(DATA / "old_layouts" / "dataset", folder)
    return folder


def test_a_dataset_folder_holding_its_parts_itself_is_read_when_it_is_one_whole_run(tmp_path):
    from vae import dataset, storage

    folder = _old_dataset(tmp_path)
    summary = _json(folder / dataset.SUMMARY_FILE)
    assert "parts" not in summary and not (folder / storage.PUBLISHED_POINTER).exists()
    parts = [p.name for p in folder.glob("part-*.parquet")]
    files = [str(folder / name) for name in parts]
    read = compat.dataset_summary(storage.resolve(str(folder)), files, summary, "redo")
    assert read == {**summary, "parts": {parts[0]: 3}}
    assert list(dataset.load_split_numpy(str(folder), "train", columns=["id"])["id"]) == ["1_anna_5", "2_bob_7"]
    assert dataset.read_feature_config(str(folder)).shape == (8, 11)

    # A part of another (interrupted) run beside them: not one whole dataset.
    shutil.copy(folder / parts[0], folder / parts[0].replace(summary["run_id"], "0123456789ab"))
    with pytest.raises(storage.StorageError, match="not one whole dataset.*interrupted extraction") as info:
        dataset.published_dataset(str(folder))
    assert str(folder) in str(info.value)


def test_publishing_into_a_dataset_folder_holding_its_parts_itself_removes_them(tmp_path):
    import pyarrow.parquet as pq

    from vae import dataset, storage

    folder = _old_dataset(tmp_path)
    version = dataset.write_dataset(str(folder), pq.read_table(next(folder.glob("part-*.parquet"))))
    compat.remove_unpublished_dataset(storage.resolve(str(folder)))
    assert not list(folder.glob("part-*.parquet"))
    assert not (folder / dataset.REJECTED_DIR).exists() and not (folder / dataset.SUMMARY_FILE).exists()
    assert storage.published(str(folder)) == version
    assert len(dataset.load_split_numpy(str(folder), None, columns=["id"])["id"]) == 3
