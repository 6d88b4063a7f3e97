#!/bin/bash
# Runs inside a fresh guest (as root) before the product: starts the fixture services. Test environment only;
# nothing here installs a package of the stack.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
install -m644 "$here/mp-fixtures-http.service" "$here/pebble.service" /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now mp-fixtures-http.service pebble.service >/dev/null 2>&1
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null "http://127.0.0.1:8099/matrix/debian/dists/$(. /etc/os-release; echo "$VERSION_CODENAME")/InRelease" &&
    curl -fsS -o /dev/null --cacert /srv/fixtures/pebble/ca.pem https://localhost:14000/dir; then
    exit 0
  fi
  sleep 0.2
done
echo "fixture services did not come up:" >&2
systemctl status --no-pager mp-fixtures-http.service pebble.service >&2 || true
exit 1
