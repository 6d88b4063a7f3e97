#!/bin/bash
# bench/load tweak: Synapse on glibc's malloc again (the jemalloc drop-in removed; cache autotuning, which
# reads jemalloc's statistics, then does nothing).
set -euo pipefail
rm -f /etc/systemd/system/matrix-synapse.service.d/matrix-provision-jemalloc.conf
systemctl daemon-reload
systemctl restart matrix-synapse
for _ in $(seq 1 300); do curl -fsS -o /dev/null http://127.0.0.1:8008/health && exit 0; sleep 1; done
exit 1
