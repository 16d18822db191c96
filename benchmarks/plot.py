#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Draw shm-bench's round-trip percentiles per transport (log scale) from summary.csv.

usage: plot.py RESULTS_DIR   (reads RESULTS_DIR/summary.csv, writes RESULTS_DIR/rtt.png)

One panel per payload of the back-to-back cases and one for the wake-up case: for each transport, bars for
p50, p99 and p99.9 (medians over the runs), with the p50 bar's min-max over the runs as an error bar.
"""
import csv
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def payload_name(p):
    p = int(p)
    if p >= 1 << 20 and p % (1 << 20) == 0:
        return f"{p >> 20} MiB"
    if p >= 1024 and p % 1024 == 0:
        return f"{p >> 10} KiB"
    return f"{p} B"


def num(s):
    try:
        return float(s)
    except ValueError:
        return math.nan


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "results"
    with open(os.path.join(out_dir, "summary.csv"), newline="") as f:
        rows = list(csv.DictReader(f))

    # The payloads every transport runs at; the extra small-payload cases (shm and the floors) are a table in
    # results.md, not panels.
    main_payloads = {0, 64, 1024, 16384, 1 << 20}
    panels = []
    for p in sorted({int(r["payload"]) for r in rows if r["group"] == "busy"} & main_payloads):
        panels.append((f"back to back, {payload_name(p)} echo",
                       [r for r in rows if r["group"] == "busy" and int(r["payload"]) == p]))
    sleep = [r for r in rows if r["group"] == "sleep"]
    if sleep:
        panels.append(("server asleep before each request, 64 B", sleep))
    if not panels:
        sys.exit("plot.py: no back-to-back or wake-up cases in summary.csv")

    cols = 2
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(14, 4.2 * nrows), squeeze=False)
    colors = {"p50": "#3b75af", "p99": "#ef8636", "p999": "#c33d3e"}
    labels = {"p50": "p50", "p99": "p99", "p999": "p99.9"}
    width = 0.27
    for ax, (title, rs) in zip(axes.flat, panels):
        names = [r["transport"] for r in rs]
        for k, key in enumerate(("p50", "p99", "p999")):
            xs, ys, lo, hi = [], [], [], []
            for i, r in enumerate(rs):
                med = num(r[f"{key}_med"]) / 1e3
                if math.isnan(med) or med <= 0:
                    continue
                xs.append(i + (k - 1) * width)
                ys.append(med)
                lo.append(med - num(r[f"{key}_min"]) / 1e3)
                hi.append(num(r[f"{key}_max"]) / 1e3 - med)
            err = [lo, hi] if key == "p50" else None
            ax.bar(xs, ys, width, color=colors[key], label=labels[key], yerr=err, capsize=2)
        for i, r in enumerate(rs):
            if int(r["runs_ok"] or 0) == 0:
                ax.text(i, 1, "n/a", ha="center", va="bottom", fontsize=8, rotation=90)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_ylabel("round trip, µs (log)")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("shm-bench: round-trip time per transport (median of runs; p50 bar shows min–max)")
    fig.tight_layout()
    path = os.path.join(out_dir, "rtt.png")
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
