#!/usr/bin/env python3
"""bench/plots.py - PNGs from the bench's CSV tables (bench --map --out DIR),
drawn by gnuplot (Debian: gnuplot-nox); only the Python standard library.

  python3 bench/plots.py DIR [OUTDIR] [--title "machine words"]

Writes into OUTDIR (default DIR):
  speed_vs_length.png    prefill GFLOP/s against sequence length, per path and
                         mode, 1 thread and all threads (suite_prefill.csv)
  decode_vs_context.png  decode tokens/s and GB/s against context, per KV
                         storage (suite_decode.csv)
  memory_vs_length.png   bytes against length: naive, tiled per dtype, KV cache
                         per storage (memory.csv)
  pareto.png             every configuration of the planner's space, time x
                         memory with error as colour, the Pareto frontier
                         joined (pareto.csv)
A table that is missing is skipped with a line; no gnuplot: one line, exit 0.
"""
import csv
import math
import os
import shutil
import subprocess
import sys


def read(path):
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(x):
    try:
        v = float(x)
        return v if math.isfinite(v) else None
    except (TypeError, ValueError):
        return None


def block(name, rows):
    return f"${name} << EOD\n" + "\n".join(" ".join(str(c) for c in r) for r in rows) + "\nEOD\n"


def esc(s):
    return s.replace('"', "'")


def plot_series(s, prefix, series, style=lambda key: ""):
    """Appends each series' data block to s (named prefix + index, in key
    order) and returns the gnuplot command that draws them all."""
    plots = []
    for i, (k, pts) in enumerate(sorted(series.items())):
        s.append(block(f"{prefix}{i}", sorted(pts)))
        plots.append(f'${prefix}{i} using 1:2 with linespoints {style(k)}title "{esc(k)}"')
    return "plot " + ", ".join(plots) if plots else "plot NaN notitle"


def speed_plot(rows, out, title):
    if not rows:
        return None
    threads = sorted({int(r["threads"]) for r in rows})
    panels = [threads[0]] + ([threads[-1]] if len(threads) > 1 else [])
    s = [f'set terminal pngcairo size 1400,{560 * len(panels)} font ",11" noenhanced', f'set output "{out}"',
         f"set multiplot layout {len(panels)},1 title \"{esc(title)}\"", "set logscale x 2", "set grid",
         'set xlabel "sequence length (Lq = Lk, causal)"', 'set ylabel "GFLOP/s (visible pairs)"',
         "set key outside right"]
    for t in panels:
        series = {}
        for r in rows:
            if int(r["threads"]) != t:
                continue
            key = f'{r["config"]} {r["path"]} {r["mode"]}'
            g = num(r["gflops"])
            if g is not None:
                series.setdefault(key, []).append((int(r["L"]), g))
        cmd = plot_series(s, f"s{t}_", series,
                          lambda k: "dt 2 " if ("naive" in k or "torch" in k or "ctypes" in k) else "dt 1 ")
        s.append(f'set title "{t} thread{"s" if t > 1 else ""}"')
        s.append(cmd)
    s.append("unset multiplot")
    return "\n".join(s)


def decode_plot(rows, out, title):
    if not rows:
        return None
    t = max(int(r["threads"]) for r in rows)
    s = [f'set terminal pngcairo size 1400,560 font ",11" noenhanced', f'set output "{out}"',
         f'set multiplot layout 1,2 title "{esc(title)}: decode, one token, {t} threads"', "set logscale x 2",
         "set grid", 'set xlabel "context (tokens)"', "set key outside bottom center horizontal"]
    for col, label in (("tok_per_s", "tokens/s (one attention layer)"), ("GBps", "K/V GB/s read")):
        series = {}
        for r in rows:
            if int(r["threads"]) != t:
                continue
            v = num(r[col])
            if v is not None:
                series.setdefault(f'{r["config"]} {r["path"]} kv-{r["storage"]}', []).append((int(r["ctx"]), v))
        cmd = plot_series(s, f"d{col}", series)
        s.append(f'set ylabel "{label}"')
        s.append(cmd)
    s.append("unset multiplot")
    return "\n".join(s)


def memory_plot(rows, out, title):
    if not rows:
        return None
    cols = [c for c in rows[0].keys() if c != "L"]
    s = [f'set terminal pngcairo size 1100,650 font ",11" noenhanced', f'set output "{out}"',
         f'set title "{esc(title)}: memory of one OLMo-2-7B attention layer (32 heads, head_dim 128)"',
         "set logscale xy 2", "set grid", 'set xlabel "sequence length / context (tokens)"',
         'set ylabel "MiB"', "set key top left"]
    plots = []
    for i, c in enumerate(cols):
        pts = [(int(r["L"]), num(r[c]) / 1048576.0) for r in rows if num(r[c]) and num(r[c]) > 0]
        s.append(block(f"m{i}", pts))
        label = {"naive_f32": "naive F32 (q,k,v,out + L x L scores per thread)"}.get(c, c.replace("_", " "))
        style = "dt 2" if c.startswith("kv") else "dt 1"
        plots.append(f'$m{i} using 1:2 with linespoints {style} title "{esc(label)}"')
    s.append("plot " + ", ".join(plots))
    return "\n".join(s)


def pareto_plot(rows, out, title):
    if not rows:
        return None
    probs = []
    for r in rows:
        if r["problem"] not in probs:
            probs.append(r["problem"])
    s = [f'set terminal pngcairo size 1400,{560 * ((len(probs) + 1) // 2)} font ",11" noenhanced', f'set output "{out}"',
         f"set multiplot layout {(len(probs) + 1) // 2},{min(2, len(probs))} title \"{esc(title)}: time x memory x error,"
         " every configuration the planner considers (measured)\"",
         "set logscale xy", "set grid", 'set xlabel "median time per call (s)"', 'set ylabel "memory (MiB)"',
         'set cblabel "log10 rel. L2 error vs float64"', "set palette rgb 33,13,10", "set key bottom left"]
    for pi, p in enumerate(probs):
        pts, front = [], []
        for r in rows:
            if r["problem"] != p:
                continue
            t, b, e = num(r["median_s"]), num(r["bytes"]), num(r["rel_l2"])
            if t is None or b is None or e is None:
                continue
            row = (t, b / 1048576.0, math.log10(max(e, 1e-9)), r["config"].replace(" ", "_"))
            pts.append(row)
            if r["frontier"] == "1":
                front.append(row)
        front.sort()
        # the time x memory frontier (any error): a staircase through the fastest point of each memory
        stair, best = [], float("inf")
        for t, b, e, name in sorted(pts):
            if b < best:
                stair.append((t, b))
                best = b
        s.append(block(f"p{pi}", pts))
        s.append(block(f"f{pi}", front))
        s.append(block(f"t{pi}", stair))
        s.append(f'set title "{esc(p)}: {len(front)} of {len(pts)} on the time x memory x error frontier"')
        s.append(f"plot $p{pi} using 1:2:3 with points pt 7 ps 0.7 lc palette notitle, "
                 f'$t{pi} using 1:2 with steps lc rgb "gray40" title "time x memory frontier (any error)", '
                 f'$f{pi} using 1:2 with points pt 6 ps 1.8 lc rgb "black" title "on the 3-way frontier"')
    s.append("unset multiplot")
    return "\n".join(s)


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    title = "sdpa.h"
    if "--title" in argv:
        i = argv.index("--title")
        title = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    src = argv[0]
    dst = argv[1] if len(argv) > 1 else src
    if not shutil.which("gnuplot"):
        print("plots: skipped: gnuplot is not installed (Debian: apt-get install gnuplot-nox)")
        return 0
    os.makedirs(dst, exist_ok=True)
    jobs = [("suite_prefill.csv", "speed_vs_length.png", speed_plot),
            ("suite_decode.csv", "decode_vs_context.png", decode_plot),
            ("memory.csv", "memory_vs_length.png", memory_plot),
            ("pareto.csv", "pareto.png", pareto_plot)]
    bad = 0
    for table, png, fn in jobs:
        rows = read(os.path.join(src, table))
        if not rows:
            print(f"plots: {png}: skipped, no {os.path.join(src, table)}")
            continue
        script = fn(rows, os.path.join(dst, png), title)
        r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
        if r.returncode != 0:
            print(f"plots: {png}: gnuplot failed:\n{r.stderr}")
            bad = 1
        else:
            print(f"plots: wrote {os.path.join(dst, png)}")
    return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
