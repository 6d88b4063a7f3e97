#!/bin/bash
# bench/load tweak: Synapse reaches PostgreSQL over TCP with TLS again (libpq's default sslmode=prefer
# against Debian's ssl = on), as before issue 17.
set -euo pipefail
f=/etc/matrix-synapse/conf.d/mp-database.yaml
sed -i '/sslmode:/d' "$f"
systemctl restart matrix-synapse
for _ in $(seq 1 300); do curl -fsS -o /dev/null http://127.0.0.1:8008/health && exit 0; sleep 1; done
exit 1
