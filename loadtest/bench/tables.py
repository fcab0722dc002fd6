#!/usr/bin/env python3
"""BENCHMARKS.md's simulation tables and plot, from scale-run reports.

    loadtest/bench/tables.py DIR [--svg FILE]

DIR holds the JSON reports of `vipfleet-sim --report` (loadtest/bench/sim.sh
writes them). Prints one markdown table per scenario, both systems side by
side, and with --svg draws restoration time (p50 and max over the lost
shards) against shards moved, beside the bound the account's EC2 bucket
sets. Standard library only: the plot is plain SVG.
"""

import argparse
import json
import pathlib
import sys

# The account's EC2 bucket for mutating calls, as the simulation models it.
BUCKET_BURST = 50
BUCKET_REFILL_PER_S = 5.0


def load(folder):
    reports = []
    for path in sorted(pathlib.Path(folder).glob("*.json")):
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            sys.exit(f"tables: cannot read {path}: {err}")
        report.setdefault("system", "vipfleet")
        report["_file"] = path.name
        reports.append(report)
    if not reports:
        sys.exit(f"tables: no reports (*.json) in {folder}")
    return reports


def seconds(ms):
    return "—" if ms is None else f"{ms / 1000:.1f}"


def usd(value):
    return "—" if value is None else f"${value:,.2f}"


def units(window):
    if not window:
        return "—"
    return f"{window['read_units_per_s']:,.1f} / {window['write_units_per_s']:,.1f}"


def row(report):
    restored = report.get("restoration") or {}
    moves = report["moves"]
    dynamo = report["dynamodb"]
    ec2 = report["ec2"]
    speed = report["speed"]
    return [
        report["system"],
        f"{report['nodes']:,} / {report['shards']:,}",
        "/".join(seconds(restored.get(k)) for k in ("p50_ms", "p99_ms", "max_ms")) if restored else "—",
        seconds(restored.get("bound_ms")) if restored else "—",
        f"{moves['during_event'] + moves['at_rest']:,} / {moves['minimum']:,}",
        units(dynamo.get("at_rest")),
        usd((dynamo.get("at_rest") or {}).get("usd_per_month_on_demand")),
        units(dynamo.get("during_event")),
        f"{ec2['mutating_calls_event']:,} ({ec2['bucket_delay_s']:.1f} s)",
        f"{speed['times_real_time']:,.0f}x ({speed['wall_s']:.1f} s)",
        f"`{report['_file']}`",
    ]


HEADER = [
    "system",
    "nodes / shards",
    "restoration p50/p99/max s",
    "bound s",
    "moves / minimum",
    "RCU/s / WCU/s at rest",
    "at rest $/month",
    "RCU/s / WCU/s during",
    "EC2 calls (bucket delay)",
    "speed (wall)",
    "report",
]


def tables(reports):
    lines = []
    for scenario in sorted({r["scenario"] for r in reports}):
        chosen = [r for r in reports if r["scenario"] == scenario]
        chosen.sort(key=lambda r: (r["nodes"], r["shards"], r["system"] != "vipfleet"))
        lines.append(f"#### {scenario}\n")
        lines.append("| " + " | ".join(HEADER) + " |")
        lines.append("|" + "---|" * len(HEADER))
        for report in chosen:
            broken = report.get("violations") or []
            cells = row(report)
            if broken:
                cells[0] += f" ({len(broken)} violations)"
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(reports, path):
    points = [r for r in reports if r.get("restoration") and r["restoration"]["shards"] > 0]
    if not points:
        sys.exit("tables: no report with a restoration to plot")
    width, height, margin = 720, 440, 60
    max_x = max(r["restoration"]["shards"] for r in points) * 1.1
    max_y = max(max(r["restoration"]["max_ms"], r["restoration"]["bound_ms"]) for r in points) / 1000 * 1.1

    def x(shards):
        return margin + (width - 2 * margin) * shards / max_x

    def y(secs):
        return height - margin - (height - 2 * margin) * secs / max_y

    colours = {"vipfleet": "#1f77b4", "kcl": "#d62728"}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{margin}" y1="{height - margin}" x2="{width - margin}" y2="{height - margin}" stroke="black"/>',
        f'<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{height - margin}" stroke="black"/>',
        f'<text x="{width / 2}" y="{height - 15}" text-anchor="middle">shards moved (one route table: one EC2 call each)</text>',
        f'<text x="15" y="{height / 2}" transform="rotate(-90 15 {height / 2})" text-anchor="middle">restoration (s)</text>',
    ]
    for i in range(6):
        sx, sy = max_x * i / 5, max_y * i / 5
        out.append(f'<text x="{x(sx)}" y="{height - margin + 16}" text-anchor="middle">{sx:.0f}</text>')
        out.append(f'<text x="{margin - 6}" y="{y(sy) + 4}" text-anchor="end">{sy:.0f}</text>')
    # The bucket alone: calls beyond the burst wait for its refill.
    bucket = " ".join(
        f"{x(n):.1f},{y(max(0, n - BUCKET_BURST) / BUCKET_REFILL_PER_S):.1f}" for n in range(0, int(max_x) + 1, max(1, int(max_x) // 100))
    )
    out.append(f'<polyline points="{bucket}" fill="none" stroke="gray" stroke-dasharray="4 3"/>')
    out.append(f'<text x="{width - margin}" y="{margin - 8}" text-anchor="end" fill="gray">dashed: (calls − 50) / 5 s, the bucket alone</text>')
    for report in points:
        colour = colours.get(report["system"], "black")
        shards = report["restoration"]["shards"]
        p50 = report["restoration"]["p50_ms"] / 1000
        worst = report["restoration"]["max_ms"] / 1000
        label = f"{report['system']} {report['scenario']} {report['nodes']}/{report['shards']}"
        out.append(f'<line x1="{x(shards):.1f}" y1="{y(p50):.1f}" x2="{x(shards):.1f}" y2="{y(worst):.1f}" stroke="{colour}"/>')
        out.append(f'<circle cx="{x(shards):.1f}" cy="{y(p50):.1f}" r="4" fill="{colour}"><title>{label}: p50 {p50:.1f} s</title></circle>')
        out.append(f'<rect x="{x(shards) - 3:.1f}" y="{y(worst) - 3:.1f}" width="6" height="6" fill="{colour}"><title>{label}: max {worst:.1f} s</title></rect>')
    legend_y = margin
    for system, colour in colours.items():
        if any(r["system"] == system for r in points):
            out.append(f'<circle cx="{margin + 12}" cy="{legend_y}" r="4" fill="{colour}"/>')
            out.append(f'<text x="{margin + 22}" y="{legend_y + 4}">{system}: dot p50, square max</text>')
            legend_y += 16
    out.append("</svg>")
    pathlib.Path(path).write_text("\n".join(out) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--svg", help="write the restoration plot here")
    args = parser.parse_args()
    reports = load(args.folder)
    print(tables(reports))
    if args.svg:
        plot(reports, args.svg)
        print(f"plot: {args.svg}", file=sys.stderr)


if __name__ == "__main__":
    main()
