"""What every job does on failure: a message naming the culprit on stderr, the same as JSON last on stdout."""

from __future__ import annotations

import json
import sys


def fail(job: str, message: str) -> int:
    """Report ``message`` for ``job`` and return the exit status (1)."""
    print(f"{job}: error: {message}", file=sys.stderr)
    print(json.dumps({"error": message}))
    return 1
