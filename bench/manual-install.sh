#!/bin/bash
# bench/manual-install.sh: the manual Debian guide matrix-provision automates (../shared/seeds/002_*.txt,
# "Matrix Synapse chat server with Element UI"), as a straight script: the guide's commands in the guide's
# order, one after another, with its interactive prompts answered up front. It is the peer `apply` is
# timed against (bench/fresh-install), so it must produce a server that passes the same client check
# (tests/vm/checks/client.py). Runs inside a fresh test guest, against the offline stand-ins
# (tests/vm/README.md): the signed apt repo on 127.0.0.1:8099, Pebble for Let's Encrypt, the local Element
# releases. Where the guide leaves something out that the client check needs, the smallest addition is
# marked "beyond the guide".
# Usage: manual-install.sh [SERVER_NAME]     (default example.test)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SERVER=${1:-example.test}
MATRIX=matrix.$SERVER TURN=turn.$SERVER ELEMENT=element.$SERVER
REPO=http://127.0.0.1:8099/matrix/debian
RELEASES=http://127.0.0.1:8099/releases
# The stand-in for Let's Encrypt (certbot talks to Pebble, whose HTTPS certificate its own CA signs).
export REQUESTS_CA_BUNDLE=/srv/fixtures/pebble/ca.pem
ACME=(--server https://localhost:14000/dir --agree-tos -m "admin@$SERVER" --no-eff-email --non-interactive)
# The guide's generator; head closing the pipe early is how it ends, so not a failure here.
rand() { (set +o pipefail; tr -cd '[:alnum:]' </dev/urandom | fold -w "$1" | head -n 1); }

# --- Add Matrix apt repo (curl where the guide says wget: a fresh Debian has curl, not wget)
curl -fsS -o /usr/share/keyrings/matrix-org-archive-keyring.gpg "$REPO/matrix-org-archive-keyring.gpg"
echo "deb [signed-by=/usr/share/keyrings/matrix-org-archive-keyring.gpg] $REPO/ bookworm main" >/etc/apt/sources.list.d/matrix-org.list

# --- Install Matrix Synapse (the prompt for the server name, answered ahead)
echo "matrix-synapse matrix-synapse/server-name string $SERVER" | debconf-set-selections
echo "matrix-synapse matrix-synapse/report-stats boolean false" | debconf-set-selections
apt-get update -q
apt-get install -y -q matrix-synapse-py3

# --- Setup PostgreSQL
apt-get install -y -q postgresql
DB_PASSWORD=$(rand 32)
runuser -u postgres -- psql -q -c "CREATE ROLE synapse LOGIN PASSWORD '$DB_PASSWORD'"
runuser -u postgres -- createdb --encoding=UTF8 --locale=C --template=template0 --owner=synapse synapse

# --- Open ports (beyond the guide: ufw installed, SSH allowed first and the firewall enabled)
apt-get install -y -q ufw
ufw allow OpenSSH >/dev/null
for p in 80 443 8448 3478 5349 49152:65535/udp 49152:65535/tcp; do ufw allow "$p" >/dev/null; done
ufw --force enable >/dev/null

# --- Setup Nginx, certificates through certbot's nginx plugin
apt-get install -y -q nginx certbot python3-certbot-nginx
certbot certonly --nginx -d "$MATRIX" -d "$SERVER" "${ACME[@]}"
cat >/etc/nginx/sites-available/synapse <<EOF
server {
    server_name $MATRIX $SERVER;
    listen 80;
    listen [::]:80;
    return 301 https://\$host\$request_uri;
}
server {
    server_name $MATRIX $SERVER;
    listen 443 ssl http2;
    listen [::]:443 ssl http2;
    listen 8448 ssl http2 default_server;
    listen [::]:8448 ssl http2 default_server;
    ssl_certificate /etc/letsencrypt/live/$MATRIX/fullchain.pem;
    ssl_certificate_key /etc/letsencrypt/live/$MATRIX/privkey.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;

    # Beyond the guide: delegation from the server name, and the admin API kept off the internet.
    location /.well-known/matrix/server {
        default_type application/json;
        return 200 '{"m.server": "$MATRIX:443"}';
    }
    location /.well-known/matrix/client {
        default_type application/json;
        add_header Access-Control-Allow-Origin *;
        return 200 '{"m.homeserver": {"base_url": "https://$MATRIX"}}';
    }
    location /_synapse/admin { return 404; }

    location / {
        proxy_pass http://localhost:8008;
        proxy_set_header X-Forwarded-For \$remote_addr;
        proxy_set_header X-Forwarded-Proto \$scheme;
        proxy_set_header Host \$host;
        client_max_body_size 50M;
    }
}
EOF
ln -sf /etc/nginx/sites-available/synapse /etc/nginx/sites-enabled/
systemctl reload nginx.service

# --- Configure Matrix Synapse
cat >/etc/matrix-synapse/conf.d/database.yaml <<EOF
database:
  name: psycopg2
  args:
    user: synapse
    password: '$DB_PASSWORD'
    database: synapse
    host: localhost
    cp_min: 5
    cp_max: 10
EOF
echo "registration_shared_secret: '$(rand 256)'" >/etc/matrix-synapse/conf.d/registration_shared_secret.yaml
printf 'enable_registration: true\nregistration_requires_token: true\n' >/etc/matrix-synapse/conf.d/registration.yaml
systemctl restart matrix-synapse.service

# --- Setup VoIP: coturn with its own certificate and a shared secret
apt-get install -y -q coturn
certbot certonly --nginx -d "$TURN" "${ACME[@]}"
TURN_SECRET=$(rand 256)
cat >/etc/turnserver.conf <<EOF
static-auth-secret=$TURN_SECRET
use-auth-secret
realm=$TURN
cert=/etc/letsencrypt/live/$TURN/fullchain.pem
pkey=/etc/letsencrypt/live/$TURN/privkey.pem
no-tcp-relay
no-multicast-peers
denied-peer-ip=0.0.0.0-0.255.255.255
denied-peer-ip=10.0.0.0-10.255.255.255
denied-peer-ip=100.64.0.0-100.127.255.255
denied-peer-ip=127.0.0.0-127.255.255.255
denied-peer-ip=169.254.0.0-169.254.255.255
denied-peer-ip=172.16.0.0-172.31.255.255
denied-peer-ip=192.0.0.0-192.0.0.255
denied-peer-ip=192.0.2.0-192.0.2.255
denied-peer-ip=192.88.99.0-192.88.99.255
denied-peer-ip=192.168.0.0-192.168.255.255
denied-peer-ip=198.18.0.0-198.19.255.255
denied-peer-ip=198.51.100.0-198.51.100.255
denied-peer-ip=203.0.113.0-203.0.113.255
denied-peer-ip=240.0.0.0-255.255.255.255
denied-peer-ip=::1
user-quota=12
total-quota=1200
EOF
systemctl restart coturn.service
cat >/etc/matrix-synapse/conf.d/turn.yaml <<EOF
turn_uris: [ "turn:$TURN?transport=udp", "turn:$TURN?transport=tcp" ]
turn_shared_secret: '$TURN_SECRET'
turn_user_lifetime: 86400000
turn_allow_guests: True
EOF
systemctl restart matrix-synapse.service

# --- Element: the guide's update script, pointed at the local releases, run once
apt-get install -y -q jq
mkdir -p /var/www/element
cat >/var/www/element/update.sh <<EOF
#!/bin/sh
set -e
install_location="/var/www/element"
latest="\$(curl -s $RELEASES/latest | jq -r .tag_name)"
cd "\$install_location"
[ ! -d "archive" ] && mkdir -p "archive"
[ -d "archive/element-\${latest}" ] && rm -r "archive/element-\${latest}"
[ -f "archive/element-\${latest}.tar.gz" ] && rm "archive/element-\${latest}.tar.gz"
curl -fsS -o "archive/element-\${latest}.tar.gz" "http://127.0.0.1:8099/download/\${latest}/element-\${latest}.tar.gz"
tar xf "archive/element-\${latest}.tar.gz" -C "archive"
[ -L "\${install_location}/current" ] && rm "\${install_location}/current"
ln -sf "\${install_location}/archive/element-\${latest}" "\${install_location}/current"
ln -sf "\${install_location}/config.json" "\${install_location}/current/config.json"
EOF
chmod +x /var/www/element/update.sh
/var/www/element/update.sh
# The guide edits config.sample.json by hand: the same edit, with jq.
jq --arg url "https://$MATRIX" --arg name "$SERVER" \
  '.default_server_config["m.homeserver"] = {base_url: $url, server_name: $name}' \
  /var/www/element/current/config.sample.json >/var/www/element/config.json
certbot certonly --nginx -d "$ELEMENT" "${ACME[@]}"
cat >/etc/nginx/sites-available/element <<EOF
server {
    listen 80;
    listen [::]:80;
    server_name $ELEMENT;
    return 301 https://\$host\$request_uri;
}
server {
    listen 443 ssl http2;
    listen [::]:443 ssl http2;
    server_name $ELEMENT;
    root /var/www/element/current;
    index index.html;
    add_header Referrer-Policy "strict-origin" always;
    add_header X-Content-Type-Options "nosniff" always;
    add_header X-Frame-Options "SAMEORIGIN" always;
    ssl_certificate /etc/letsencrypt/live/$ELEMENT/fullchain.pem;
    ssl_certificate_key /etc/letsencrypt/live/$ELEMENT/privkey.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
}
EOF
ln -sf /etc/nginx/sites-available/element /etc/nginx/sites-enabled/
nginx -t
systemctl reload nginx.service

# The guide's "verify the site is running", as a wait: Synapse answers once it has started.
for _ in $(seq 1 600); do curl -fsS http://127.0.0.1:8008/health >/dev/null 2>&1 && break; sleep 0.1; done
