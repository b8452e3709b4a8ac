"""Render measured figures as the docs' tables: the demo's (benchmarks/results/demo.json) and the voice
variants' (benchmarks/results/voice.json, written by ``benchmarks.quality --out``) and the other levers
tried on the voice (benchmarks/results/levers.json: rows of several such runs, with every command) and
the local code's variants (benchmarks/results/local.json, the same way), and
any digit in your voice (benchmarks/results/transfer.json and, with its outputs matched to the voice and
more speaker recognisers, transfer_voice.json, on lower-rate codes, transfer_rate.json, with less of each
clip's code kept, transfer_scale.json, with each code less its digit's mean, transfer_centred.json, that on
the demo's model, transfer_demo_erase.json, with the renderer fitted to each clip, transfer_adapt.json, and
what a network reads of the digit from codes and from a voice, transfer_probes.json, written by
``benchmarks.transfer --out``), and
quality against minutes of training (benchmarks/results/budget.json, ``benchmarks.quality_budget --out``),
the decoding comb's depth (benchmarks/results/comb_depth.json, ``benchmarks.comb_depth --out``),
and what the renderer and the decoder's blur cost a voice never heard (benchmarks/results/blur_theo.json,
``benchmarks.blur_floor --out``), and the sweeps that chose the demo's configuration
(benchmarks/results/voice_sweep.json and, over the local code's choices, local_sweep.json,
``benchmarks.sweep_results --out``), and the decoder's adversarial stage (benchmarks/results/adversarial.json,
``benchmarks.adversarial --out``; on the demo's model, adversarial_demo.json, rows of several such runs).

    python -m benchmarks.results_table            # rewrite the tables between the markers
    python -m benchmarks.results_table --check    # exit 1 if a table is not the JSON's
    python -m benchmarks.results_table --print    # print the tables only

Table NAME lives between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` (the demo's, ``results``, in
README.md and docs/benchmarks.md; ``voice``, ``levers``, ``local``, ``budget``, ``comb_depth``, ``blur``, ``sweep``, ``local_sweep``, ``adversarial`` and ``adversarial_demo`` in docs/benchmarks.md; ``transfer``, ``transfer_voice``, ``transfer_rate``, ``transfer_scale``, ``transfer_centred``, ``transfer_demo_erase``, ``transfer_adapt`` and ``transfer_probes`` in docs/own-voice.md) and is never edited by hand: measure,
put the figures in the JSON (with the command, machine and date), and run this script.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo.json"
TARGETS = (ROOT / "README.md", ROOT / "docs" / "benchmarks.md")
VOICE = ROOT / "benchmarks" / "results" / "voice.json"
LEVERS = ROOT / "benchmarks" / "results" / "levers.json"
LOCAL = ROOT / "benchmarks" / "results" / "local.json"
TRANSFER = ROOT / "benchmarks" / "results" / "transfer.json"
TRANSFER_VOICE = ROOT / "benchmarks" / "results" / "transfer_voice.json"
TRANSFER_RATE = ROOT / "benchmarks" / "results" / "transfer_rate.json"
TRANSFER_SCALE = ROOT / "benchmarks" / "results" / "transfer_scale.json"
TRANSFER_CENTRED = ROOT / "benchmarks" / "results" / "transfer_centred.json"
TRANSFER_DEMO_ERASE = ROOT / "benchmarks" / "results" / "transfer_demo_erase.json"
TRANSFER_ADAPT = ROOT / "benchmarks" / "results" / "transfer_adapt.json"
TRANSFER_PROBES = ROOT / "benchmarks" / "results" / "transfer_probes.json"
BUDGET = ROOT / "benchmarks" / "results" / "budget.json"
BLUR = ROOT / "benchmarks" / "results" / "blur_theo.json"
SWEEP = ROOT / "benchmarks" / "results" / "voice_sweep.json"
LOCAL_SWEEP = ROOT / "benchmarks" / "results" / "local_sweep.json"
COMB_DEPTH = ROOT / "benchmarks" / "results" / "comb_depth.json"
ADVERSARIAL = ROOT / "benchmarks" / "results" / "adversarial.json"
ADVERSARIAL_DEMO = ROOT / "benchmarks" / "results" / "adversarial_demo.json"
VOICE_METRICS = ("digit_accuracy", "frechet_distance", "voicing_samples", "voicing_recon", "pesq_nb")
HELD_OUT_METRICS = ("held_out_lsd_db", "held_out_pesq_nb", "held_out_voicing", "held_out_heard_as_speaker")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _number(value: float) -> str:
    return f"{value:g}"


def render(results: dict) -> str:
    """The Markdown block that goes between the markers (markers excluded)."""
    runs = results["runs"]
    first = results["first_run_s"]
    once = sum(first.values())
    head = "| | " + " | ".join(f"seed {run['seed']}" for run in runs) + " | floor | target |"
    rule = "|---|" + "---|" * len(runs) + "---|---|"
    rows = [head, rule]
    own = [sum(run["phases_s"].values()) for run in runs]
    rows.append(
        "| demo time: first run (rerun) | "
        + " | ".join(f"{_minutes(s + once)} ({_minutes(s)})" for s in own)
        + " | | |"
    )
    rows.append("| epochs in the 600 s budget | " + " | ".join(str(run["epochs"]) for run in runs) + " | | |")
    for key, meta in results["metrics"].items():
        values = " | ".join(f"{run['metrics'][key]:.{meta['decimals']}f}" for run in runs)
        rows.append(f"| {meta['label']} | {values} | {_number(meta['floor'])} | {meta['target']} |")
    phases = ", ".join(f"{name} {seconds:g} s" for name, seconds in first.items())
    footer = (
        f"Measured {results['date']} on {results['machine']}: `{results['command']}`. "
        f"Demo time is the sum of the phases: training and evaluation of each run, plus {phases} "
        "on a first run (a rerun in the same folder reuses them). Floor: real test clips through "
        "the features and Griffin-Lim alone, the best the vocoder allows; the Frechet distance's draws are test "
        "clips, part of what they are compared with, so other real recordings score well above it. "
        "Generated from `benchmarks/results/demo.json` by `python -m benchmarks.results_table`."
    )
    return "\n".join(rows) + "\n\n" + footer


def _fixed(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return _fixed(values[0])
    return f"{_fixed(sum(values) / len(values))} ({_fixed(min(values))}-{_fixed(max(values))})"


def _footer(results: dict, what: str, commands: str, source: Path | str) -> str:
    """A generated table's last line: when, where and how it was measured, and where it comes from."""
    name = source.name if isinstance(source, Path) else source
    return (
        f"Measured {results['date']} on {results['cpus']} CPUs{what}: {commands}. "
        f"Generated from `benchmarks/results/{name}` by `python -m benchmarks.results_table`."
    )


def _measured(rows: list[dict]) -> list[str]:
    """The voice and held-out metrics some row has a value for."""
    return [m for m in VOICE_METRICS + HELD_OUT_METRICS if any(r.get(m) is not None for r in rows)]


def _floor_row(rows: list[dict], metrics: list[str], skip: int = 1) -> str:
    """The floors of ``metrics`` (the first row that has each), after ``skip`` empty cells."""
    floors = [next((r[f"{m}_floor"] for r in rows if r.get(f"{m}_floor") is not None), None) for m in metrics]
    return "| floor | " + "| " * skip + " | ".join("" if f is None else _fixed(f) for f in floors) + " |"


def render_voice(results: dict, source: str = "voice.json") -> str:
    """A table of ``benchmarks.quality`` variants (``source``, in benchmarks/results): per variant the mean
    (min-max) over seeds, and the floors."""
    metrics = _measured(results["rows"])
    rows = ["| variant | epochs | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    variants = list(dict.fromkeys(r["variant"] for r in results["rows"]))
    for name in variants:
        mine = [r for r in results["rows"] if r["variant"] == name]
        cells = [
            _spread([r[m] for r in mine if r.get(m) is not None]) if any(r.get(m) is not None for r in mine) else ""
            for m in metrics
        ]
        rows.append(f"| {name} | {'/'.join(str(r['epochs']) for r in mine)} | " + " | ".join(cells) + " |")
    rows.append(_floor_row(results["rows"], metrics))
    seeds = ", ".join(str(s) for s in results["seeds"])
    length = f"{results['epochs']} epochs" if results.get("epochs") else f"{results['budget_s']:g} s of training"
    commands = "; ".join(f"`{c}`" for c in results.get("commands", [results.get("command")]))
    what = f": {length} per run, seeds {seeds} (mean, min-max), speaker {results['held_out_speaker']!r} held out of training"
    return "\n".join(rows) + "\n\n" + _footer(results, what, commands, source)


def render_comb_depth(results: dict) -> str:
    """``benchmarks.comb_depth``: a row per comb depth, each metric's mean (min-max) over the checkpoints."""
    metrics = ["inception_score", "recon_lsd_db", *_measured(results["rows"])]
    rows = ["| comb depth (dB) | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for depth in dict.fromkeys(r["depth_db"] for r in results["rows"]):
        mine = [r for r in results["rows"] if r["depth_db"] == depth]
        rows.append(f"| {depth:g} | " + " | ".join(_spread([r[m] for r in mine]) for m in metrics) + " |")
    rows.append(_floor_row(results["rows"], metrics, skip=0))
    seeds = ", ".join(str(s) for s in dict.fromkeys(r["seed"] for r in results["rows"]))
    what = f": the best checkpoints of seeds {seeds} (mean, min-max), decoded at each depth"
    return "\n".join(rows) + "\n\n" + _footer(results, what, f"`{results['command']}`", COMB_DEPTH)


def render_budget(results: dict) -> str:
    """``benchmarks.quality_budget``: a row per training budget, and the floors."""
    metrics = _measured(results["rows"])
    rows = ["| minutes | epochs | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for r in results["rows"]:
        cells = ["" if r.get(m) is None else _fixed(r[m]) for m in metrics]
        rows.append(f"| {r['minutes']:g} | {r['epochs']} (best {r['best_epoch']}) | " + " | ".join(cells) + " |")
    rows.append(_floor_row(results["rows"], metrics))
    what = (
        f": variant {results['variant']!r}, seed {results['seed']}, "
        f"speaker {results['held_out_speaker']!r} held out of training"
        + (
            ", one run of the longest budget, each budget scored on its best checkpoint within it"
            if results.get("one_run")
            else ""
        )
    )
    return "\n".join(rows) + "\n\n" + _footer(results, what, f"`{results['command']}`", BUDGET)


def render_blur(results: dict) -> str:
    """``benchmarks.blur_floor`` on one speaker's test clips: how each way of making them sounds."""
    rows = ["| test spectrograms | recon_lsd_db | pesq_nb | voicing |", "|---|---|---|---|"]
    for r in results["rows"]:
        rows.append(f"| {r['spectrograms']} | {r['recon_lsd_db']:.2f} | {r['pesq_nb']:.2f} | {r['voicing']:.2f} |")
    what = f", the {results['clips']} test clips of speaker {results['speaker']!r}"
    return "\n".join(rows) + "\n\n" + _footer(results, what, f"`{results['command']}`", BLUR)


def render_sweep(results: dict, source: Path = SWEEP) -> str:
    """``benchmarks.sweep_results``: a row per trial, best first, its searched values, its best epoch's
    objective terms and, for the trials scored, the listeners' metrics of that epoch's checkpoint."""
    from benchmarks.sweep_results import TERMS

    rows_in = results["rows"]
    params = list(dict.fromkeys(k for r in rows_in for k in r["params"]))
    terms = [t for t in TERMS if any(r.get(t) is not None for r in rows_in)]
    scored = [r.get("evaluation", {}) for r in rows_in]
    metrics = _measured(scored)
    head = [k.split(".", 1)[-1] for k in params] + ["epochs"] + terms + [f"eval: {m}" for m in metrics]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(value) -> str:
        if value is None:
            return ""
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    for r, e in zip(rows_in, scored, strict=True):
        cells = [cell(r["params"].get(k)) for k in params] + [f"{r['epochs']} (best {r['best_epoch']})"]
        rows.append(
            "| " + " | ".join(cells + [cell(r.get(k)) for k in terms] + [cell(e.get(m)) for m in metrics]) + " |"
        )
    if metrics:
        floors = [next(e for e in scored if e).get(f"{m}_floor") for m in metrics]
        rows.append("| floor |" + " |" * (len(params) + len(terms)) + " " + " | ".join(cell(f) for f in floors) + " |")
    what = (
        f", `{results['space']}`, objective terms {', '.join(results['objective']) or 'none'} (voicing floor "
        f"{cell(results['voicing_floor'])}), speaker {results['held_out_speaker']!r} held out of training"
    )
    return (
        "\n".join(rows)
        + "\n\n"
        + _footer(results, what, f"`{results['sweep_command']}`, then `{results['command']}`", source)
    )


def render_adversarial(results: dict, source: Path = ADVERSARIAL) -> str:
    """``benchmarks.adversarial``: checkpoints before and after their decoder's second stage, and the floors."""
    metrics = _measured(results["rows"])
    rows = ["| decoder | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for r in results["rows"]:
        rows.append(
            f"| {r['variant']} | " + " | ".join("" if r.get(m) is None else _fixed(r[m]) for m in metrics) + " |"
        )
    rows.append(_floor_row(results["rows"], metrics, skip=0))
    commands = "; ".join(f"`{c}`" for c in results["commands"])
    return (
        "\n".join(rows)
        + "\n\n"
        + _footer(results, f", speaker {results['held_out_speaker']!r} held out of training", commands, source)
    )


def render_transfer(results: dict, source: Path = TRANSFER) -> str:
    """benchmarks.transfer's comparison of checkpoints (its own table)."""
    from benchmarks.transfer import table

    return table(results, source.name)


def block(text: str, name: str) -> str:
    """What a file holds between table ``name``'s markers, stripped."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"no {start} ... {end} section")
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def rewrite(text: str, name: str, table: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    before = text.split(start, 1)[0]
    after = text.split(end, 1)[1]
    return f"{before}{start}\n{table}\n{end}{after}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.results_table", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if a file's table differs from the JSON's")
    mode.add_argument("--print", action="store_true", help="print the tables instead of writing the files")
    p.add_argument("--results", type=Path, default=RESULTS, help="the demo's JSON")
    p.add_argument("--files", type=Path, nargs="+", default=list(TARGETS), help="files with the demo's markers")
    p.add_argument("--voice", type=Path, default=VOICE, help="the voice variants' JSON")
    args = p.parse_args(argv)
    tables = [
        ("results", args.results, render, args.files),
        ("voice", args.voice, render_voice, [ROOT / "docs" / "benchmarks.md"]),
        ("levers", LEVERS, lambda r: render_voice(r, LEVERS.name), [ROOT / "docs" / "benchmarks.md"]),
        ("local", LOCAL, lambda r: render_voice(r, LOCAL.name), [ROOT / "docs" / "benchmarks.md"]),
        ("transfer", TRANSFER, render_transfer, [ROOT / "docs" / "own-voice.md"]),
        *(
            (source.stem, source, partial(render_transfer, source=source), [ROOT / "docs" / "own-voice.md"])
            for source in (
                TRANSFER_VOICE,
                TRANSFER_RATE,
                TRANSFER_SCALE,
                TRANSFER_CENTRED,
                TRANSFER_DEMO_ERASE,
                TRANSFER_ADAPT,
                TRANSFER_PROBES,
            )
        ),
        ("budget", BUDGET, render_budget, [ROOT / "docs" / "benchmarks.md"]),
        ("comb_depth", COMB_DEPTH, render_comb_depth, [ROOT / "docs" / "benchmarks.md"]),
        ("blur", BLUR, render_blur, [ROOT / "docs" / "benchmarks.md"]),
        ("sweep", SWEEP, render_sweep, [ROOT / "docs" / "benchmarks.md"]),
        ("local_sweep", LOCAL_SWEEP, lambda r: render_sweep(r, LOCAL_SWEEP), [ROOT / "docs" / "benchmarks.md"]),
        ("adversarial", ADVERSARIAL, render_adversarial, [ROOT / "docs" / "benchmarks.md"]),
        (
            "adversarial_demo",
            ADVERSARIAL_DEMO,
            partial(render_adversarial, source=ADVERSARIAL_DEMO),
            [ROOT / "docs" / "benchmarks.md"],
        ),
    ]
    stale = []
    for name, source, renderer, files in tables:
        table = renderer(json.loads(source.read_text()))
        if args.print:
            print(table, end="\n\n")
            continue
        for path in files:
            text = path.read_text()
            if block(text, name) == table:
                continue
            if args.check:
                stale.append(f"{path.name}'s {name} table differs from {source.name}")
            else:
                path.write_text(rewrite(text, name, table))
    if stale:
        print(f"{'; '.join(stale)}: run `python -m benchmarks.results_table`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
