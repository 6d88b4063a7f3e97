#!/usr/bin/env python3
"""Summarize a bench/load output directory as Markdown: per variant the medians over its runs, every run's
messages/s, and the ratios to the SQLite package default (and, for apply:TWEAK, to apply).

    load-summary.py OUTDIR
    load-summary.py --record RESULTS.md OUTDIR   (replace the text between the bench/load markers, or append)
    load-summary.py --line RUN.json              (one run in one line)

Standard library only.
"""

import glob
import json
import os
import statistics
import sys

BEGIN, END = "<!-- bench/load summary: begin -->", "<!-- bench/load summary: end -->"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def g(d, path):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


COLS = [
    ("msg/s", "msg_per_s", "{:.1f}", "hi"),
    ("send p50 ms", "send_latency.p50_ms", "{:.0f}", "lo"),
    ("send p95 ms", "send_latency.p95_ms", "{:.0f}", "lo"),
    ("send p99 ms", "send_latency.p99_ms", "{:.0f}", "lo"),
    ("/sync p50 ms", "sync_delivery_latency.p50_ms", "{:.0f}", "lo"),
    ("/sync p99 ms", "sync_delivery_latency.p99_ms", "{:.0f}", "lo"),
    ("errors", "error_count", "{:.0f}", "lo"),
    ("undelivered", "undelivered", "{:.0f}", "lo"),
    ("Synapse CPU ms/msg", "cpu_ms_per_msg.synapse", "{:.1f}", "lo"),
    ("PG CPU ms/msg", "cpu_ms_per_msg.postgresql", "{:.1f}", "lo"),
    ("Synapse peak RSS MB", "memory.synapse_peak_rss_mb_total", "{:.0f}", "lo"),
    ("PG peak PSS MB", "memory.postgresql_peak_pss_mb", "{:.0f}", "lo"),
    ("Redis peak PSS MB", "memory.redis_peak_pss_mb", "{:.0f}", "lo"),
    ("rooms created/s", "rooms_phase.per_s", "{:.1f}", "hi"),
    ("1st initial sync s", "rooms_phase.initial_sync_s.0", "{:.2f}", "lo"),
]


def get(d, path):
    if path.endswith(".0"):
        v = g(d, path[:-2])
        return v[0] if isinstance(v, list) and v else None
    return g(d, path)


def summary(out):
    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "*-[0-9]*.json")))]
    runs = [r for r in runs if "variant" in r]
    lines = []
    hdr = os.path.join(out, "header.txt")
    if os.path.exists(hdr):
        lines += [f"    {line.rstrip()}" for line in open(hdr)] + [""]
    if not runs:
        return "\n".join(lines + ["no completed runs"])
    order = []
    for r in sorted(runs, key=lambda r: r["run"]):
        if r["variant"] not in order:
            order.append(r["variant"])
    cols = [c for c in COLS if any(get(r, c[1]) is not None for r in runs)]
    medians = {}
    lines.append("| variant | runs | " + " | ".join(c[0] for c in cols) + " | msg/s per run |")
    lines.append("|---|---|" + "---|" * len(cols) + "---|")
    for v in order:
        rs = sorted([r for r in runs if r["variant"] == v], key=lambda r: r["run"])
        medians[v] = {c[1]: med([get(r, c[1]) for r in rs]) for c in cols}
        cells = ["—" if medians[v][c[1]] is None else c[2].format(medians[v][c[1]]) for c in cols]
        per = ", ".join(f"{r['msg_per_s']:.1f}" for r in rs)
        lines.append(f"| {v} | {len(rs)} | " + " | ".join(cells) + f" | {per} |")
    lines.append("")

    def ratios(a, b):
        out = []
        for name, key in (("msg/s", "msg_per_s"), ("send p99", "send_latency.p99_ms"),
                          ("/sync p99", "sync_delivery_latency.p99_ms"), ("Synapse CPU/msg", "cpu_ms_per_msg.synapse"),
                          ("rooms/s", "rooms_phase.per_s")):
            x, y = medians[a].get(key), medians[b].get(key)
            if x and y:
                out.append(f"{name} {x / y:.2f}×")
        return f"- {a} / {b}: " + ", ".join(out) if out else None

    for v in order:
        base = "apply" if v.startswith("apply:") and "apply" in medians else "sqlite" if v != "sqlite" and "sqlite" in medians else None
        if base:
            r = ratios(v, base)
            if r:
                lines.append(r)
    return "\n".join(lines)


def line(path):
    d = json.load(open(path))
    s, y = d["send_latency"], d["sync_delivery_latency"]
    return (f"{d['variant']}: {d['msg_per_s']} msg/s, send p50/p99 {s['p50_ms']}/{s['p99_ms']} ms, "
            f"/sync delivery p99 {y['p99_ms']} ms, errors {d['error_count']}, undelivered {d['undelivered']}, "
            f"Synapse CPU {d['cpu_ms_per_msg'].get('synapse')} ms/msg")


def main():
    args = sys.argv[1:]
    if args[:1] == ["--line"]:
        print(line(args[1]))
        return
    if args[:1] == ["--record"]:
        results, out = args[1], args[2]
        text = open(results).read() if os.path.exists(results) else ""
        block = f"{BEGIN}\n{summary(out)}\n{END}"
        if BEGIN in text and END in text:
            text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n## Load (bench/load, issues 13 and 17)\n\n" + block + "\n"
        open(results, "w").write(text)
        return
    print(summary(args[0]))


if __name__ == "__main__":
    main()
