#!/bin/bash
# bench/load tweak: Synapse reaches PostgreSQL over its Unix socket (scram, the same role and password):
# a pg_hba.conf line ahead of Debian's `local all all peer`, and `host: /var/run/postgresql`.
set -euo pipefail
hba=$(ls /etc/postgresql/*/main/pg_hba.conf)
grep -q '^local synapse synapse scram-sha-256' "$hba" || sed -i '0,/^local/s//local synapse synapse scram-sha-256\nlocal/' "$hba"
systemctl reload postgresql
f=/etc/matrix-synapse/conf.d/mp-database.yaml
sed -i -e '/sslmode:/d' -e 's|^\( *host:\).*|\1 /var/run/postgresql|' "$f"
systemctl restart matrix-synapse
for _ in $(seq 1 300); do curl -fsS -o /dev/null http://127.0.0.1:8008/health && exit 0; sleep 1; done
exit 1
