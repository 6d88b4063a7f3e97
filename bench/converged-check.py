#!/usr/bin/env python3
"""Runs INSIDE a converged guest: times `matrix-provision plan` (the check phase of every step) and its peak RSS.

Targets (issue 2): whole check phase under 1 s wall on a converged host; peak RSS under 30 MB.
Usage: converged-check.py HOST_TOML [RUNS]   (prints one JSON line; exit 1 if a target is missed)
"""
import json
import resource
import statistics
import subprocess
import sys
import time

host_toml = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
walls = []
slowest = {}
for _ in range(runs):
    start = time.monotonic()
    out = subprocess.run(["matrix-provision", "plan", "--json", host_toml], capture_output=True, text=True)
    walls.append(time.monotonic() - start)
    if out.returncode != 0:
        print(json.dumps({"error": f"plan exited {out.returncode} on a host that should be converged", "stdout": out.stdout[-2000:], "stderr": out.stderr[-2000:]}))
        sys.exit(1)
    for step in json.loads(out.stdout)["steps"]:
        slowest[step["id"]] = max(slowest.get(step["id"], 0), step["millis"])
# ru_maxrss of children is in KiB on Linux: the largest of all runs.
peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
result = {
    "runs": runs,
    "wall_median_s": round(statistics.median(walls), 3),
    "wall_max_s": round(max(walls), 3),
    "peak_rss_mb": round(peak_rss_mb, 1),
    "slowest_steps_ms": dict(sorted(slowest.items(), key=lambda kv: -kv[1])[:5]),
    "targets": {"wall_s": 1.0, "rss_mb": 30},
}
print(json.dumps(result))
sys.exit(0 if result["wall_median_s"] < 1.0 and peak_rss_mb < 30 else 1)
