"""Extract spectrograms from FSDD recordings into Parquet with Ray Data.

    python -m jobs.preprocess --input SRC --out DST [--features PRESET]

SRC and DST are local folders or ``s3://bucket/prefix`` (endpoint and credentials
from the standard AWS_* environment variables). The dataset is published at DST
all-or-nothing (see vae.dataset); an interrupted run (Ctrl-C, SIGTERM, a kill)
leaves what DST held before. Bad inputs go to the dataset's _rejected with their
reason. Ends with ``N clips written, M rejected`` and a JSON line (``dataset``: the
published version folder); exit status 0 when at least one clip was written,
130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import asdict

from jobs._cli import add_num_cpus, add_out, fail, parser, positive_int, run
from vae import console
from vae.config import FEATURE_PRESETS, FeatureConfig, preset
from vae.dataset import WORKER_MODULES, extract, list_inputs, max_blocks
from vae.raysetup import finish_ray, init_ray
from vae.storage import StorageError, check_reachable


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.preprocess", __doc__)
    p.add_argument(
        "--input",
        required=True,
        metavar="DIR_OR_S3",
        help="folder or s3:// prefix of {digit}_{speaker}_{take}.wav files",
    )
    add_out(p, "folder or s3:// prefix for the Parquet dataset", "--output")
    p.add_argument("--features", default="default", choices=sorted(FEATURE_PRESETS), help="FeatureConfig preset")
    add_num_cpus(p)
    p.add_argument(
        "--blocks", type=positive_int, default=None, help="pipeline blocks (default: from cluster CPUs and clip count)"
    )
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # `ray job stop` sends SIGTERM: clean up exactly as for Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("preprocess", lambda: _main(args), args.verbose)


def _main(args: argparse.Namespace) -> int:
    summary = None
    try:
        cfg = preset(FeatureConfig, args.features)
        # Input and output are checked before Ray starts, so a wrong path fails in seconds.
        files = list_inputs(args.input)
        try:
            check_reachable(args.out)
        except StorageError as exc:
            raise StorageError(f"output {args.out}: {exc}") from exc
        print(f"{len(files)} .wav files under {args.input}; features {args.features} {cfg.shape}", flush=True)
        import ray

        owns_ray, progress = not ray.is_initialized(), console.ProgressLine()
        try:
            # No dashboard: extraction does not use it (Ray Train's clean-up does, see vae.raysetup), and
            # its processes delay the start of a local instance.
            init_ray(
                args.num_cpus,
                warm=WORKER_MODULES,
                warm_tasks=args.blocks or max_blocks(len(files)),
                include_dashboard=False,
            )
            signal.signal(signal.SIGTERM, _interrupt)  # again: Ray's core worker installs its own on init
            summary = extract(args.input, args.out, cfg, num_blocks=args.blocks, progress=progress, listed=files)
        finally:
            progress.close()
            if owns_ray:
                finish_ray()  # before the summary, which stays the last line
    except KeyboardInterrupt:
        if summary is None:
            fail("preprocess", f"interrupted: nothing published, the dataset at {args.out} (if any) is as it was")
            return 130
        # Interrupted while Ray was stopping, after the dataset was published: the job's work is done.

    for r in summary.rejected_examples:
        print(f"  rejected {r['source']}: {r['reason']}")
    if summary.rejected > len(summary.rejected_examples):
        print(f"  ... all {summary.rejected} in {summary.rejected_output}")
    print(f"{summary.written} clips written, {summary.rejected} rejected")
    result = asdict(summary)
    del result["features"], result["rejected_examples"]
    if summary.written == 0:
        return fail(
            "preprocess",
            f"nothing could be written: all {summary.rejected} inputs under {args.input} were rejected, see "
            f"{summary.rejected_output}; nothing published, the dataset at {args.out} (if any) is as it was",
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
