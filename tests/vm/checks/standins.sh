#!/bin/bash
# Runs inside a fresh guest: proves the offline stand-ins work by hand, without the product. One line per
# check ("PASS name" / "FAIL name: why"). Used while the product cannot apply yet, and with --scenario standins.
# Needs: /srv/fixtures (mirror, signed repo, pebble, element), fixture services started (guest/prepare.sh).
set -uo pipefail
export DEBIAN_FRONTEND=noninteractive
FPR=$1
REPO=http://127.0.0.1:8099/matrix/debian
rc=0
ok() { echo "PASS $1"; }
bad() { echo "FAIL $1: $2"; rc=1; }
t() { local n=$1; shift; if out=$("$@" 2>&1); then ok "$n"; else bad "$n" "$(tail -n 5 <<<"$out" | tr '\n' ' ')"; fi; }

t apt-mirror-update apt-get update -q
t apt-install-base apt-get install -y -q gnupg postgresql nginx certbot coturn ufw

# The signed repo, the way a user adds packages.matrix.org: keyring checked against the pinned fingerprint.
curl -fsS -o /usr/share/keyrings/matrix-org-archive-keyring.gpg "$REPO/matrix-org-archive-keyring.gpg"
got=$(gpg --show-keys --with-colons /usr/share/keyrings/matrix-org-archive-keyring.gpg | awk -F: '/^fpr/ {print $10; exit}')
[ "$got" = "$FPR" ] && ok keyring-fingerprint || bad keyring-fingerprint "got '$got', want '$FPR'"
printf 'Types: deb\nURIs: %s/\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/matrix-org-archive-keyring.gpg\n' "$REPO" "$(. /etc/os-release; echo "$VERSION_CODENAME")" \
  >/etc/apt/sources.list.d/matrix-org.sources
t signed-repo-update sh -c 'apt-get update -q 2>&1 | tee /dev/stderr | grep -q "127.0.0.1:8099/matrix/debian $(. /etc/os-release; echo $VERSION_CODENAME) InRelease"'
# A wrong key must be refused: the signature check is real.
cp /usr/share/keyrings/matrix-org-archive-keyring.gpg /root/good.gpg
gpg --batch --quiet --no-default-keyring --keyring /root/other.gpg --passphrase '' --quick-gen-key other@example.test ed25519 sign never 2>/dev/null
gpg --batch --no-default-keyring --keyring /root/other.gpg --export >/usr/share/keyrings/matrix-org-archive-keyring.gpg
if apt-get update -q 2>&1 | grep -q 'NO_PUBKEY\|not signed\|EXPKEYSIG\|is not signed'; then ok signed-repo-rejects-other-key; else bad signed-repo-rejects-other-key "apt accepted a repo signed by another key"; fi
cp /root/good.gpg /usr/share/keyrings/matrix-org-archive-keyring.gpg
apt-get update -q >/dev/null 2>&1

# The package asks its debconf questions; preseeded answers land in conf.d like upstream's.
echo 'matrix-synapse matrix-synapse/server-name string example.test' | debconf-set-selections
echo 'matrix-synapse matrix-synapse/report-stats boolean false' | debconf-set-selections
t synapse-install apt-get install -y -q matrix-synapse-py3
grep -qx 'server_name: example.test' /etc/matrix-synapse/conf.d/server_name.yaml && ok debconf-server-name || bad debconf-server-name "$(cat /etc/matrix-synapse/conf.d/server_name.yaml)"
grep -qx 'report_stats: false' /etc/matrix-synapse/conf.d/report_stats.yaml && ok debconf-report-stats || bad debconf-report-stats "$(cat /etc/matrix-synapse/conf.d/report_stats.yaml)"
[ "$(stat -c %U:%G /var/lib/matrix-synapse)" = matrix-synapse:matrix-synapse ] && ok synapse-user || bad synapse-user "$(stat -c %U:%G /var/lib/matrix-synapse)"
[ -x /opt/venvs/matrix-synapse/bin/python ] && [ -f /etc/matrix-synapse/homeserver.yaml ] && [ -f /etc/matrix-synapse/log.yaml ] &&
  ok synapse-layout || bad synapse-layout "missing venv or config"
for _ in $(seq 1 120); do curl -fsS http://127.0.0.1:8008/health >/dev/null 2>&1 && break; sleep 0.5; done
t synapse-serves curl -fsS http://127.0.0.1:8008/_matrix/client/versions

# Pebble issues a certificate after validating HTTP-01 against nginx through the test names.
mkdir -p /var/www/acme
t certbot-pebble env REQUESTS_CA_BUNDLE=/srv/fixtures/pebble/ca.pem certbot certonly --webroot -w /var/www/html \
  -d matrix.example.test --server https://localhost:14000/dir --agree-tos -m admin@example.test --no-eff-email --non-interactive
curl -fsS --cacert /srv/fixtures/pebble/ca.pem https://localhost:15000/roots/0 >/root/pebble-root.pem
cat /etc/letsencrypt/live/matrix.example.test/chain.pem >>/root/pebble-root.pem 2>/dev/null
t cert-chains-to-pebble openssl verify -CAfile /root/pebble-root.pem /etc/letsencrypt/live/matrix.example.test/cert.pem

# Element release API and signatures.
t element-latest sh -c 'curl -fsS http://127.0.0.1:8099/releases/latest | grep -q "\"tag_name\": *\"v1.1.0\""'
curl -fsS -o /root/e.tgz http://127.0.0.1:8099/download/v1.1.0/element-v1.1.0.tar.gz
curl -fsS -o /root/e.tgz.asc http://127.0.0.1:8099/download/v1.1.0/element-v1.1.0.tar.gz.asc
t element-signature gpgv --keyring /srv/fixtures/element-test-key.gpg /root/e.tgz.asc /root/e.tgz
t coturn-tools test -x /usr/bin/turnutils_uclient
exit $rc
