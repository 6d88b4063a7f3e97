#!/usr/bin/env python3
"""Summarize a bench/fresh-install output directory as Markdown: medians per variant, the ratios the issue
sets targets for, and where apply's time goes (slowest steps, critical path, overlap).

    summarize.py OUTDIR

Only runs that passed the full client check count. Standard library only.
"""

import glob
import json
import os
import statistics
import sys


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, unit="s"):
    return "—" if x is None else f"{x:.2f} {unit}" if unit == "s" else f"{x:.1f} {unit}"


def main():
    out = sys.argv[1]
    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "*-[0-9]*.json"))) if not p.endswith(".apply.json")]
    variants = sorted({r["variant"] for r in runs}, key=["apply", "apply-jobs1", "manual"].index)
    med = {}
    print("| variant | runs ok | install (median) | time to first message (median) | no-op rerun | peak RSS | all runs (install s) |")
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        rs = [r for r in runs if r["variant"] == v]
        ok = [r for r in rs if r["ok"]]
        med[v] = {k: median([r.get(k) for r in ok]) for k in ("install_s", "first_message_s", "noop_s", "peak_rss_mb")}
        peak = max((r["peak_rss_mb"] for r in ok), default=None)
        every = ", ".join(f"{r['install_s']:.1f}{'' if r['ok'] else ' (failed)'}" for r in sorted(rs, key=lambda r: r["run"]))
        print(
            f"| {v} | {len(ok)}/{len(rs)} | {fmt(med[v]['install_s'])} | {fmt(med[v]['first_message_s'])} | "
            f"{fmt(med[v]['noop_s'])} | {fmt(peak, 'MB') if v != 'manual' else '—'} | {every} |"
        )
    print()

    def ratio(a, b, key):
        if a in med and b in med and med[a][key] and med[b][key]:
            return f"{med[a][key] / med[b][key]:.2f}×"
        return "—"

    print(f"- apply / manual script, install: {ratio('apply', 'manual', 'install_s')} (target ≤ 0.8×); "
          f"time to first message: {ratio('apply', 'manual', 'first_message_s')}")
    print(f"- apply / apply --jobs 1 (before/after the concurrent engine), install: {ratio('apply', 'apply-jobs1', 'install_s')}")
    print()

    for v in ("apply", "apply-jobs1"):
        docs = []
        for p in sorted(glob.glob(os.path.join(out, f"{v}-[0-9]*.apply.json"))):
            try:
                docs.append(json.load(open(p)))
            except ValueError:
                pass
        if not docs:
            continue
        steps = {}
        for d in docs:
            for s in d["steps"]:
                steps.setdefault(s["id"], []).append(s["millis"])
        ms = {k: statistics.median(v) for k, v in steps.items()}
        walls = [d.get("wall_ms") for d in docs if d.get("wall_ms")]
        print(f"### {v}: where the time goes (median over {len(docs)} runs)")
        print()
        if walls:
            print(f"- engine wall time {statistics.median(walls) / 1000:.1f} s; sum of step times "
                  f"{sum(ms.values()) / 1000:.1f} s (the difference is what ran at the same time)")
        # The apt transaction is the same work in every variant and swings most with the host's load:
        # the time outside it shows the engine's part with less noise.
        apt = [next(s["millis"] for s in d["steps"] if s["id"] == "packages") for d in docs]
        rest = [d["wall_ms"] - a for d, a in zip(docs, apt) if d.get("wall_ms")]
        print(f"- the apt transaction (`packages`) per run: {', '.join(f'{a / 1000:.0f} s' for a in apt)}; "
              f"wall time outside it: {', '.join(f'{r / 1000:.0f} s' for r in rest)} (median {statistics.median(rest) / 1000:.1f} s)")
        cp = docs[-1].get("critical_path") or []
        if cp:
            print(f"- critical path ({sum(ms.get(i, 0) for i in cp) / 1000:.1f} s): "
                  + " → ".join(f"{i} {ms.get(i, 0) / 1000:.1f}" for i in cp))
        print("- slowest steps and handlers: "
              + ", ".join(f"{k} {v / 1000:.1f} s" for k, v in sorted(ms.items(), key=lambda kv: -kv[1])[:10]))
        print()


if __name__ == "__main__":
    main()
