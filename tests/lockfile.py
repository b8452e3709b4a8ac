"""Reading the lock files (requirements.lock, requirements-gpu.lock): pinned versions and the
environment markers they apply under."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked(lock: Path) -> list[tuple[str, str, Marker | None]]:
    """Every pin of ``lock``: (canonical name, version, marker or None)."""
    out = []
    for line in lock.read_text().splitlines():
        m = PIN.match(line)
        if m:
            out.append((canonicalize_name(m[1]), m[2], Marker(m[3]) if m[3] else None))
    return out


def locked_versions(lock: Path) -> dict[str, str]:
    """Canonical name -> the version pinned for this interpreter and platform."""
    return {name: version for name, version, marker in locked(lock) if marker is None or marker.evaluate()}
