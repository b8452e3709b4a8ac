"""Download the Free Spoken Digit Dataset (pinned release, verified before it is installed).

    python -m jobs.fetch_data --out DIR [--sha256 HEX]

Leaves the WAV files in DIR/recordings. Offline, it fails within seconds and says
to point FSDD_DIR at a local copy instead. FSDD is licensed CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs._cli import add_out, parser, run
from vae.fetch import DEADLINE_S, FSDD_SHA256, FSDD_URL, TIMEOUT_S, fetch_fsdd


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.fetch_data", __doc__)
    add_out(p, "local folder to put recordings/ in", "--dest", metavar="DIR")
    p.add_argument("--url", default=FSDD_URL, help="the release's archive")
    p.add_argument(
        "--sha256",
        default=FSDD_SHA256,
        help="expected SHA-256 of the archive (default: the pinned one; if none, the recordings are checked "
        "against the pinned content digest)",
    )
    p.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds each network wait may take")
    p.add_argument("--deadline", type=float, default=DEADLINE_S, help="seconds the whole download may take")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run("fetch_data", lambda: _main(args), args.verbose)


def _main(args: argparse.Namespace) -> int:
    recordings = fetch_fsdd(args.out, args.url, args.sha256, args.timeout, deadline_s=args.deadline)
    print(json.dumps({"recordings": recordings, "url": args.url}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
