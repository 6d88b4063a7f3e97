#!/bin/bash
# bench/load tweak (issue 13): the smallest worker layout that takes load off the main process on a small
# host: one sync and one client worker (as bench/tweaks/workers.sh, with these counts).
set -euo pipefail
counts=$'sync = 1\nclient = 1'
python3 - "$counts" <<'PY'
import re, sys
p = "/root/host.toml"
s = open(p).read()
body = 'mode = "auto"\n' + sys.argv[1] + "\n"
s, n = re.subn(r"(?ms)^\[synapse\.workers\]\n.*?(?=^\[)", "[synapse.workers]\n" + body + "\n", s)
assert n == 1, "no [synapse.workers] section in host.toml"
open(p, "w").write(s)
PY
matrix-provision apply /root/host.toml
systemctl is-active matrix-synapse.target
