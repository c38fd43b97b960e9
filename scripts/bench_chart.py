#!/usr/bin/env python3
"""Draw the jetsocket / raw tungstenite ratios of a benchmark run as an SVG bar chart.

    cargo bench --bench compare
    python3 scripts/bench_chart.py                       # target/bench-results.json -> docs/bench-ratios.svg
    python3 scripts/bench_chart.py results.json out.svg

Each row is drawn as "how jetsocket compares with raw tungstenite" on a logarithmic scale
centred on 1 (parity). The scale is oriented so that bars to the right are always better for
jetsocket: throughput rows plot jetsocket / raw, cost rows (latency, CPU, memory) plot
raw / jetsocket. The label on the right repeats the ratio exactly as the benchmark table prints
it (jetsocket / raw) and the row's target status. Rows where the two sides do different work
("like_for_like": false, the compressed JSON rows: raw tungstenite cannot compress) are left
out: their ratio prices a feature rather than the client's overhead. Standard library only.
"""

import json
import math
import sys
from html import escape

WIDTH = 960
ROW_H = 26
LEFT = 330  # label column
RIGHT = 230  # value column
TOP = 78
SPAN = 8.0  # the axis runs from 1/SPAN to SPAN


def main() -> int:
    src = sys.argv[1] if len(sys.argv) > 1 else "target/bench-results.json"
    dst = sys.argv[2] if len(sys.argv) > 2 else "docs/bench-ratios.svg"
    with open(src, encoding="utf-8") as f:
        data = json.load(f)
    rows = [
        r
        for r in data["rows"]
        if r.get("ratio") is not None and r.get("like_for_like", True)
    ]
    svg = render(data, rows)
    with open(dst, "w", encoding="utf-8") as f:
        f.write(svg)
    print(f"wrote {dst} ({len(rows)} rows)")
    return 0


def render(data, rows) -> str:
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + ROW_H * len(rows) + 70
    centre = LEFT + plot_w / 2
    half = plot_w / 2

    def x_of(better: float) -> float:
        """x position of a 'better for jetsocket' factor (1 = parity), clamped to the axis."""
        v = max(min(math.log(better) / math.log(SPAN), 1.0), -1.0)
        return centre + v * half

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" '
        f'font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="{WIDTH / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">'
        f"jetsocket compared with raw tungstenite (same loopback server, same run)</text>",
        f'<text x="{WIDTH / 2}" y="44" text-anchor="middle" fill="#555">'
        f'{escape(str(data.get("date", "")))}, {data.get("cores", "?")} cores, '
        f'{escape(str(data.get("mode", "")))} mode, medians of {data.get("repetitions", "?")} '
        f"repetitions; right of the centre line = jetsocket better</text>",
    ]
    # Grid lines at 1/3, 1/2, 1, 2, 3 (log scale).
    for g in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8):
        x = x_of(g)
        label = "parity" if g == 1 else (f"{g:g}x better" if g > 1 else f"{1 / g:g}x worse")
        stroke = "#333" if g == 1 else "#ddd"
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP - 8}" x2="{x:.1f}" y2="{TOP + ROW_H * len(rows)}" '
            f'stroke="{stroke}" stroke-width="{1.5 if g == 1 else 1}"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{TOP - 12}" text-anchor="middle" fill="#777" font-size="10">'
            f"{label}</text>"
        )
    for i, r in enumerate(rows):
        y = TOP + i * ROW_H
        ratio = r["ratio"]
        better = ratio if r.get("higher_is_better") else (1 / ratio if ratio else float("inf"))
        x = x_of(better)
        colour = "#2e8b57" if better >= 1 else "#d2691e"
        if i % 2 == 0:
            out.append(
                f'<rect x="0" y="{y}" width="{WIDTH}" height="{ROW_H}" fill="#f6f6f6"/>'
            )
        out.append(
            f'<text x="{LEFT - 10}" y="{y + 17}" text-anchor="end">{escape(r["label"])}</text>'
        )
        left, right = sorted((centre, x))
        out.append(
            f'<rect x="{left:.1f}" y="{y + 6}" width="{max(right - left, 1):.1f}" '
            f'height="{ROW_H - 12}" fill="{colour}"/>'
        )
        if abs(math.log(better)) > math.log(SPAN):
            # Off the scale: mark the clipped end.
            tip = x + (-8 if better > 1 else 8)
            out.append(
                f'<text x="{tip:.1f}" y="{y + 17}" text-anchor="middle" fill="#ffffff" '
                f'font-weight="bold">{"»" if better > 1 else "«"}</text>'
            )
        status = r.get("target_met")
        mark = {True: "target met", False: "target missed", None: ""}[status]
        mark_colour = {True: "#2e8b57", False: "#c0392b", None: "#555"}[status]
        out.append(
            f'<text x="{WIDTH - RIGHT + 12}" y="{y + 17}">{ratio:.2f}x'
            f'<tspan fill="{mark_colour}" dx="8">{mark}</tspan></text>'
        )
    foot = TOP + ROW_H * len(rows) + 26
    out.append(
        f'<text x="{WIDTH / 2}" y="{foot}" text-anchor="middle" fill="#555" font-size="11">'
        "Numbers on the right: jetsocket / raw as printed by the benchmark (for msg/s and MB/s "
        "higher is better; for time, CPU and memory lower is better).</text>"
    )
    out.append(
        f'<text x="{WIDTH / 2}" y="{foot + 18}" text-anchor="middle" fill="#555" font-size="11">'
        "Generated by scripts/bench_chart.py from cargo bench --bench compare; see BENCHMARKS.md."
        "</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
