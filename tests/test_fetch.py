"""Fetching the dataset: checksum verification and the offline path, without network (file:// and a closed port)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from vae.fetch import FetchError, fetch_fsdd

REPO = Path(__file__).resolve().parents[1]
STEMS = ("0_george_0", "4_lucas_17", "9_theo_49")


@pytest.fixture
def archive(tmp_path, fsdd_dir):
    """A tarball laid out like the GitHub release: <repo>-<version>/recordings/*.wav plus other files."""
    path = tmp_path / "fsdd.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for stem in STEMS:
            tar.add(fsdd_dir / f"{stem}.wav", f"free-spoken-digit-dataset-1.0.10/recordings/{stem}.wav")
        info = tarfile.TarInfo("free-spoken-digit-dataset-1.0.10/README.md")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"readme"))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_verified_archive_is_unpacked_once(archive, tmp_path, fsdd_dir):
    path, digest = archive
    dest = tmp_path / "data"
    recordings = fetch_fsdd(str(dest), url=path.as_uri(), sha256=digest, progress=None)
    assert sorted(p.name for p in (dest / "recordings").iterdir()) == [f"{s}.wav" for s in STEMS]
    assert (dest / "recordings" / "4_lucas_17.wav").read_bytes() == (fsdd_dir / "4_lucas_17.wav").read_bytes()
    # Already there: no download at all (this URL would fail).
    assert fetch_fsdd(str(dest), url="http://127.0.0.1:9/none.tar.gz", sha256=digest, progress=None) == recordings


def test_checksum_mismatch_unpacks_nothing(archive, tmp_path):
    path, digest = archive
    dest = tmp_path / "data"
    with pytest.raises(FetchError, match="checksum mismatch") as info:
        fetch_fsdd(str(dest), url=path.as_uri(), sha256="0" * 64, progress=None)
    assert digest in str(info.value)
    assert not (dest / "recordings").exists()


def test_unpinned_archive_with_other_content_is_refused_and_its_digest_printed(archive, tmp_path):
    path, digest = archive
    with pytest.raises(FetchError, match=f"do not match the pinned content digest.*--sha256 {digest}"):
        fetch_fsdd(str(tmp_path / "data"), url=path.as_uri(), sha256=None, progress=None)
    assert not (tmp_path / "data" / "recordings").exists()


def _release_like(path: Path, fsdd_dir: Path, tamper: str | None = None) -> None:
    """All shared recordings plus another speaker's clip, laid out like the release; ``tamper``'s bytes changed."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for wav in sorted(fsdd_dir.glob("*.wav")):
            data = wav.read_bytes()
            if wav.name == tamper:
                data = data[:-2] + bytes([data[-2] ^ 1, data[-1]])
            info = tarfile.TarInfo(f"free-spoken-digit-dataset-1.0.10/recordings/{wav.name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(fsdd_dir / "3_theo_7.wav", "free-spoken-digit-dataset-1.0.10/recordings/3_nicolas_7.wav")


def test_unpinned_archive_is_accepted_when_the_known_recordings_match(tmp_path, fsdd_dir):
    """The pinned content digest is that of the shared copy: a release holding it verifies without --sha256."""
    path = tmp_path / "release.tar.gz"
    _release_like(path, fsdd_dir)
    said = []
    recordings = Path(fetch_fsdd(str(tmp_path / "data"), url=path.as_uri(), sha256=None, progress=said.append))
    assert len(list(recordings.glob("*.wav"))) == 2501
    assert any("verified 2500 of 2501 recordings" in s and "1 by other speakers are not covered" in s for s in said)


def test_unpinned_archive_with_one_changed_recording_is_refused(tmp_path, fsdd_dir):
    path = tmp_path / "release.tar.gz"
    _release_like(path, fsdd_dir, tamper="5_lucas_20.wav")
    with pytest.raises(FetchError, match="2500 recordings by george, jackson, lucas, theo, yweweler do not match"):
        fetch_fsdd(str(tmp_path / "data"), url=path.as_uri(), sha256=None, progress=None)
    assert not (tmp_path / "data" / "recordings").exists()


def test_offline_fails_fast_with_fsdd_dir_hint(tmp_path, free_port):
    url = f"http://127.0.0.1:{free_port()}/v1.0.10.tar.gz"
    res = subprocess.run(
        [sys.executable, "-m", "jobs.fetch_data", "--out", str(tmp_path / "data"), "--url", url, "--timeout", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert url in res.stderr and "FSDD_DIR" in res.stderr
    assert "FSDD_DIR" in json.loads(res.stdout.strip().splitlines()[-1])["error"]
    assert not (tmp_path / "data" / "recordings").exists()


def test_a_server_that_drips_bytes_meets_the_overall_deadline(tmp_path):
    """Each read answers within the network timeout, so only the deadline on the whole download ends it."""
    import http.server
    import threading
    import time

    class Drip(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            try:
                for _ in range(200):  # bounded: the server stops by itself
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/fsdd.tar.gz"
    try:
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"not finished after 1 s \(\d+ bytes so far\).*--deadline"):
            fetch_fsdd(str(tmp_path / "data"), url=url, sha256="0" * 64, timeout_s=5, deadline_s=1, progress=None)
        assert time.monotonic() - started < 4
    finally:
        server.shutdown()
    assert not (tmp_path / "data" / "recordings").exists()
