"""The benchmark results as markdown tables and a chart, from the CSV rows."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from .harness import (
    CRITICS,
    IMAGE_N,
    ITERATION_SUFFIX,
    MIB,
    SHAPES,
    STEP_BACKENDS,
    STEP_VARIANTS,
    TABULAR_D,
    TABULAR_PAC,
    _dtype_rank,
    _op_base,
    merge_rows,
    read_csv,
)


def _size_label(nbytes: int) -> str:
    """About two significant digits: the tabular shape rounds to whole groups (0.999 MiB)."""
    value, unit = nbytes / MIB, "MiB"
    if value >= 1024:
        value, unit = value / 1024, "GiB"
    return f"{value:.0f} {unit}" if value >= 10 else f"{value:.2g} {unit}"

def op_speedups(rows: Sequence[Dict[str, str]]) -> List[Tuple[Dict[str, str], float]]:
    """(fused op row, reference median / its median) for every op row with a reference row."""
    ref = {(r["name"], r["dtype"], r["size_bytes"]): float(r["median_ms"])
           for r in rows if r["kind"] == "op" and r["backend"] == "reference"}
    out = []
    for r in rows:
        if r["kind"] != "op" or r["backend"] == "reference":
            continue
        key = (r["name"], r["dtype"], r["size_bytes"])
        if key in ref:
            out.append((r, ref[key] / float(r["median_ms"])))
    return out

def step_ratios(rows: Sequence[Dict[str, str]]) -> List[Dict[str, object]]:
    """Per critic and dtype: medians a (reference), b (wgangp_fast), c (no_penalty), the ratios
    a/b (speed-up of the step), b/c and a/c (overhead of the penalty), and (a-c)/(b-c) (speed-up
    of the penalty's share of the step)."""
    by = {}
    for r in rows:
        if r["kind"] == "step":
            by.setdefault((r["name"], r["dtype"], r["size_bytes"]), {})[r["backend"]] = r
    out = []
    for (name, dtype, size), group in by.items():
        if not all(v in group for v in STEP_BACKENDS):
            continue
        a, b, c = (float(group[v]["median_ms"]) for v in STEP_BACKENDS)
        share = (a - c) / (b - c) if b - c > 0 and a - c > 0 else float("nan")
        out.append({"name": name, "dtype": dtype, "size_bytes": int(size), "rows": group,
                    "a": a, "b": b, "c": c, "a/b": a / b, "b/c": b / c, "a/c": a / c,
                    "penalty_speedup": share})
    return sorted(out, key=lambda s: (_name_rank(s["name"]), _dtype_rank(s["dtype"])))


def _name_rank(name: str) -> Tuple[int, int]:
    """Critic steps in CRITICS order, then the iterations in the same order."""
    order = {c: i for i, c in enumerate(CRITICS)}
    base = name[:-len(ITERATION_SUFFIX)] if name.endswith(ITERATION_SUFFIX) else name
    return int(name.endswith(ITERATION_SUFFIX)), order.get(base, 99)


def mode_speedups(rows: Sequence[Dict[str, str]]) -> List[Dict[str, object]]:
    """Per step or iteration and dtype: every variant's row and its speed-up over `reference`
    (the reference step), in STEP_VARIANTS order."""
    by: Dict[tuple, Dict[str, Dict[str, str]]] = {}
    for r in rows:
        if r["kind"] == "step":
            by.setdefault((r["name"], r["dtype"], r["size_bytes"]), {})[r["backend"]] = r
    out = []
    for (name, dtype, size), group in by.items():
        if "reference" not in group:
            continue
        ref = float(group["reference"]["median_ms"])
        variants = [v for v in STEP_VARIANTS if v in group]
        out.append({"name": name, "dtype": dtype, "size_bytes": int(size), "rows": group,
                    "variants": variants,
                    "speedup": {v: ref / float(group[v]["median_ms"]) for v in variants}})
    return sorted(out, key=lambda s: (_name_rank(s["name"]), _dtype_rank(s["dtype"])))

def _fmt_ms(r: Dict[str, str]) -> str:
    return f"{float(r['median_ms']):.3f} [{float(r['p20_ms']):.3f}–{float(r['p80_ms']):.3f}]"

def markdown(rows: Sequence[Dict[str, str]], notes: Sequence[str] = ()) -> str:
    """The results as markdown: an op table per shape and a step table."""
    if not rows:
        return "(no results)\n"
    first = rows[0]
    lines = [f"# Benchmarks: {first['device']}, {first['date']}", "",
             f"torch {first['torch']}, triton {first['triton'] or '-'}."]
    lines += list(notes)
    lines.append("")
    ops = [r for r in rows if r["kind"] == "op"]
    if ops:
        lines += [
            "## Ops",
            "",
            "Times in ms: median [p20–p80]. GB/s: necessary traffic (interpolate 3b, "
            "penalty_forward b, penalty_backward 2b, roundtrip 6b per element) / median; "
            "% copy: of a device copy of the same size measured in the same run (read + write). "
            "Speed-up: the eager reference code (`reference`, CTGAN's formulas) median / this median. Peak: memory "
            "one call allocates beyond its inputs.",
            "",
        ]
        speed = {id(r): s for r, s in op_speedups(ops)}
        for shape in SHAPES:
            shape_rows = [r for r in ops if _op_base(r["name"])[1] == shape]
            if not shape_rows:
                continue
            if shape == "tabular":
                title = (f"### Tabular: [N, {TABULAR_D}], pac={TABULAR_PAC} "
                         f"({TABULAR_PAC * TABULAR_D}-element groups)")
            else:
                title = f"### Image-like: [{IMAGE_N}, D], pac=1 (one group of D elements per sample)"
            lines += [title, "",
                      "| op | dtype | size | backend | ms | GB/s | % copy | speed-up | peak MiB |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for r in shape_rows:
                gbps, copy_gbps = float(r["gbps"]), float(r["copy_gbps"])
                s = speed.get(id(r))
                lines.append(
                    f"| {_op_base(r['name'])[0]} | {r['dtype']} | "
                    f"{_size_label(int(r['size_bytes']))} | {r['backend']} | {_fmt_ms(r)} | "
                    f"{gbps:.2f} | {100 * gbps / copy_gbps:.0f}% | "
                    f"{'—' if s is None else f'{s:.2f}x'} | {float(r['peak_mem_mb']):.1f} |")
            lines.append("")
    steps = step_ratios(rows)
    if steps:
        lines += [
            "## Critic steps",
            "",
            "One critic step: forward on real and fake, penalty, backward, Adam step. "
            "a = `reference` (the eager penalty code it replaces), b = `wgangp_fast` (gradient_penalty as a "
            "drop-in in the same loop), c = `no_penalty`. Times in ms: median [p20–p80]. "
            "a/b: speed-up of the step; b/c and a/c: step time with the penalty over without; "
            "(a-c)/(b-c): speed-up of the penalty's share of the step. Peak MiB: a / b / c.",
            "",
            "| critic | dtype | batch | a: reference | b: wgangp_fast | c: no_penalty | a/b | "
            "b/c | a/c | (a-c)/(b-c) | peak MiB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in steps:
            g = s["rows"]
            share = s["penalty_speedup"]
            peaks = " / ".join(f"{float(g[v]['peak_mem_mb']):.0f}" for v in STEP_BACKENDS)
            lines.append(
                f"| {s['name']} | {s['dtype']} | {_size_label(s['size_bytes'])} | "
                f"{_fmt_ms(g['reference'])} | {_fmt_ms(g['wgangp_fast'])} | "
                f"{_fmt_ms(g['no_penalty'])} | {s['a/b']:.3f} | {s['b/c']:.3f} | "
                f"{s['a/c']:.3f} | {'—' if math.isnan(share) else f'{share:.2f}'} | {peaks} |")
        lines.append("")
    modes = mode_speedups(rows)
    if any(len(m["variants"]) > 3 for m in modes):
        shown = [v for v in STEP_VARIANTS if any(v in m["variants"] for m in modes)]
        lines += [
            "## Steps and iterations by mode",
            "",
            "Median ms of one critic step (`<critic>`) or one training iteration of 5 critic "
            "steps and a generator step (`<critic>-iteration`), and in brackets the speed-up "
            "over `reference` (the eager penalty code's step). `eager`, `compile`, `graph`, "
            "`compile+graph`: wgangp_fast.CriticStep / TrainStep in that mode. Setup: seconds "
            "before the first timed call (compiling; the graph modes' warm-up and capture).",
            "",
            "| step | dtype | " + " | ".join(shown) + " | setup s |",
            "| --- | --- | " + " | ".join("---" for _ in shown) + " | --- |",
        ]
        for m in modes:
            g = m["rows"]
            cells = [f"{float(g[v]['median_ms']):.3f} ({m['speedup'][v]:.2f}x)" if v in g
                     else "—" for v in shown]
            setup = ", ".join(f"{v} {float(g[v]['setup_s']):.1f}" for v in m["variants"]
                              if g[v].get("setup_s"))
            lines.append(f"| {m['name']} | {m['dtype']} | " + " | ".join(cells)
                         + f" | {setup or '—'} |")
        lines.append("")
    return "\n".join(lines)

def plot(rows: Sequence[Dict[str, str]], path: Path) -> bool:
    """Bar charts of the speed-ups: fused roundtrip vs reference per size, and every step
    variant's speed-up over the reference step per critic (and iteration).
    Returns False (and draws nothing) without matplotlib or without rows to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    trips = [(r, s) for r, s in op_speedups(rows) if _op_base(r["name"])[0] == "roundtrip"]
    modes = mode_speedups(rows)
    panels = int(bool(trips)) + int(bool(modes))
    if not panels:
        return False
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.5), squeeze=False)
    ax_iter = iter(axes[0])
    if trips:
        ax = next(ax_iter)
        # Shapes round to whole groups, so sizes are compared by their label.
        by_label = {}
        for r, _ in trips:
            by_label.setdefault(_size_label(int(r["size_bytes"])), int(r["size_bytes"]))
        labels = sorted(by_label, key=by_label.get)
        series = sorted({(_op_base(r["name"])[1], r["dtype"], r["backend"]) for r, _ in trips})
        width = 0.8 / len(series)
        for i, key in enumerate(series):
            vals = {_size_label(int(r["size_bytes"])): s for r, s in trips
                    if (_op_base(r["name"])[1], r["dtype"], r["backend"]) == key}
            xs = [j + i * width for j, lab in enumerate(labels) if lab in vals]
            bars = ax.bar(xs, [vals[lab] for lab in labels if lab in vals], width,
                          label=" ".join(key))
            if len(series) <= 4:
                ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))])
        ax.set_xticklabels(labels)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel("speed-up vs eager reference (x)")
        ax.set_title("GP roundtrip (interpolate + penalty fwd + bwd)")
        ax.legend(fontsize=7)
    if modes:
        ax = next(ax_iter)
        labels = [f"{m['name']}\n{m['dtype']}" for m in modes]
        series = [v for v in STEP_VARIANTS if v != "reference"
                  and any(v in m["variants"] for m in modes)]
        width = 0.8 / len(series)
        for i, v in enumerate(series):
            xs = [j + i * width for j, m in enumerate(modes) if v in m["speedup"]]
            ax.bar(xs, [m["speedup"][v] for m in modes if v in m["speedup"]], width, label=v)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(modes))])
        ax.set_xticklabels(labels, fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel("speed-up over the reference step (x)")
        ax.set_yscale("log" if max(max(m["speedup"].values()) for m in modes) > 5 else "linear")
        ax.set_title("critic steps and iterations by mode")
        ax.legend(fontsize=7)
    fig.suptitle(f"{rows[0]['device']} {rows[0]['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

def _chart(rows: Sequence[Dict[str, str]], path: Path) -> bool:
    """plot(rows, path) and True, or a note on stderr and False where matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        print("no chart: matplotlib is not installed (pip install 'wgangp_fast[bench]')",
              file=sys.stderr)
        return False
    plot(rows, path)
    return True

def _preamble(md_path: Path) -> List[str]:
    """The note lines of an existing results markdown (between its title and first section)."""
    if not md_path.exists():
        return []
    lines = md_path.read_text().splitlines()[1:]
    out = []
    for line in lines:
        if line.startswith("## "):
            break
        if not line.startswith("torch "):
            out.append(line.strip() and line)
    # Blank lines between notes stay (they separate the paragraphs); those around them go.
    while out and not out[0]:
        out.pop(0)
    while out and not out[-1]:
        out.pop()
    return out

def render(csv_path: Path, plot_chart: bool = True) -> str:
    """Rewrite <stem>.md (and <stem>.png) of a results CSV from its rows; returns the markdown."""
    rows = merge_rows([], read_csv(csv_path))
    md_path = csv_path.with_suffix(".md")
    text = markdown(rows, _preamble(md_path))
    md_path.write_text(text + "\n")
    if plot_chart:
        _chart(rows, csv_path.with_suffix(".png"))
    return text
