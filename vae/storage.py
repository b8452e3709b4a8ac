"""One way to read, write, list and publish paths that are local or ``s3://``.

S3 endpoint and credentials come from the standard AWS environment variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``), so the same code talks to AWS, MinIO or a test server.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from vae.errors import UserError


class StorageError(UserError, OSError):
    """A storage path cannot be reached, read or written; the message names the path."""


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def ray_uri(path: str, filesystem: pafs.FileSystem | None = None) -> str:
    """A path as Ray Train and Tune report it (a checkpoint's, a trial's) as a URI of this module.
    Ray drops the scheme, so an S3 path starts with its bucket: the ``filesystem`` Ray gives with
    it decides; without one, an absolute path is local and any other an S3 key."""
    if is_s3(path):
        return path
    if filesystem is not None:
        on_s3 = isinstance(filesystem, pafs.S3FileSystem) or "S3" in type(filesystem).__name__
    else:
        on_s3 = not os.path.isabs(path)
    return "s3://" + path.lstrip("/") if on_s3 else path


def s3_filesystem() -> pafs.S3FileSystem:
    """An S3 filesystem configured from the standard AWS environment variables (endpoint, region).

    Credentials are left to the AWS SDK's default chain (``AWS_*`` variables, profile, instance
    role) in each process that uses it: Ray pickles the filesystem it is handed into the
    experiment's files in the bucket, and explicit keys would be pickled with it."""
    kwargs: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    # Fail in seconds, not minutes, when the endpoint is down.
    kwargs.update(connect_timeout=5, request_timeout=30, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3))
    return pafs.S3FileSystem(**kwargs)


@dataclass(frozen=True)
class Location:
    """A resolved path: the filesystem and the path inside it, plus the URI it came from."""

    fs: pafs.FileSystem
    path: str
    uri: str

    def join(self, *parts: str) -> Location:
        sep_join = posixpath.join if is_s3(self.uri) else os.path.join
        return Location(self.fs, sep_join(self.path, *parts), sep_join(self.uri, *parts))


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def resolve(uri: str | os.PathLike) -> Location:
    """Map ``s3://bucket/key`` or a local path to a :class:`Location`.

    Raises :class:`StorageError` naming ``uri`` when it cannot be a path: another
    scheme, an S3 URI without a valid bucket name, empty or ``.``/``..`` key
    segments (``s3:///x``, ``s3://b//k``), or a NUL character.
    """
    uri = os.fspath(uri)
    if "\0" in uri:
        raise StorageError(f"{uri!r}: a path cannot contain a NUL character")
    if is_s3(uri):
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise StorageError(
                f"{uri!r}: an s3:// path needs a bucket name (3-63 lowercase letters, digits, dots, hyphens)"
            )
        key = key.rstrip("/")
        if key and any(part in ("", ".", "..") for part in key.split("/")):
            raise StorageError(f"{uri!r}: malformed s3:// path (empty, '.' or '..' segment in the key)")
        path = f"{bucket}/{key}" if key else bucket
        return Location(s3_filesystem(), path, "s3://" + path)
    if ("://" in uri and not uri.startswith("file://")) or uri.lower().startswith("s3:"):
        raise StorageError(f"{uri!r}: only local paths and s3://bucket/key are supported")
    path = os.path.abspath(uri[len("file://") :] if uri.startswith("file://") else uri)
    return Location(pafs.LocalFileSystem(), path, path)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, max_len: int = 100) -> str:
    """A file name made from data (an id, a speaker, a storage key) that stays inside the folder it is joined to.

    Letters, digits, ``.``, ``_`` and ``-`` are kept, every other run of characters
    (``/``, ``\\``, NUL, spaces, ...) becomes ``_``, and leading dots go (never ``..``
    or hidden). A name that had to change or is longer than ``max_len`` ends in 8 hex
    digits of the original's SHA-1, so different inputs keep different names.
    """
    text = str(text)
    name = _UNSAFE.sub("_", text).lstrip(".")
    if name == text and 0 < len(name) <= max_len:
        return name
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{name[: max_len - 9]}-{digest}" if name else digest


def safe_relpath(rel: str, max_len: int = 100) -> str:
    """A relative path from data (``a/b.wav``) with every segment through :func:`safe_name`: it cannot climb out."""
    parts = [safe_name(p, max_len) for p in str(rel).replace("\\", "/").split("/") if p]
    return "/".join(parts) or safe_name(rel, max_len)


def join(uri: str, *parts: str) -> str:
    return resolve(uri).join(*parts).uri


def _info(loc: Location) -> pafs.FileInfo:
    try:
        return loc.fs.get_file_info(loc.path)
    except OSError as exc:
        raise StorageError(f"cannot reach {loc.uri}: {exc}") from exc


def exists(uri: str) -> bool:
    return _info(resolve(uri)).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    return _info(resolve(uri)).type == pafs.FileType.Directory


def makedirs(uri: str) -> None:
    loc = resolve(uri)
    try:
        loc.fs.create_dir(loc.path, recursive=True)
    except OSError as exc:
        raise StorageError(f"cannot create {loc.uri}: {exc}") from exc


def list_files(uri: str, suffix: str = "", recursive: bool = True) -> list[str]:
    """Sorted URIs of the files under ``uri`` whose names end with ``suffix`` (case-insensitive)."""
    loc = resolve(uri)
    info = _info(loc)
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{loc.uri} does not exist")
    if info.type == pafs.FileType.File:
        return [loc.uri]
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=recursive))
    except OSError as exc:
        raise StorageError(f"cannot list {loc.uri}: {exc}") from exc
    out = []
    for i in infos:
        if i.type == pafs.FileType.File and i.base_name.lower().endswith(suffix.lower()):
            rel = i.path[len(loc.path) :].lstrip("/")
            out.append(loc.join(rel).uri)
    return sorted(out)


def read_bytes(uri: str) -> bytes:
    loc = resolve(uri)
    try:
        with loc.fs.open_input_stream(loc.path) as f:
            return f.read()
    except FileNotFoundError as exc:
        raise StorageError(f"{loc.uri} does not exist") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {loc.uri}: {exc}") from exc


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file. On S3 one PUT is atomic; locally we write a temp file and rename."""
    loc = resolve(uri)
    try:
        if is_s3(loc.uri):
            with loc.fs.open_output_stream(loc.path) as f:
                f.write(data)
            return
        os.makedirs(os.path.dirname(loc.path), exist_ok=True)
        tmp = f"{loc.path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, loc.path)
    except OSError as exc:
        raise StorageError(f"cannot write {loc.uri}: {exc}") from exc


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_json(uri: str) -> Any:
    try:
        return json.loads(read_text(uri))
    except json.JSONDecodeError as exc:
        raise StorageError(f"{uri} is not valid JSON: {exc}") from exc


def write_json(uri: str, obj: Any) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def copy_tree(src: str, dst: str) -> None:
    """Copy a file or directory tree between any two locations (local <-> s3 included)."""
    s, d = resolve(src), resolve(dst)
    if _info(s).type == pafs.FileType.NotFound:
        raise StorageError(f"{s.uri} does not exist")
    try:
        if _info(s).type == pafs.FileType.File:
            d.fs.create_dir(posixpath.dirname(d.path) if is_s3(d.uri) else os.path.dirname(d.path), recursive=True)
            pafs.copy_files(s.path, d.path, source_filesystem=s.fs, destination_filesystem=d.fs)
        else:
            d.fs.create_dir(d.path, recursive=True)
            pafs.copy_files(s.path, d.path, source_filesystem=s.fs, destination_filesystem=d.fs)
    except OSError as exc:
        raise StorageError(f"cannot copy {s.uri} to {d.uri}: {exc}") from exc


def delete_tree(uri: str) -> None:
    loc = resolve(uri)
    info = _info(loc)
    try:
        if info.type == pafs.FileType.Directory:
            loc.fs.delete_dir(loc.path)
        elif info.type == pafs.FileType.File:
            loc.fs.delete_file(loc.path)
    except OSError as exc:
        raise StorageError(f"cannot delete {loc.uri}: {exc}") from exc


def walk_files(uri: str) -> Iterator[tuple[str, str]]:
    """(relative path, absolute URI) of every file under a directory."""
    base = resolve(uri)
    for f in list_files(uri):
        yield f[len(base.uri) :].lstrip("/"), f


def check_reachable(uri: str) -> None:
    """Raise :class:`StorageError` naming ``uri`` if its storage cannot be reached.

    For S3 this lists the bucket, so a wrong endpoint or missing bucket fails
    before any work starts rather than after it.
    """
    loc = resolve(uri)
    if is_s3(loc.uri):
        bucket = loc.path.split("/", 1)[0]
        info = _info(Location(loc.fs, bucket, "s3://" + bucket))
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"bucket s3://{bucket} does not exist (for {loc.uri})")


PUBLISHED_POINTER = "PUBLISHED.json"
# v<UTC date>-<time>-<microseconds>-<random>; names sort by start time. "_" hides a version from
# pyarrow/pandas dataset discovery; names without the microseconds are versions too.
_VERSION = re.compile(r"_?v\d{8}-\d{6}(-\d{6})?-[0-9a-f]{8}")


def new_version(hidden: bool = False) -> str:
    """A fresh version name; later calls sort after earlier ones (by their UTC start time)."""
    now = time.time()
    stamp = time.strftime("v%Y%m%d-%H%M%S", time.gmtime(now)) + f"-{int(now % 1 * 1e6):06d}"
    return ("_" if hidden else "") + f"{stamp}-{uuid.uuid4().hex[:8]}"


def publish(src_dir: str, dst: str) -> str:
    """Publish a finished directory at ``dst`` all-or-nothing, for local paths and S3 alike.

    The files go to a fresh ``dst/<version>/`` first; only then does :func:`switch`
    point ``dst`` at it. Returns the URI of the published version.
    """
    version = new_version()
    copy_tree(src_dir, join(dst, version))
    switch(dst, version)
    return join(dst, version)


def switch(dst: str, version: str) -> None:
    """Make the finished ``dst/<version>`` the published one, then remove the versions it supersedes.

    The one-object pointer ``dst/PUBLISHED.json`` is the switch (a single PUT or
    rename is atomic), so a reader that goes through :func:`published` sees the
    previous complete version or the new complete one, never a mix. The previous
    version stays for readers still on it; other versions that started before
    this one (superseded, or abandoned by an interrupted writer) are removed.
    Versions that started later belong to writers still at work and are left alone.
    """
    try:
        previous = _pointer(dst)
    except StorageError:
        previous = None  # a damaged pointer is replaced, not trusted
    write_json(join(dst, PUBLISHED_POINTER), {"version": version, "previous": previous, "published_at": time.time()})
    try:
        for old in list_versions(dst):
            if old not in (version, previous) and old.lstrip("_") < version.lstrip("_"):
                delete_tree(join(dst, old))
    except StorageError:
        pass  # published already; what is left is removed by the next switch


def list_versions(dst: str) -> list[str]:
    """Names of the version folders under ``dst`` (published, previous, in progress or abandoned)."""
    loc = resolve(dst)
    if _info(loc).type != pafs.FileType.Directory:
        return []
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=False))
    except OSError as exc:
        raise StorageError(f"cannot list {loc.uri}: {exc}") from exc
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and _VERSION.fullmatch(i.base_name))


def _pointer(dst: str) -> str | None:
    """The version ``dst/PUBLISHED.json`` names, checked to be a version folder of ``dst`` itself."""
    pointer = join(dst, PUBLISHED_POINTER)
    if not exists(pointer):
        return None
    doc = read_json(pointer)
    version = doc.get("version") if isinstance(doc, dict) else None
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise StorageError(f"{pointer} does not name a version folder of {resolve(dst).uri}: {version!r}")
    return version


def is_published(uri: str) -> bool:
    """Whether ``uri`` names a published version (an interrupted publish leaves a version folder
    and no pointer)."""
    try:
        return _pointer(uri) is not None
    except StorageError:
        return False


def published(uri: str) -> str:
    """The directory to read for ``uri``: its published version if it was published, else ``uri`` itself."""
    version = _pointer(uri)
    return join(uri, version) if version else uri
