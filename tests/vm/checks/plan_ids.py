#!/usr/bin/env python3
"""plan_ids.py < plan.json: the ids of the steps a `plan --json` (or `apply --json`) would change or changed,
one per line. Runs inside the guest."""
import json
import sys

doc = json.load(sys.stdin)
for step in doc.get("steps", []):
    if str(step.get("status", "")).lower() in ("planned", "changed"):
        print(step["id"])
