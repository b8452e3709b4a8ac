"""Reconstruct WAV files through a trained VAE: encoder (posterior mean), decoder, Griffin-Lim.

    python -m jobs.reconstruct --checkpoint CKPT --input WAV_DIR --out DIR

Every .wav under WAV_DIR is written to DIR under the same relative name (each part
made safe by vae.storage.safe_name: a name from the input never leaves DIR). Files
that cannot be read as audio (corrupt, empty, silent) are skipped with a message
naming them. CKPT, WAV_DIR and DIR may be local or s3://. The last stdout line is
JSON with the counts, the skipped files and the mean log-spectral distance (dB)
between input and reconstruction.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from jobs._cli import add_out, digit, fail, parser, positive_int, run
from vae import console, storage
from vae.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.reconstruct", __doc__)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint folder (local or s3://)")
    p.add_argument("--input", required=True, metavar="DIR_OR_S3", help="folder or s3:// prefix of .wav files")
    add_out(p, "output folder (local or s3://)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="clips encoded and decoded at once")
    p.add_argument(
        "--digit",
        type=digit,
        help="the digit every input says (a conditional model needs it; "
        "by default it is read from names like 7_anna_0.wav)",
    )
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("reconstruct", lambda: _main(args), args.verbose)


def _main(args: argparse.Namespace) -> int:
    from vae.checkpoint import check, load

    files = storage.list_files(args.input, suffix=".wav")
    if not files:
        return fail("reconstruct", f"no .wav files under {args.input}")
    storage.check_reachable(args.out)
    check(args.checkpoint)  # before TensorFlow loads: a wrong folder fails in seconds
    loaded = load(args.checkpoint)
    base = storage.resolve(args.input).uri
    print(f"{len(files)} .wav files under {base}; model {loaded.uri} (epoch {loaded.epoch})", flush=True)
    written, skipped, distances = _reconstruct_all(args, loaded, files, base)

    mean_lsd = float(np.mean(distances)) if distances else None
    print(
        f"{len(written)} reconstructed into {args.out}, {len(skipped)} skipped"
        + (f", mean LSD {mean_lsd:.2f} dB" if distances else "")
    )
    print(
        json.dumps(
            {
                "checkpoint": loaded.uri,
                "input": base,
                "out": storage.resolve(args.out).uri,
                "written": len(written),
                "skipped": skipped,
                "mean_log_spectral_distance_db": mean_lsd,
                "files": written,
            }
        )
    )
    return 0 if written else 1


def _reconstruct_all(
    args: argparse.Namespace, loaded, files: list[str], base: str
) -> tuple[list[str], list[dict[str, str]], list[float]]:
    """Every readable file of ``files`` (under ``base``) through the model into ``args.out``: the files
    written, those skipped with why, and each written one's log-spectral distance (dB) to its input."""
    from vae import generation
    from vae.evaluation.evaluators import unseen_voices
    from vae.features import log_spectral_distance, wav_bytes

    cfg, input_is_dir, progress = loaded.run_config.features, storage.is_dir(base), console.ProgressLine()
    written: list[str] = []
    skipped: list[dict[str, str]] = []
    distances: list[float] = []
    for start in range(0, len(files), args.batch_size):
        voices = _read_voices(loaded, files[start : start + args.batch_size], args.digit, skipped, progress)
        for voice, y in zip(voices, unseen_voices.reconstruct(loaded, voices) if voices else []):
            rel = voice.uri[len(base) :].lstrip("/") if input_is_dir else voice.uri.rsplit("/", 1)[-1]
            out = storage.join(args.out, storage.safe_relpath(rel))
            try:
                storage.write_bytes(out, wav_bytes(y, cfg))
            except storage.StorageError as exc:
                progress.close()
                raise storage.StorageError(f"{exc} ({len(written)} files written before it)") from exc
            problem = generation.check_audio(y, cfg.silence_peak)
            if problem:
                progress.close()
                print(f"  warning: {out} is {problem}", flush=True)
            distances.append(log_spectral_distance(voice.waveform, y, cfg))
            written.append(out)
        progress(f"  {len(written)}/{len(files)} reconstructed")
    progress.close()
    return written, skipped, distances


def _read_voices(loaded, uris: list[str], digit: int | None, skipped: list[dict[str, str]], progress) -> list:
    """The clips of ``uris`` that can be read; each one that cannot goes to ``skipped`` with why
    (and a line under ``progress``)."""
    from vae.evaluation.evaluators import unseen_voices

    voices = []
    for uri in uris:
        try:
            voices.append(unseen_voices.read_voice(loaded, uri, digit))
        except UserError as exc:
            reason = _reason(exc)
            progress.close()
            print(f"  skipped {uri}: {reason}", flush=True)
            skipped.append({"file": uri, "reason": reason})
    return voices


def _reason(exc: UserError) -> str:
    """Why a file is skipped, in a few words."""
    from vae.evaluation.evaluators.unseen_voices import DigitUnknown
    from vae.features import AudioError

    if isinstance(exc, DigitUnknown):
        return f"{exc.reason} (pass --digit, or name it like 7_anna_0.wav)"
    return exc.reason if isinstance(exc, AudioError) else str(exc)


if __name__ == "__main__":
    sys.exit(main())
