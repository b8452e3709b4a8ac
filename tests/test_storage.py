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
