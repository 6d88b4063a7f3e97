#!/bin/bash
# bench/load tweak: Synapse's cache settings back to its defaults (global_factor 0.5, no autotuning).
set -euo pipefail
rm -f /etc/matrix-synapse/conf.d/mp-caches.yaml
systemctl restart matrix-synapse
for _ in $(seq 1 300); do curl -fsS -o /dev/null http://127.0.0.1:8008/health && exit 0; sleep 1; done
exit 1
