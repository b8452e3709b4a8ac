"""One writer per run: the lease in the run's folder, on local disk and on a real HTTP S3 endpoint."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from vae import storage
from vae.runlock import LEASE_FILE, RunBusy, RunLock, read_lease


@pytest.fixture(params=["local", "s3"])
def run_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "run")
    bucket = request.getfixturevalue("make_bucket")("leases")
    return f"{bucket}/{request.node.name.replace('[', '-').replace(']', '')}-{time.monotonic_ns()}"


def test_a_second_writer_is_refused_naming_the_holder(run_uri):
    with RunLock(run_uri, settle_s=0.05):
        held = read_lease(run_uri)
        assert held is not None and held.pid == os.getpid() and held.host == socket.gethostname()
        with pytest.raises(
            RunBusy, match=rf"another run is writing here \(pid {os.getpid()} on {socket.gethostname()}"
        ):
            RunLock(run_uri, settle_s=0.05).acquire()
    assert read_lease(run_uri) is None, "released"
    with RunLock(run_uri, settle_s=0.05):  # free again
        pass


def test_a_stale_lease_is_taken_over(run_uri):
    stale = {"owner": "dead", "host": "elsewhere", "pid": 1, "started": 0.0, "heartbeat": time.time() - 600}
    storage.write_json(storage.join(run_uri, LEASE_FILE), stale)
    with RunLock(run_uri, ttl_s=120, settle_s=0.05) as lock:
        assert read_lease(run_uri).owner == lock.owner


def test_the_holder_learns_that_its_lease_was_taken(run_uri):
    lock = RunLock(run_uri, ttl_s=0.4, settle_s=0.05)
    lock.acquire()
    try:
        thief = {"owner": "other", "host": "h", "pid": 2, "started": time.time(), "heartbeat": time.time() + 60}
        # A heartbeat in flight may overwrite one write (S3 has no compare-and-swap here); the other
        # writer keeps renewing, as a real one does.
        for _ in range(25):
            storage.write_json(storage.join(run_uri, LEASE_FILE), thief)
            if lock.lost.wait(0.2):
                break
        assert lock.lost.is_set()
    finally:
        lock.release()
    assert read_lease(run_uri).owner == "other", "release leaves another writer's lease alone"


def test_a_torn_local_lease_does_not_block(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LEASE_FILE).write_text('{"owner": "x", "ho')
    with RunLock(str(run), settle_s=0.05) as lock:
        assert json.loads((run / LEASE_FILE).read_text())["owner"] == lock.owner


def test_a_lease_whose_process_ended_on_this_machine_is_taken_over_at_once(run_uri):
    """A driver killed a moment ago (SIGKILL: no release) does not hold up --resume for the lease's lifetime."""
    import subprocess
    import sys

    from vae.runlock import _machine

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(ended.stdout)
    killed = {"owner": "killed", "host": socket.gethostname(), "pid": pid, "started": time.time(),
              "heartbeat": time.time(), "machine": _machine()}  # fmt: skip
    storage.write_json(storage.join(run_uri, LEASE_FILE), killed)
    with RunLock(run_uri, ttl_s=120, settle_s=0.05) as lock:
        assert read_lease(run_uri).owner == lock.owner
    elsewhere = {**killed, "machine": "another-host/another-boot"}  # its pid means nothing here
    storage.write_json(storage.join(run_uri, LEASE_FILE), elsewhere)
    with pytest.raises(RunBusy):
        RunLock(run_uri, ttl_s=120, settle_s=0.05).acquire()
