#!/bin/bash
# Vagrant provisioner (runs as root in the VM): install the binary, start Pebble as the ACME server, apply
# twice, run the client checks. Exits non-zero when any of it fails.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [ -f /tmp/matrix-provision ]; then
  install -m755 /tmp/matrix-provision /usr/local/sbin/matrix-provision
elif [ ! -x /usr/local/sbin/matrix-provision ]; then
  apt-get update -q && apt-get install -y -q curl gcc pkg-config
  [ -x /root/.cargo/bin/cargo ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  (cd /vagrant && /root/.cargo/bin/cargo build --release --quiet)
  install -m755 /vagrant/target/release/matrix-provision /usr/local/sbin/matrix-provision
fi

# The test names resolve to the VM itself.
grep -q 'matrix.example.test' /etc/hosts ||
  echo '127.0.0.1 matrix.example.test element.example.test turn.example.test example.test' >>/etc/hosts

# Pebble (Debian's package) on loopback, with its own TLS certificate for localhost.
if [ ! -f /etc/pebble/ca.pem ]; then
  apt-get update -q && apt-get install -y -q pebble openssl
  mkdir -p /etc/pebble && cd /etc/pebble
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj '/CN=pebble test CA' -keyout ca.key -out ca.pem
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj '/CN=localhost' -keyout key.pem -out cert.csr
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -extfile ext.cnf -out cert.pem
  cat >pebble-config.json <<'JSON'
{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
  "certificate": "/etc/pebble/cert.pem", "privateKey": "/etc/pebble/key.pem",
  "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
  cat >/etc/systemd/system/pebble.service <<'UNIT'
[Unit]
Description=Pebble test ACME server (loopback only)
[Service]
Environment=PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0
ExecStart=/usr/bin/pebble -config /etc/pebble/pebble-config.json
[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now pebble
fi
# The client checks fetch Pebble's root through this path.
mkdir -p /srv/fixtures/pebble && cp /etc/pebble/ca.pem /srv/fixtures/pebble/ca.pem

cat >/root/host.toml <<'TOML'
server_name = "example.test"
[acme]
email = "admin@example.test"
[synapse]
registration = "token"
admin_user = "admin"
[sources]
acme_directory_url = "https://localhost:14000/dir"
acme_ca_bundle = "/etc/pebble/ca.pem"
TOML

matrix-provision apply /root/host.toml
matrix-provision apply --detailed-exitcodes /root/host.toml || { echo "second apply changed something (exit $?)"; exit 1; }
matrix-provision plan /root/host.toml
python3 /vagrant/tests/vm/checks/client.py
