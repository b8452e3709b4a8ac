"""No file name from data decides where a file is written: clip ids in the run report, storage keys
in the sweep report and jobs.reconstruct, published pointers for jobs.generate, and the ``source``
column that evaluation reads."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import evaluate as evaluate_job
from jobs import generate as generate_job
from jobs import reconstruct as reconstruct_job
from vae import checkpoint, dataset, storage
from vae.config import EvalConfig, ModelConfig, PriorConfig, RunConfig, TrainConfig, preset
from vae.latent_stats import latent_stats
from vae.models import build_vae

HOSTILE = [
    "../../../../elsewhere/PWNED_1",
    "/tmp/elsewhere/PWNED_2",
    "a/b/c",
    "nul\0byte",
    "..",
    "x" * 5000,
    "<img src=x onerror=alert(1)>",
]


def _files_under(root: Path) -> set[Path]:
    return {Path(d) / f for d, _, fs in os.walk(root) for f in fs}


@pytest.fixture(scope="module")
def untrained(small_parquet, tmp_path_factory) -> str:
    """An untrained ``tiny`` checkpoint on the small dataset's features (no Ray Train needed)."""
    features = dataset.read_feature_config(small_parquet)
    run_cfg = RunConfig(
        features=features, model=preset(ModelConfig, "tiny"), prior=PriorConfig(), train=TrainConfig(epochs=1)
    ).validate()
    vae = build_vae(features.shape, run_cfg.model, run_cfg.prior)
    stats = latent_stats(vae, "normal", [dataset.load_split_numpy(small_parquet, "train")])
    directory = str(tmp_path_factory.mktemp("untrained") / "checkpoint_0001")
    checkpoint.save(directory, vae, None, 1, run_cfg, {"epoch": 1}, stats)
    return directory


def _put_raw(s3_endpoint: str, uri: str, keys: list[str], data: bytes) -> None:
    """Objects under ``uri`` with these keys exactly as given (S3 allows '..' segments; storage.resolve does not)."""
    import boto3

    bucket, _, prefix = uri[len("s3://") :].partition("/")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    for key in keys:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=data)


def _test_split_with(small_parquet: str, out: str, ids=None, sources=None) -> str:
    loc, files = dataset.parquet_files(small_parquet)
    table = pa.concat_tables([pq.read_table(f, filesystem=loc.fs) for f in files])
    # One test clip of each of len(HOSTILE) digits.
    table = table.filter(pc.and_(pc.equal(table.column("take"), 0), pc.equal(table.column("speaker"), "george")))
    table = table.sort_by("id").slice(0, len(HOSTILE))
    for name, values in (("id", ids), ("source", sources)):
        if values is not None:
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(values, pa.string()))
    dataset.write_dataset(out, table)
    return out


def test_evaluation_refuses_a_dataset_whose_ids_or_sources_are_not_its_recordings(
    untrained, small_parquet, tmp_path, capsys
):
    legit = dataset.load_split_numpy(
        _test_split_with(small_parquet, str(tmp_path / "legit")), "test", columns=["id", "source"]
    )
    cases = {
        "ids": dict(ids=HOSTILE),
        "sources": dict(sources=["/etc/passwd", *[str(tmp_path / ".." / s) for s in legit["source"][1:]]]),
        "other recording": dict(sources=list(legit["source"][::-1])),
    }
    for case, change in cases.items():
        data = _test_split_with(small_parquet, str(tmp_path / case), **change)
        out = tmp_path / "deep" / "er" / case
        assert (
            evaluate_job.main(
                [
                    "--checkpoint",
                    untrained,
                    "--data",
                    data,
                    "--out",
                    str(out),
                    "--n-per-digit",
                    "1",
                    "--n-unconditional",
                    "2",
                ]
            )
            == 1
        ), case
        error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
        assert "source" in error, (case, error)
    written = _files_under(tmp_path)
    assert not [p for p in written if "elsewhere" in str(p) or "PWNED" in str(p)]


def test_the_run_report_keeps_every_file_inside_its_folder(untrained, small_parquet, tmp_path):
    from vae.evaluation.run import evaluate
    from vae.reports.run_report import write

    data = _test_split_with(small_parquet, str(tmp_path / "data"))
    ev = evaluate(
        checkpoint.load(untrained),
        data,
        None,
        EvalConfig(n_per_digit=1, n_unconditional=2, n_report_per_digit=3),
    )
    ev = replace(ev, test_ids=np.asarray(HOSTILE, dtype=object))
    out = tmp_path / "a" / "b" / "c" / "report"
    write(ev, str(out))
    written = _files_under(tmp_path)
    outside = [
        p
        for p in written
        if not p.resolve().is_relative_to(out.resolve())
        and not p.resolve().is_relative_to((tmp_path / "data").resolve())
    ]
    assert outside == []
    clips = [p for p in written if p.parent == out / "clips"]
    assert len([p for p in clips if p.name.startswith(("real_", "recon_"))]) == 2 * 2 * len(HOSTILE), (
        "a clip overwrote another"
    )
    assert all(len(p.name) < 120 for p in clips)
    page = (out / "index.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x" in page


def test_the_sweep_reports_sample_copy_keeps_every_file_inside_its_folder(
    s3_endpoint, make_bucket, fsdd_dir, untrained, tmp_path
):
    from vae.reports.sweep import _best_samples

    best = make_bucket("hostile-keys") + "/exp/best"
    storage.write_bytes(storage.join(best, checkpoint.CONFIG), Path(untrained, checkpoint.CONFIG).read_bytes())
    wav = (fsdd_dir / "3_theo_4.wav").read_bytes()
    keys = [
        "0_ok.wav",
        "1_" + "y" * 900 + ".wav",
        "2_<script>.wav",
        "3_a b.wav",
        "4_..wav",
        "5_x/../../../../escape.wav",
        "../6_up.wav",
    ]
    _put_raw(s3_endpoint, f"{best}/samples", keys, wav)
    out = tmp_path / "report"
    items = _best_samples(best, str(out))
    written = _files_under(tmp_path)
    assert written and all(p.resolve().is_relative_to((out / "samples").resolve()) for p in written)
    assert sorted(i["digit"] for i in items) == [0, 1, 2, 3, 4]
    assert all("/" not in i["wav"][len("samples/") :] and len(i["wav"]) < 120 for i in items)


def test_reconstruct_writes_only_under_out_whatever_the_input_keys(
    s3_endpoint, make_bucket, fsdd_dir, untrained, tmp_path, capsys
):
    src = make_bucket("hostile-keys") + "/in"
    keys = [
        "ok.wav",
        "sub/deeper/ok.wav",
        "../../../escape.wav",
        "a/../../b.wav",
        "z" * 900 + ".wav",
        "sp ace.wav",
        ".hidden.wav",
    ]
    _put_raw(s3_endpoint, src, keys, (fsdd_dir / "3_theo_4.wav").read_bytes())
    out = tmp_path / "x" / "out"
    assert reconstruct_job.main(["--checkpoint", untrained, "--input", src, "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = _files_under(tmp_path)
    assert written and all(p.resolve().is_relative_to(out.resolve()) for p in written)
    assert {"ok.wav", "sub/deeper/ok.wav"} <= {str(p.relative_to(out)) for p in written}
    assert result["written"] + len(result["skipped"]) == len(keys)


def test_generate_never_follows_a_pointer_out_of_its_folder(untrained, tmp_path, capsys):
    best = tmp_path / "exp" / "best"
    storage.copy_tree(untrained, str(tmp_path / "elsewhere"))
    for version in ("../../elsewhere", "/etc", "../best"):
        storage.write_json(str(best / storage.PUBLISHED_POINTER), {"version": version})
        assert generate_job.main(["--checkpoint", str(best), "--out", str(tmp_path / "gen"), "--n", "1"]) == 1
        assert "does not name a version folder" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert not (tmp_path / "gen").exists()
    storage.publish(untrained, str(best))
    assert generate_job.main(["--checkpoint", str(best), "--out", str(tmp_path / "gen"), "--n", "2", "--no-png"]) == 0
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["sample_0.wav", "sample_1.wav"]
