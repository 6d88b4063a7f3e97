#!/usr/bin/env python3
"""set_workers.py < LINES: replace the body of [synapse.workers] in /root/host.toml with stdin (the
workers scenario's layouts). Runs inside the guest."""
import re
import sys

path = "/root/host.toml"
text = open(path).read()
text, n = re.subn(r"(?ms)^\[synapse\.workers\]\n.*?(?=^\[)", "[synapse.workers]\n" + sys.stdin.read() + "\n", text)
if n != 1:
    sys.exit("set_workers.py: no [synapse.workers] section followed by another in " + path)
open(path, "w").write(text)
