#!/bin/bash
# bench/load tweak: nginx opens a new connection to Synapse per request again (no upstream keepalive).
set -euo pipefail
f=/etc/nginx/sites-enabled/matrix-provision-synapse.conf
f=$(readlink -f "$f")
sed -i -e '/^ *keepalive [0-9]*;/d' -e '/proxy_set_header Connection "";/d' "$f"
! grep -q 'keepalive [0-9]' "$f"
nginx -t -q && systemctl reload nginx
