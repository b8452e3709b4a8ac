"""Any digit in your voice: each WAV encoded with the digit it says, decoded with every digit.

    python -m jobs.transfer --checkpoint CKPT --wavs FILE_OR_DIR --out DIR [--digits 7 8] [--digit D]

CKPT must be digit-conditional (trained with --conditional): its latent code keeps the voice and
the label says the digit. Each input (a .wav file, or every .wav under a folder) says the digit in
its name ({digit}_{speaker}_{take}.wav) or --digit. It is said as each digit of --digits (default
0-9) into a folder of its own, DIR/<its path under the input, less .wav, made safe as jobs.reconstruct
makes names>/, as <target digit>_<speaker>_<take>.wav with a PNG of its spectrogram beside it.
Speaker and take are the input's own; an input named otherwise has its stem as the speaker (each run
of characters other than letters, digits and hyphens a hyphen, at most 64) and take 0: me_three.wav
said as a 7 is me_three/7_me-three_0.wav. DIR/index.html plays them all, DIR/transfer.json lists
them with the matching and code scale used, as does the last stdout line. CKPT, the inputs and DIR may be
local or s3://. The outputs take each input's colour (long-term spectrum and the spread of its level) and
median pitch, which the decoder misses for a voice it never heard; --no-match-voice leaves them as
the decoder makes them. Each input's code is decoded moved towards the training codes' centre (--code-scale, default the checkpoint's sampling.transfer_code_scale;
1 keeps it as it is), so that the label, not what of the input's digit the code holds, says the digit.
"""

from __future__ import annotations

import argparse
import html
import json
import posixpath
import re
import sys
from urllib.parse import quote

from jobs._cli import add_out, digit, fail, parser, positive_int, run
from vae import console, storage
from vae.config import N_DIGITS, SPEAKER, ConfigError, check_code_scale

SUMMARY, INDEX = "transfer.json", "index.html"


def build_parser() -> argparse.ArgumentParser:
    p = parser("jobs.transfer", __doc__)
    p.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="a digit-conditional checkpoint (local or s3://)"
    )
    p.add_argument(
        "--wavs", required=True, metavar="FILE_OR_DIR", help="a .wav file, or a folder or s3:// prefix of them"
    )
    add_out(p, "output folder (local or s3://)")
    p.add_argument(
        "--digits", type=digit, nargs="+", default=list(range(N_DIGITS)), help="the digits to say (default: 0-9)"
    )
    p.add_argument(
        "--digit", type=digit, help="the digit every input says (default: read from names like 7_anna_0.wav)"
    )
    p.add_argument("--batch-size", type=positive_int, default=16, help="inputs encoded and vocoded together")
    p.add_argument("--no-png", action="store_true", help="skip the spectrogram PNGs (default: write them)")
    p.add_argument(
        "--no-match-voice",
        action="store_true",
        help="the decoder's output as it is (default: moved to each input's colour, its spread and median pitch)",
    )
    p.add_argument(
        "--code-scale",
        type=code_scale,
        metavar="S",
        help="share of each input's code kept, from the training codes' centre, 0-1 "
        "(default: the checkpoint's sampling.transfer_code_scale)",
    )
    return p


def code_scale(text: str) -> float:
    """argparse type of --code-scale: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    try:
        return check_code_scale(value, "--code-scale")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("transfer", lambda: _main(args), args.verbose)


def output_names(rel: str) -> tuple[str, str, int]:
    """(folder, speaker, take) of the input at ``rel`` (its path under the input folder), as the module says."""
    from vae.dataset import parse_name

    stem = rel[: -len(".wav")] if rel.lower().endswith(".wav") else rel
    folder = storage.safe_relpath(stem)
    try:
        labels = parse_name(rel)
        return folder, labels.speaker, labels.take
    except ValueError:
        stem = posixpath.basename(stem)
        speaker = re.sub(r"[^A-Za-z0-9-]+", "-", stem).strip("-")[:64].rstrip("-") or "voice"
        assert re.fullmatch(SPEAKER, speaker), speaker
        return folder, speaker, 0


def _main(args: argparse.Namespace) -> int:
    from vae import generation
    from vae.checkpoint import check, load

    targets = generation.check_digits(args.digits)
    if args.digit is not None:
        generation.check_digits([args.digit])
    files = storage.list_files(args.wavs, suffix=".wav")
    if not files:
        return fail("transfer", f"no .wav files under {args.wavs}")
    storage.check_reachable(args.out)
    check(args.checkpoint)  # before TensorFlow loads: a wrong folder fails in seconds
    loaded = load(args.checkpoint)
    generation.check_conditional(loaded)
    base = storage.resolve(args.wavs).uri
    print(f"{len(files)} .wav files under {base}, each said as {targets}; model {loaded.uri} (epoch {loaded.epoch})")

    summary: dict = {"checkpoint": loaded.uri, "input": base, "out": storage.resolve(args.out).uri, "digits": targets}
    scale = loaded.run_config.sampling.transfer_code_scale if args.code_scale is None else args.code_scale
    summary.update(match_voice=not args.no_match_voice, code_scale=scale)
    summary.update(png=not args.no_png, inputs=[], skipped=[], problems=[])
    for start in range(0, len(files), args.batch_size):
        _transfer_batch(loaded, files[start : start + args.batch_size], base, targets, args, summary)
        print(f"  {len(summary['inputs'])}/{len(files)} inputs said as {len(targets)} digits", flush=True)
    summary["written"] = sum(len(item["files"]) for item in summary["inputs"])
    storage.write_text(storage.join(args.out, INDEX), index_html(summary))
    storage.write_json(storage.join(args.out, SUMMARY), summary)
    print(
        f"{summary['written']} WAV files from {len(summary['inputs'])} inputs in {args.out}, "
        f"{len(summary['skipped'])} inputs skipped, {len(summary['problems'])} clips silent or non-finite"
    )
    print(json.dumps(summary))
    return 0 if summary["inputs"] else 1


def _transfer_batch(loaded, uris: list[str], base: str, targets: list[int], args, summary: dict) -> None:
    """Read, transfer and write the inputs ``uris``; what happened goes into ``summary``."""
    from jobs.reconstruct import _read_voices
    from vae import generation
    from vae.evaluation.evaluators import unseen_voices
    from vae.features import wav_bytes

    voices = _read_voices(loaded, uris, args.digit, summary["skipped"], console.ProgressLine())
    if not voices:
        return
    cfg = loaded.run_config.features
    specs, waves = unseen_voices.transfer(
        loaded, voices, targets, match_voice=summary["match_voice"], code_scale=summary["code_scale"]
    )
    for voice, voice_specs, voice_waves in zip(voices, specs, waves):
        rel = voice.uri[len(base) :].lstrip("/") if voice.uri != base else posixpath.basename(voice.uri)
        folder, speaker, take = output_names(rel)
        files = []
        for target, spec, y in zip(targets, voice_specs, voice_waves):
            stem = f"{target}_{speaker}_{take}"
            wav = storage.join(args.out, folder, stem + ".wav")
            storage.write_bytes(wav, wav_bytes(y, cfg))
            if not args.no_png:
                storage.write_bytes(
                    storage.join(args.out, folder, stem + ".png"), generation.spectrogram_png(spec, stem)
                )
            problem = generation.check_audio(y, cfg.silence_peak)
            if problem:
                summary["problems"].append({"file": wav, "problem": problem})
                print(f"  warning: {wav} is {problem}", flush=True)
            files.append(wav)
        summary["inputs"].append({"input": voice.uri, "digit": voice.digit, "folder": folder, "files": files})


def index_html(summary: dict) -> str:
    """A page of every input (a row) said as each digit (a column): players and spectrograms, by relative links."""
    out = summary["out"].rstrip("/") + "/"
    head = "".join(f"<th>{d}</th>" for d in summary["digits"])
    rows = []
    for item in summary["inputs"]:
        cells = []
        for wav in item["files"]:
            rel = quote(wav[len(out) :] if wav.startswith(out) else posixpath.basename(wav))
            png = "" if not summary["png"] else f'<br><img src="{rel[: -len(".wav")]}.png" alt="">'
            cells.append(f'<td><audio controls preload="none" src="{rel}"></audio>{png}</td>')
        name = html.escape(posixpath.basename(item["input"]))
        rows.append(f"<tr><th>{name}<br>(a {item['digit']})</th>{''.join(cells)}</tr>")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>any digit in your voice</title>'
        "<style>body{font-family:system-ui,sans-serif} td,th{padding:4px;vertical-align:top} img{width:160px}"
        "audio{width:160px}</style></head><body>\n<h1>Any digit in your voice</h1>\n"
        f"<p>{html.escape(summary['checkpoint'])}: each input encoded with the digit it says, decoded with each digit.</p>\n"
        f"<table><tr><th>input</th>{head}</tr>\n" + "\n".join(rows) + "\n</table></body></html>\n"
    )


if __name__ == "__main__":
    sys.exit(main())
