"""Generate spoken digits from a trained VAE checkpoint.

    python -m jobs.generate --checkpoint CKPT --out DIR --n N [--digit D] [--seed S]

Without --digit: N draws from the prior, written as sample_<i>.wav. With it: N
draws from that digit's region of latent space, written as <digit>_<i>.wav.
Each WAV (at the feature config's sample rate, phase by Griffin-Lim) comes with
a PNG of its spectrogram. CKPT and DIR may be local or s3://. The last stdout
line is JSON listing the files.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs._cli import add_out, digit, fail, parser, positive_int, run
from vae import console, storage


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.generate", __doc__)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint folder (local or s3://)")
    add_out(p, "output folder (local or s3://)")
    p.add_argument("--n", type=positive_int, default=10, help="clips to generate")
    p.add_argument("--digit", type=digit, help="generate this digit (default: draws from the prior)")
    p.add_argument("--seed", type=int, default=0, help="sampling and Griffin-Lim seed")
    p.add_argument("--no-png", action="store_true", help="skip the spectrogram PNGs")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("generate", lambda: _main(args), args.verbose)


def _main(args: argparse.Namespace) -> int:
    from vae.checkpoint import check, load

    storage.check_reachable(args.out)
    check(args.checkpoint)  # before TensorFlow loads: a wrong folder fails in seconds
    from vae import generation
    from vae.features import wav_bytes

    loaded = load(args.checkpoint)
    specs = generation.sample(loaded, args.n, digit=args.digit, seed=args.seed)
    cfg = loaded.run_config.features
    what = f"digit {args.digit}" if args.digit is not None else "the prior"
    print(
        f"{args.n} clips from {what} of {loaded.uri} (epoch {loaded.epoch}, prior {loaded.run_config.prior.kind})",
        flush=True,
    )

    files: list[str] = []
    problems: list[dict[str, str]] = []
    progress = console.ProgressLine()
    waves = generation.to_waveforms(loaded, specs, digit=args.digit, seed=args.seed)
    for i, (spec, y) in enumerate(zip(specs, waves)):
        stem = storage.safe_name(f"{args.digit}_{i}" if args.digit is not None else f"sample_{i}")
        wav = storage.join(args.out, stem + ".wav")
        try:
            storage.write_bytes(wav, wav_bytes(y, cfg))
            if not args.no_png:
                storage.write_bytes(storage.join(args.out, stem + ".png"), generation.spectrogram_png(spec, stem))
        except storage.StorageError as exc:
            return fail("generate", f"{exc} ({len(files)} files written before it)")
        files.append(wav)
        problem = generation.check_audio(y, cfg.silence_peak)
        if problem:
            problems.append({"file": wav, "problem": problem})
            progress.close()
            print(f"  warning: {wav} is {problem}", flush=True)
        progress(f"  wrote {len(files)}/{args.n}: {wav}")
    progress.close()
    print(f"{len(files)} WAV files in {args.out}, {len(problems)} silent or non-finite")
    print(
        json.dumps(
            {
                "checkpoint": loaded.uri,
                "out": storage.resolve(args.out).uri,
                "digit": args.digit,
                "n": len(files),
                "sample_rate": cfg.sample_rate,
                "files": files,
                "problems": problems,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
