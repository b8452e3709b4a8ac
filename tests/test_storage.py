import os

import pytest

from vae import storage


def test_local_write_read_list_copy(tmp_path):
    root = str(tmp_path / "a")
    storage.write_json(storage.join(root, "x", "m.json"), {"k": 1})
    storage.write_bytes(storage.join(root, "y.bin"), b"abc")
    assert storage.read_json(storage.join(root, "x", "m.json")) == {"k": 1}
    assert [os.path.basename(p) for p in storage.list_files(root)] == ["m.json", "y.bin"]
    storage.copy_tree(root, str(tmp_path / "b"))
    assert storage.read_bytes(str(tmp_path / "b" / "y.bin")) == b"abc"


def test_missing_paths_raise_storage_error_naming_the_path(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(storage.StorageError, match="nope"):
        storage.read_bytes(missing)
    with pytest.raises(storage.StorageError, match="nope"):
        storage.list_files(missing)
    with pytest.raises(storage.StorageError, match="only local paths and s3://"):
        storage.resolve("gs://bucket/x")


def test_publish_is_versioned_and_keeps_one_previous_version(tmp_path):
    src, dst = tmp_path / "src", str(tmp_path / "best")
    src.mkdir()
    seen = []
    for i in range(3):
        (src / "weights.txt").write_text(str(i))
        storage.publish(str(src), dst)
        seen.append(storage.read_text(storage.join(storage.published(dst), "weights.txt")))
    assert seen == ["0", "1", "2"]
    assert len(storage.list_versions(dst)) == 2
    assert storage.published(str(src)) == str(src)


MALFORMED = [
    "s3:///x",
    "s3://",
    "s3://b",
    "s3://Bad_Bucket/x",
    "s3://bucket//k",
    "s3://bucket/a/../b",
    "s3:/x",
    "dir\0name",
    "gs://bucket/x",
]


@pytest.mark.parametrize("uri", MALFORMED)
def test_malformed_uris_are_one_storage_error_naming_them(uri):
    with pytest.raises(storage.StorageError) as info:
        storage.resolve(uri)
    assert repr(uri) in str(info.value) and "\n" not in str(info.value)


def test_malformed_uris_give_every_job_the_one_line_error_of_other_bad_paths(tmp_path, capsys):
    import json

    from jobs import evaluate, generate, preprocess, reconstruct, report, train

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "1_theo_1.wav").write_bytes(b"RIFF")
    for uri in MALFORMED[:3] + MALFORMED[4:8]:
        for main, args in (
            (preprocess.main, ["--input", uri, "--out", str(tmp_path / "o")]),
            (preprocess.main, ["--input", str(tmp_path / "src"), "--out", uri]),
            (train.main, ["--data", str(tmp_path), "--out", uri, "--name", "r"]),
            (generate.main, ["--checkpoint", uri, "--out", str(tmp_path / "o")]),
            (generate.main, ["--checkpoint", str(tmp_path), "--out", uri]),
            (reconstruct.main, ["--checkpoint", str(tmp_path), "--input", uri, "--out", str(tmp_path / "o")]),
            (evaluate.main, ["--checkpoint", str(tmp_path), "--data", str(tmp_path), "--out", uri]),
            (report.main, ["--experiment", uri]),
        ):
            assert main(args) == 1, (main.__module__, args)
            out, err = capsys.readouterr()
            assert repr(uri) in json.loads(out.strip().splitlines()[-1])["error"], (main.__module__, uri, out)
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_a_pointer_naming_anything_but_its_own_version_folder_is_refused(tmp_path):
    dst = str(tmp_path / "best")
    for version in ("../../elsewhere", "/etc", "v1/../../x", 7):
        storage.write_json(storage.join(dst, storage.PUBLISHED_POINTER), {"version": version})
        with pytest.raises(storage.StorageError, match="does not name a version folder"):
            storage.published(dst)


def test_safe_names_stay_inside_their_folder(tmp_path):
    hostile = [
        "../../../../elsewhere/PWNED_1",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "nul\0byte",
        "..",
        ".",
        "",
        ".hidden",
        "x" * 5000,
        "<script>alert(1)</script>",
        "spaces and\nnewlines",
    ]
    names = [storage.safe_name(h) for h in hostile]
    assert len(set(names)) == len(hostile), "different inputs must keep different names"
    for name in names:
        assert (
            name
            and len(name) <= 100
            and not name.startswith(".")
            and "/" not in name
            and "\\" not in name
            and "\0" not in name
        )
        path = tmp_path / name
        path.write_text("x")  # a legal file name on its own
        assert path.resolve().parent == tmp_path.resolve()
    assert (
        storage.safe_name("0_george_5") == "0_george_5"
        and storage.safe_name("real_0_anna-b_3.png") == "real_0_anna-b_3.png"
    )
    for rel in ("../../x.wav", "/abs/x.wav", "a/../../b.wav", "sub//x.wav"):
        assert (tmp_path / storage.safe_relpath(rel)).resolve().is_relative_to(tmp_path.resolve())
    assert storage.safe_relpath("sub/3_theo_4.wav") == "sub/3_theo_4.wav"


def test_ray_paths_become_uris_of_the_storage_they_live_on():
    import pyarrow.fs as pafs

    s3 = pafs.S3FileSystem(region="us-east-1", endpoint_override="http://127.0.0.1:1", scheme="http")
    assert storage.ray_uri("bucket/exp/checkpoint_0001", s3) == "s3://bucket/exp/checkpoint_0001"
    assert storage.ray_uri("/bucket/exp/checkpoint_0001", s3) == "s3://bucket/exp/checkpoint_0001"
    assert storage.ray_uri("/runs/exp/checkpoint_0001", pafs.LocalFileSystem()) == "/runs/exp/checkpoint_0001"
    # Tune's result rows carry the path alone.
    assert storage.ray_uri("bucket/exp/checkpoint_0001") == "s3://bucket/exp/checkpoint_0001"
    assert storage.ray_uri("/runs/exp/checkpoint_0001") == "/runs/exp/checkpoint_0001"
    assert storage.ray_uri("s3://bucket/k") == "s3://bucket/k"


def test_the_s3_filesystem_pickles_without_credentials(monkeypatch):
    """Ray pickles the filesystem it is handed into the experiment's files; keys must not travel."""
    import pickle

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPICKLETESTKEY001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "pickle-test-secret-Qx7")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "pickle-test-session-Rt5")
    data = pickle.dumps(storage.s3_filesystem())
    assert not [
        s for s in (b"AKIAPICKLETESTKEY001", b"pickle-test-secret-Qx7", b"pickle-test-session-Rt5") if s in data
    ]
