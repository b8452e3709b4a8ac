"""Download the Free Spoken Digit Dataset release, verify it, unpack its recordings.

FSDD by Zohar Jackson et al., https://github.com/Jakobovski/free-spoken-digit-dataset,
licensed CC BY-SA 4.0: credit the authors and share derived datasets under the same licence.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from vae import console
from vae.errors import UserError

FSDD_VERSION = "v1.0.10"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/{FSDD_VERSION}.tar.gz"
# SHA-256 of the archive at FSDD_URL. Not pinned: this project was written without
# network access. Without it (or --sha256) a fetch verifies the recordings' content
# instead, against FSDD_CONTENT_SHA256, and prints the archive digest to pin here.
FSDD_SHA256: str | None = None
# recordings_digest() of the release's recordings by these speakers, computed from a
# copy of those 2,500 files. The release's sixth speaker (nicolas, 500 clips) is not
# covered: no copy was at hand.
FSDD_CONTENT_SPEAKERS = ("george", "jackson", "lucas", "theo", "yweweler")
FSDD_CONTENT_SHA256 = "4d2c04f63188f0f3972e5f4b501790602257d8283db78ffbbac8edcaac13171b"
LICENSE = "CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)"
TIMEOUT_S, DEADLINE_S = 10.0, 900.0  # seconds each network wait, and the whole download, may take
OFFLINE_HINT = "point FSDD_DIR at a local copy of the recordings folder (e.g. FSDD_DIR=/data/fsdd/recordings)"


class FetchError(UserError, RuntimeError):
    """The dataset could not be downloaded or verified; the message says what to do instead."""


def recordings_digest(folder: str, speakers: tuple[str, ...]) -> tuple[str, int]:
    """(SHA-256 over the sorted lines ``"<name> <sha256 of the file>"``, number of files) for the
    ``{digit}_{speaker}_{take}.wav`` files in ``folder`` by ``speakers``."""
    from vae.dataset import parse_name

    def speaker(name: str) -> str:
        try:
            return parse_name(name).speaker
        except ValueError:
            return ""

    names = sorted(n for n in os.listdir(folder) if speaker(n) in speakers)
    h = hashlib.sha256()
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            h.update(f"{name} {hashlib.sha256(f.read()).hexdigest()}\n".encode())
    return h.hexdigest(), len(names)


def fetch_fsdd(
    dest: str,
    url: str = FSDD_URL,
    sha256: str | None = FSDD_SHA256,
    timeout_s: float = TIMEOUT_S,
    progress: Callable[[str], None] | None = print,
    deadline_s: float = DEADLINE_S,
    content_sha256: str = FSDD_CONTENT_SHA256,
    content_speakers: tuple[str, ...] = FSDD_CONTENT_SPEAKERS,
) -> str:
    """Ensure ``dest/recordings`` holds the release's WAV files; returns that folder.

    Does nothing when a previous fetch of the same archive completed. With ``sha256``
    the archive is verified before anything is unpacked; without, the unpacked
    recordings of ``content_speakers`` must match ``content_sha256``. Either way the
    folder appears complete and verified, or not at all. ``timeout_s`` bounds each network
    wait, ``deadline_s`` the whole download.
    """
    recordings = os.path.join(dest, "recordings")
    marker = os.path.join(dest, ".fsdd-archive-sha256")
    if os.path.isfile(marker) and os.path.isdir(recordings):
        with open(marker) as f:
            if sha256 is None or f.read().strip() == sha256:
                return recordings
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as tmp:
        archive = os.path.join(tmp, "fsdd.tar.gz")
        digest = _download(url, archive, timeout_s, progress, deadline_s)
        if sha256 is not None and digest != sha256.lower():
            raise FetchError(
                f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest}; nothing was unpacked"
            )
        n = _unpack_recordings(archive, os.path.join(tmp, "recordings"))
        if n == 0:
            raise FetchError(f"{url} has no recordings/*.wav")
        if sha256 is None:
            got, covered = recordings_digest(os.path.join(tmp, "recordings"), content_speakers)
            if got != content_sha256:
                raise FetchError(
                    f"{url}: the {covered} recordings by {', '.join(content_speakers)} do not match the pinned content "
                    f"digest (expected {content_sha256}, got {got}); nothing was installed. If you trust this download, "
                    f"pass --sha256 {digest}. Or {OFFLINE_HINT}."
                )
            if progress:
                progress(
                    f"verified {covered} of {n} recordings against the pinned content digest "
                    f"({n - covered} by other speakers are not covered); archive sha256 {digest}, not pinned"
                )
        if os.path.isdir(recordings):
            shutil.rmtree(recordings)
        os.replace(os.path.join(tmp, "recordings"), recordings)
    with open(marker, "w") as f:
        f.write(digest + "\n")
    if progress:
        progress(f"{n} recordings in {recordings} (FSDD {FSDD_VERSION}, {LICENSE})")
    return recordings


def _download(url: str, path: str, timeout_s: float, progress: Callable[[str], None] | None, deadline_s: float) -> str:
    """Stream ``url`` to ``path`` within ``deadline_s``; returns the SHA-256 hex digest."""
    h = hashlib.sha256()
    ends = time.monotonic() + deadline_s
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(path, "wb") as out:
            total, done, step = int(resp.headers.get("Content-Length") or 0), 0, 4 << 20
            next_report, every = step, console.Every()
            # read1: what has arrived, so a server that sends a byte at a time still meets the deadline.
            while chunk := resp.read1(1 << 16):
                if time.monotonic() > ends:
                    raise FetchError(
                        f"cannot download {url}: not finished after {deadline_s:g} s ({done} bytes so far); "
                        f"a slower link needs --deadline. {OFFLINE_HINT}"
                    )
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if progress and done >= next_report:
                    next_report += step
                    if every.due():
                        progress(f"downloaded {done >> 20} MiB" + (f" of {total >> 20} MiB" if total else ""))
    except (urllib.error.URLError, OSError) as exc:  # includes timeouts and refused connections
        reason = getattr(exc, "reason", None) or exc
        raise FetchError(f"cannot download {url}: {reason}. Offline? {OFFLINE_HINT}") from exc
    return h.hexdigest()


def _unpack_recordings(archive: str, dest: str) -> int:
    """Extract only ``*/recordings/*.wav`` members, flat, into ``dest``; returns how many."""
    os.makedirs(dest)
    n = 0
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.isfile() and len(parts) >= 2 and parts[-2] == "recordings" and parts[-1].endswith(".wav"):
                    member.name = parts[-1]
                    tar.extract(member, dest, filter="data")
                    n += 1
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"cannot unpack {archive}: {exc}") from exc
    return n
