"""One writer per run: a lease file in the run's folder (local or ``s3://``).

A training run or a sweep holds ``<run>/.lease.json`` (owner, host, pid, start, heartbeat) while it
writes there. A second writer is refused with a message naming the holder; a lease whose holder is
gone is taken over: at once when it ran on this machine (its process no longer exists), else once its
heartbeat is older than the lease's time-to-live. Locally the lease is created
exclusively (``O_EXCL``); S3 has no such primitive here, so a writer writes its lease, waits, and
reads it back, and the heartbeat thread stops renewing, and says so, if another writer took it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from vae import storage
from vae.errors import UserError

LEASE_FILE = ".lease.json"
log = logging.getLogger(__name__)


class RunBusy(UserError, RuntimeError):
    """Another live process writes to this run."""


@dataclass(frozen=True)
class Lease:
    owner: str
    host: str
    pid: int
    started: float
    heartbeat: float
    machine: str = ""  # this boot of this machine: where it matches, ``pid`` can be looked up


def _machine() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"{socket.gethostname()}/{f.read().strip()}"
    except OSError:
        return ""


def _gone(lease: Lease) -> bool:
    """Whether the holder ran on this machine, since its last boot, and its process has ended."""
    if not lease.machine or lease.machine != _machine():
        return False
    try:
        os.kill(lease.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _now() -> float:
    return time.time()


def read_lease(run_uri: str) -> Lease | None:
    """The lease of ``run_uri``, or None if there is none (or it is unreadable: a torn local write)."""
    uri = storage.join(run_uri, LEASE_FILE)
    try:
        data = storage.read_json(uri)
        return Lease(**{k: data[k] for k in Lease.__dataclass_fields__ if k in data})
    except (storage.StorageError, KeyError, TypeError):
        return None


def describe(lease: Lease, now: float) -> str:
    return (
        f"pid {lease.pid} on {lease.host}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(lease.started))}, "
        f"last heartbeat {now - lease.heartbeat:.0f} s ago"
    )


class RunLock:
    """``with RunLock(run_uri, what="run"):`` holds the run's lease, renewed every ``ttl_s / 4``
    seconds; raises :class:`RunBusy` on entry while another writer's lease is fresh."""

    def __init__(self, run_uri: str, what: str = "run", ttl_s: float = 120.0, settle_s: float = 0.5):
        self.run_uri, self.what, self.ttl_s, self.settle_s = run_uri, what, ttl_s, settle_s
        self.uri = storage.join(run_uri, LEASE_FILE)
        self.owner = uuid.uuid4().hex
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = _now()

    def _lease(self) -> Lease:
        return Lease(self.owner, socket.gethostname(), os.getpid(), self._started, _now(), _machine())

    def _refuse_if_held(self) -> None:
        held, now = read_lease(self.run_uri), _now()
        if held is None or held.owner == self.owner:
            return
        if now - held.heartbeat < self.ttl_s and not _gone(held):
            raise RunBusy(
                f"{self.run_uri}: another {self.what} is writing here ({describe(held, now)}); wait for it to "
                f"end, or use another name. A writer that was killed is taken over {self.ttl_s:.0f} s after "
                "its last heartbeat"
            )
        log.warning(f"{self.run_uri}: taking over the lease of a writer that stopped ({describe(held, now)})")

    def acquire(self) -> None:
        self._refuse_if_held()
        text = json.dumps(asdict(self._lease()))
        if storage.is_s3(self.run_uri) or os.path.exists(self.uri):
            storage.write_text(self.uri, text)
        else:
            self._create_local(text)
        time.sleep(self.settle_s)  # another writer that wrote at the same moment shows here
        self._refuse_if_held()
        self._thread = threading.Thread(target=self._beat, name="run-lease", daemon=True)
        self._thread.start()

    def _create_local(self, text: str) -> None:
        os.makedirs(os.path.dirname(self.uri), exist_ok=True)
        try:
            fd = os.open(self.uri, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # created between the check and here: whoever did holds it
            self._refuse_if_held()
            storage.write_text(self.uri, text)
            return
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            held = read_lease(self.run_uri)
            if held is not None and held.owner != self.owner:
                self.lost.set()
                log.error(f"{self.run_uri}: another writer took this {self.what}'s lease ({describe(held, _now())})")
                return
            try:
                storage.write_text(self.uri, json.dumps(asdict(self._lease())))
            except storage.StorageError as exc:  # storage down for a while: the next beat tries again
                log.warning(f"{self.run_uri}: lease heartbeat failed: {exc}")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        held = read_lease(self.run_uri)
        if held is not None and held.owner == self.owner:
            try:
                storage.delete_tree(self.uri)
            except storage.StorageError as exc:
                log.warning(f"{self.run_uri}: could not remove the lease (it expires by itself): {exc}")
        if not storage.is_s3(self.run_uri):
            try:
                os.rmdir(self.run_uri)  # a run that wrote nothing leaves its name free
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
