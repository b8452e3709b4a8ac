"""Bad config values and damaged artefacts end in one line naming the culprit, through the jobs' own
entry points: no traceback, nothing loaded or started first."""

from __future__ import annotations

import json
import shutil

import pytest

from jobs import generate, train
from vae import checkpoint


@pytest.mark.parametrize(
    "assignment, says",
    [
        ("model.latent_dim=.inf", "model.latent_dim: expected an integer, got inf"),
        ("model.latent_dim=1e400", "model.latent_dim: expected an integer, got inf"),
        ("model.filters=[[1, 2], [3], [4], [5]]", "ModelConfig.filters must be whole numbers of at least 1"),
        ("model.filters=[8, a, 3, 4]", "ModelConfig.filters: expected numbers (or pairs of them), got 'a'"),
        ("model.kernels=[0, 0, 0, 0]", "ModelConfig.kernels must be whole numbers of at least 1"),
        ("model.strides=[2, 2, 2, [2, 1, 3]]", "ModelConfig.strides must be whole numbers >= 1 or [rows, columns]"),
        ("model.activation=bogus", "ModelConfig.activation='bogus'; choose from"),
        ("model.latent_dim=1000000000", "ModelConfig.latent_dim=1000000000 is over its bound 2048"),
        ("train.batch_size=100000000", "TrainConfig.batch_size=100000000 is over its bound 65536"),
    ],
)
def test_train_refuses_a_bad_value_naming_it_before_anything_starts(tmp_path, capsys, assignment, says):
    runs = tmp_path / "runs"
    code = train.main(["--data", str(tmp_path / "data"), "--storage", str(runs), "--name", "n", "--set", assignment])
    err = capsys.readouterr().err
    assert code == 1 and says in err and "Traceback" not in err, err
    assert not (runs / "n").exists(), "the name stays free"


def _edited(tiny: str, tmp_path, name: str, content) -> str:
    """A copy of the checkpoint ``tiny`` with ``name`` rewritten (its manifest kept true)."""
    ckpt = str(tmp_path / "edited")
    shutil.copytree(tiny, ckpt)
    checkpoint.write_json(ckpt, name, content)
    return ckpt


@pytest.fixture(scope="module")
def tiny(fsdd_dir, tmp_path_factory) -> str:
    from tiny_checkpoint import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", fsdd_dir)


@pytest.mark.parametrize(
    "name, edit, says",
    [
        (checkpoint.EXPOST, lambda _: [], "expost.json holds a list, not a JSON object"),
        (checkpoint.CONFIG, lambda c: {**c, "model": {**c["model"], "latent_dim": 10**9}}, "is over its bound 2048"),
        (
            checkpoint.CONFIG,
            lambda c: {**c, "features": {**c["features"], "griffin_lim_iters": 10**9}},
            "FeatureConfig.griffin_lim_iters=1000000000 is over its bound 2000",
        ),
    ],
    ids=["expost-list", "latent-dim", "griffin-lim-iters"],
)
def test_generate_refuses_a_checkpoint_with_a_bad_file_naming_it(tiny, tmp_path, capsys, name, edit, says):
    with open(f"{tiny}/{name}") as f:
        content = edit(json.load(f))
    ckpt = _edited(tiny, tmp_path, name, content)
    code = generate.main(["--checkpoint", ckpt, "--out", str(tmp_path / "out"), "--n", "1", "--digit", "3"])
    err = capsys.readouterr().err
    assert code == 1 and says in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
