"""The files of a dataset folder or version: Parquet part files named by their extraction run, the
``_summary.json`` and the ``_rejected/`` folder (shared by :mod:`vae.dataset` and :mod:`vae.compat`)."""

from __future__ import annotations

import posixpath
import re

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vae import storage

REJECTED_DIR = "_rejected"
SUMMARY_FILE = "_summary.json"
_PART = re.compile(r"part-([0-9a-f]+)-[^/]*\.parquet$")


def part_run(name: str) -> str:
    """The extraction run id in the name of the part file ``name``."""
    match = _PART.search(name)
    if match is None:
        raise ValueError(f"{name!r} is not the name of a part file")
    return match.group(1)


def part_files(loc: storage.Location) -> list[str]:
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    except OSError as exc:
        raise storage.StorageError(f"cannot list {loc.uri}: {exc}") from exc
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and _PART.search(i.base_name))


def part_rows(loc: storage.Location, files: list[str]) -> dict[str, int]:
    """Rows of each part file, from its Parquet footer, by file name."""
    try:
        return {posixpath.basename(f): pq.read_metadata(f, filesystem=loc.fs).num_rows for f in files}
    except OSError as exc:
        raise storage.StorageError(f"cannot read the Parquet footers under {loc.uri}: {exc}") from exc
