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
        ("train.patience=-1", "TrainConfig.patience=-1 must be >= 0 (0 = train to the end)"),
        ("model.local_channels=-1", "ModelConfig.local_channels must be a whole number of at least 0, got -1"),
        ("sampling.local_temperature=-1", "SamplingConfig.local_temperature=-1.0 must be >= 0"),
        ("sampling.harmonic_depth_db=-5", "SamplingConfig.harmonic_depth_db=-5.0 must be in [0, 90]"),
        ("sampling.harmonic_depth_db=900", "SamplingConfig.harmonic_depth_db=900.0 must be in [0, 90]"),
        ("loss.local_prior_weight=-1", "LossConfig.local_prior_weight=-1.0 must be >= 0"),
    ],
)
def test_train_refuses_a_bad_value_naming_it_before_anything_starts(tmp_path, capsys, assignment, says):
    runs = tmp_path / "runs"
    code = train.main(["--data", str(tmp_path / "data"), "--out", str(runs), "--name", "n", "--set", assignment])
    err = capsys.readouterr().err
    assert code == 1 and says in err and "Traceback" not in err, err
    assert not (runs / "n").exists(), "the name stays free"


def test_the_demo_refuses_a_bad_value_before_fetching_the_data(tmp_path, capsys, monkeypatch):
    from jobs import demo

    monkeypatch.delenv("FSDD_DIR", raising=False)
    code = demo.main(
        ["--out", str(tmp_path / "out"), "--download-to", str(tmp_path / "data"), "--set", "demo.local_channels=-2"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "ModelConfig.local_channels must be a whole number of at least 0, got -2" in err, err
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


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


def _damaged_copy(small_parquet: str, tmp_path, damage) -> tuple[str, str]:
    """A copy of the dataset with its first part file rewritten by ``damage(table) -> table``; the
    copy's URI and that file's name."""
    import pyarrow.parquet as pq

    from vae.dataset import parquet_files

    copy = tmp_path / "data"
    shutil.copytree(small_parquet, copy)
    _, files = parquet_files(str(copy))
    table = pq.read_table(files[0])
    pq.write_table(damage(table), files[0])
    return str(copy), files[0]


def _with_spectrograms(table, values, shape=None):
    import pyarrow as pa

    spec = table.column("spectrogram").combine_chunks()
    shape = shape or spec.type.shape
    storage_array = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), pa.float32()), int(values[0].size))
    tensor = pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.float32(), shape), storage_array)
    return table.set_column(table.schema.get_field_index("spectrogram"), "spectrogram", tensor)


def _values(table):
    spec = table.column("spectrogram").combine_chunks()
    return spec.storage.flatten().to_numpy().reshape(len(spec), -1).copy()


def _nan(table):
    values = _values(table)
    values[0, 5] = float("nan")
    return _with_spectrograms(table, values)


def _digit_42(table):
    import pyarrow as pa

    digits = table.column("digit").to_numpy().copy()
    digits[0] = 42
    return table.set_column(table.schema.get_field_index("digit"), "digit", pa.array(digits, pa.int64()))


def _wrong_shape(table):
    values = _values(table)
    return _with_spectrograms(table, values[:, : values.shape[1] // 2], shape=[values.shape[1] // 2])


@pytest.mark.parametrize(
    "damage, says",
    [
        (_nan, "has a spectrogram with NaN or infinite values"),
        (_digit_42, "has digit 42; digits are 0-9"),
        (_wrong_shape, "spectrograms of shape"),
    ],
    ids=["nan", "digit-42", "wrong-shape"],
)
def test_train_refuses_bad_clips_naming_the_file_before_training(small_parquet, tmp_path, capsys, damage, says):
    data, part = _damaged_copy(small_parquet, tmp_path, damage)
    runs = tmp_path / "runs"
    code = train.main(["--data", data, "--out", str(runs), "--name", "n", "--model", "tiny", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 1 and f"{part}: " in err and says in err and "Traceback" not in err, err
    assert not (runs / "n").exists(), "nothing written: the name stays free"


def test_a_long_storage_error_is_one_line_in_the_json_and_on_stderr(tmp_path, capsys):
    """A storage client's message can carry kilobytes of detail; the job's error stays one line."""
    from jobs import _cli
    from vae.storage import StorageError

    detail = "\n".join(f"  at frame {i}: aws-sdk-cpp said something long" for i in range(60))

    def body() -> int:
        raise StorageError(f"cannot write s3://bucket/run/metrics.json: {detail}")

    assert _cli.run("train", body) == 1
    out, err = capsys.readouterr()
    error = json.loads(out.strip().splitlines()[-1])["error"]
    assert error.startswith("cannot write s3://bucket/run/metrics.json: at frame 0")
    assert "\n" not in error and len(error) <= _cli.MAX_ERROR_CHARS
    assert err.count("\n") == 1 and err.endswith("(all of it: --verbose)\n")
    assert _cli.run("train", body, verbose=True) == 1
    assert "at frame 59" in capsys.readouterr().err
