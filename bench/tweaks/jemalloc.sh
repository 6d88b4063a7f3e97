#!/bin/bash
# bench/load tweak: Synapse on jemalloc (Debian's libjemalloc2 preloaded by a drop-in, as Synapse's docs
# recommend). Measured on and then dropped from the product (bench/RESULTS.md); kept to measure it again.
# apply does not remove this drop-in: with --same-guest, list apply:jemalloc last.
set -euo pipefail
DEBIAN_FRONTEND=noninteractive apt-get install -y -q libjemalloc2 >/dev/null
mkdir -p /etc/systemd/system/matrix-synapse.service.d
printf '[Service]\nEnvironment=LD_PRELOAD=libjemalloc.so.2\n' >/etc/systemd/system/matrix-synapse.service.d/bench-jemalloc.conf
systemctl daemon-reload
systemctl restart matrix-synapse
for _ in $(seq 1 300); do curl -fsS -o /dev/null http://127.0.0.1:8008/health && break; sleep 1; done
grep -q jemalloc "/proc/$(systemctl show -p MainPID --value matrix-synapse)/maps"
