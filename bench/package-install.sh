#!/bin/bash
# bench/package-install.sh: the baselines bench/load measures the converged server against, inside a fresh
# test guest (offline stand-ins: the signed matrix.org apt repo on 127.0.0.1:8099).
#   sqlite    `apt install matrix-synapse-py3` and nothing else: the package's own homeserver.yaml, SQLite,
#             plain HTTP on 127.0.0.1:8008.
#   postgres  the same plus Debian's PostgreSQL untuned, as the manual guide does it (bench/manual-install.sh):
#             a password role, `host: localhost` (TCP; libpq negotiates TLS with Debian's `ssl = on`).
# Both get one addition the benchmark needs to create its users, and nothing that changes performance:
# a registration_shared_secret (conf.d/bench-secret.yaml).
# Usage: package-install.sh sqlite|postgres [SERVER_NAME]
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
MODE=$1 SERVER=${2:-example.test}
REPO=http://127.0.0.1:8099/matrix/debian
rand() { (set +o pipefail; tr -cd '[:alnum:]' </dev/urandom | fold -w "$1" | head -n 1); }
case $MODE in sqlite | postgres) ;; *) echo "usage: $0 sqlite|postgres [SERVER_NAME]" >&2; exit 2 ;; esac

. /etc/os-release
curl -fsS -o /usr/share/keyrings/matrix-org-archive-keyring.gpg "$REPO/matrix-org-archive-keyring.gpg"
echo "deb [signed-by=/usr/share/keyrings/matrix-org-archive-keyring.gpg] $REPO/ $VERSION_CODENAME main" >/etc/apt/sources.list.d/matrix-org.list
echo "matrix-synapse matrix-synapse/server-name string $SERVER" | debconf-set-selections
echo "matrix-synapse matrix-synapse/report-stats boolean false" | debconf-set-selections
apt-get update -q
pkgs=(matrix-synapse-py3)
[ "$MODE" = sqlite ] || pkgs+=(postgresql)
apt-get install -y -q "${pkgs[@]}"
echo "registration_shared_secret: '$(rand 64)'" >/etc/matrix-synapse/conf.d/bench-secret.yaml

if [ "$MODE" = postgres ]; then
  pw=$(rand 32)
  runuser -u postgres -- psql -q -c "CREATE ROLE synapse LOGIN PASSWORD '$pw'"
  runuser -u postgres -- createdb --encoding=UTF8 --locale=C --template=template0 --owner=synapse synapse
  cat >/etc/matrix-synapse/conf.d/database.yaml <<EOF
database:
  name: psycopg2
  args:
    user: synapse
    password: '$pw'
    database: synapse
    host: localhost
    cp_min: 5
    cp_max: 10
EOF
fi
chown root:matrix-synapse /etc/matrix-synapse/conf.d/*.yaml
chmod 0640 /etc/matrix-synapse/conf.d/*.yaml
systemctl restart matrix-synapse.service
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null http://127.0.0.1:8008/health && exit 0
  sleep 1
done
echo "Synapse did not answer /health within 300 s" >&2
journalctl -u matrix-synapse --no-pager -n 30 >&2
exit 1
