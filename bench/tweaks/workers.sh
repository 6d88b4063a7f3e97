#!/bin/bash
# bench/load tweak (issue 13): Synapse workers on the converged server, through host.toml and apply (what an
# admin does): the layout `auto` picks on a 4-CPU host (media, sync, federation, client, federation sender,
# background), forced by explicit counts because auto picks none on 2 CPUs. MP_BENCH_WORKERS overrides the
# counts ("sync = 1" lines). The next variant's apply of the base host.toml turns them off again.
set -euo pipefail
counts=${MP_BENCH_WORKERS:-$'media = 1\nsync = 1\nfederation = 1\nclient = 1\nfederation_sender = 1\nbackground = 1'}
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
