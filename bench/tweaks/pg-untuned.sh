#!/bin/bash
# bench/load tweak: PostgreSQL with Debian's defaults (the tuning fragment removed).
set -euo pipefail
rm -f /etc/postgresql/*/main/conf.d/matrix-provision.conf
systemctl restart postgresql
systemctl restart matrix-synapse
for _ in $(seq 1 300); do curl -fsS -o /dev/null http://127.0.0.1:8008/health && exit 0; sleep 1; done
exit 1
