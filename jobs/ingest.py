"""Split one long recording of spoken digits into FSDD-style clips of your own voice.

    python -m jobs.ingest --input LONG.wav --digits 0123456789 [--repeat 5] --speaker NAME --out DIR
        [--top-db DB] [--min-gap S] [--first-take T]

Say the --digits in order, --repeat times over, with a short pause after each. The
recording (any sample rate, mono or stereo; local or s3://) is cut where it is silent
and the utterances are labelled in order, written to DIR as {digit}_{speaker}_{take}.wav
at the recording's sample rate. If the number of utterances found is not the number of
digits expected, nothing is written and the segments found (start, end, duration) are
printed: re-record, or move the silence threshold with --top-db. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs._cli import add_config_arguments, add_out, fail, job_config, parser, run, show_config_defaults
from vae import storage
from vae.config import IngestConfig

# Shorthand flag -> the IngestConfig key it sets (any key: --set ingest.KEY=VALUE).
SHORTHANDS = {"top_db": "ingest.top_db", "min_gap": "ingest.min_gap_seconds"}


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.ingest", __doc__)
    p.add_argument("--input", required=True, metavar="FILE", help="the long recording (WAV, FLAC, OGG; local or s3://)")
    p.add_argument("--digits", required=True, help="the digits said, in order, e.g. 0123456789")
    p.add_argument("--repeat", type=int, default=1, help="how many times the --digits sequence was said")
    p.add_argument("--speaker", required=True, help="speaker name used in the clip names")
    add_out(p, "output folder (local or s3://)")
    p.add_argument("--top-db", type=float, help="silence: this many dB below the loudest frame")
    p.add_argument("--min-gap", type=float, help="shorter pauses (s) do not split a word")
    p.add_argument("--first-take", type=int, default=0, help="take number of each digit's first clip")
    add_config_arguments(p, "ingest.top_db=35")
    show_config_defaults(p, SHORTHANDS, {"ingest": IngestConfig()})
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _table(segments, labels=None) -> str:
    rows = [f"  {'#':>3} {'start s':>8} {'end s':>8} {'dur s':>6}" + ("  clip" if labels else "")]
    for i, s in enumerate(segments):
        rows.append(f"  {i:3d} {s.start:8.2f} {s.end:8.2f} {s.duration:6.2f}" + (f"  {labels[i]}" if labels else ""))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("ingest", lambda: _main(args), args.verbose)


def _main(args: argparse.Namespace) -> int:
    cfg = job_config(args, IngestConfig, "ingest", SHORTHANDS)  # a bad option fails before librosa loads
    from vae.features import AudioError
    from vae.ingest import CountMismatch, IngestError, split_recording, write_clips

    try:
        if args.first_take < 0:
            raise IngestError(f"--first-take must be >= 0, got {args.first_take}")
        storage.check_reachable(args.out)
        data = storage.read_bytes(args.input)
        utterances, y, rate = split_recording(data, args.digits, args.repeat, args.speaker, cfg, args.first_take)
    except CountMismatch as exc:
        print(f"segments found in {args.input}:\n{_table(exc.segments)}", flush=True)
        return fail("ingest", str(exc))
    except AudioError as exc:
        return fail("ingest", f"{args.input}: {exc.reason}")

    print(f"{len(utterances)} utterances in {args.input} ({len(y) / rate:.1f} s at {rate} Hz):", flush=True)
    print(_table([u.segment for u in utterances], [u.name for u in utterances]), flush=True)
    files = write_clips(utterances, y, rate, args.out)
    print(f"{len(files)} clips written to {args.out}")
    print(
        json.dumps(
            {
                "input": args.input,
                "out": storage.resolve(args.out).uri,
                "speaker": args.speaker,
                "sample_rate": rate,
                "written": len(files),
                "files": files,
                "segments": [
                    {"clip": u.name, "start": round(u.segment.start, 3), "end": round(u.segment.end, 3)}
                    for u in utterances
                ],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
