# shellcheck shell=bash
# Issue 5 on a converged guest, against real Synapse and coturn: the first admin made once, registration
# tokens (created, used by a real client, shown as used, revoked), users (add, list, reset-password,
# deactivate), and doctor: all ✓ (checks derived from the step graph: SSH's ufw rule, the certificates
# nginx and coturn really serve), ✗ with the reload hint after a renewal that ran no deploy hook, ✓ again
# after the reload, then ✗ with the right hint once coturn is stopped. HOST_TOML is positional for every
# subcommand; token/user/doctor read the copy apply keeps unless given one.

# gjson NAME PY_EXPR CMD: run CMD in the guest, evaluate PY_EXPR on its JSON stdout (as `d`), print the result.
gjson() {
  local name=$1 expr=$2
  shift 2
  guest_run "$name" "$* 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print($expr)'"
}

scenario_operate() {
  local tier=$1 g=$1-operate rc cfg=/root/host.toml out
  fresh_guest "$g" "$tier" || return 0
  rc=0; phase "$g: apply (fresh)" glog "$g" "$g-apply.log" "$(apply_timeout "$g")" matrix-provision apply $cfg || rc=$?
  expect_rc "$g: apply on a fresh host" 0 $rc "$g-apply.log"
  [ $rc -eq 0 ] || { guest_destroy "$g"; return 0; }

  out=$(guest_run "$g" 'stat -c "%a %U" /var/lib/matrix-provision/admin.json' 2>&1 || true)
  check "$g: first admin's credentials stored 0600 root ($out)" [ "$out" = "600 root" ]
  out=$(gjson "$g" '[u["name"] for u in d if u["admin"]]' matrix-provision user list --json 2>&1 || true)
  check "$g: the admin account exists and is an admin ($out)" grep -q "@admin:example.test" <<<"$out"
  rc=0; glog "$g" "$g-apply2.log" 300 matrix-provision apply --detailed-exitcodes $cfg || rc=$?
  expect_rc "$g: a rerun leaves the admin alone (nothing changed)" 0 $rc "$g-apply2.log"

  # A real client registers with a token from `token create` (client.py does it), which then shows as used.
  client_checks "$g" token-checks --only register-with-token,login
  out=$(gjson "$g" 'sum(t["completed"] for t in d)' matrix-provision token list --json 2>&1 || true)
  check "$g: token list shows the token used once ($out completed)" [ "$out" = 1 ]
  local tok
  tok=$(guest_run "$g" "matrix-provision token create --uses 3 --expires 2d $cfg 2>/dev/null" || true)
  out=$(gjson "$g" "[t[\"uses_allowed\"] for t in d if t[\"token\"] == \"$tok\"]" matrix-provision token list --json 2>&1 || true)
  check "$g: token create --uses 3 ($out)" [ "$out" = "[3]" ]
  rc=0; guest_run "$g" "matrix-provision token revoke '$tok' $cfg" >/dev/null 2>&1 || rc=$?
  out=$(gjson "$g" "[t for t in d if t[\"token\"] == \"$tok\"]" matrix-provision token list --json 2>&1 || true)
  check "$g: token revoke removes it (exit $rc, left: $out)" [ "$rc.$out" = "0.[]" ]

  local pw1 pw2
  pw1=$(guest_run "$g" "matrix-provision user add bob $cfg 2>/dev/null" || true)
  check "$g: user add prints a generated password once" [ "${#pw1}" -ge 16 ]
  pw2=$(guest_run "$g" "matrix-provision user reset-password bob 2>/dev/null" || true)
  check "$g: user reset-password prints a new one" test "${#pw2}" -ge 16 -a "$pw1" != "$pw2"
  rc=0; guest_run "$g" "matrix-provision user deactivate bob --config $cfg" >/dev/null 2>&1 || rc=$?
  out=$(gjson "$g" '[u["deactivated"] for u in d if u["name"] == "@bob:example.test"]' matrix-provision user list --json 2>&1 || true)
  check "$g: user deactivate (exit $rc, deactivated: $out)" [ "$rc.$out" = "0.[True]" ]

  # Pebble's issuing root stands in for the public roots Let's Encrypt certificates chain to.
  guest_run "$g" 'curl -fsS --cacert /srv/fixtures/pebble/ca.pem https://localhost:15000/roots/0 > /root/pebble-roots.pem'
  rc=0; glog "$g" "$g-doctor.log" 120 matrix-provision doctor --ca-file /root/pebble-roots.pem $cfg || rc=$?
  expect_rc "$g: doctor on the converged guest is all ✓" 0 $rc "$g-doctor.log"
  local port line want pg
  port=$(guest_run "$g" "sshd -T 2>/dev/null | sed -n 's/^port //p' | head -n1" || true)
  # The release's cluster (15 on Debian 12, 17 on 13), as the guest has it.
  pg=$(guest_run "$g" 'ls /etc/postgresql | sort -n | tail -n1' 2>/dev/null || true)
  for want in "✓ firewall (ufw): active; allows ${port:-22}/tcp" '✓ TLS served matrix.example.test:443' \
    '✓ TLS served matrix.example.test:8448' '✓ TLS served element.example.test:443' '✓ TLS served turn.example.test:5349' \
    "✓ service postgresql@${pg:-unknown}-main" '✓ files'; do
    line=$(grep -F "$want" "$RUN_DIR/logs/$g-doctor.log" | head -n1 || true)
    check "$g: doctor says ${line:-nothing like: $want}" test -n "$line"
  done

  # A renewal whose deploy hook did not run (--no-directory-hooks): new certificates on disk, nginx and
  # coturn still present the old ones until they reload.
  local name
  for name in matrix.example.test turn.example.test; do
    rc=0; glog "$g" "$g-renew-$name.log" 300 "REQUESTS_CA_BUNDLE=/srv/fixtures/pebble/ca.pem certbot renew --force-renewal \
      --cert-name $name --no-directory-hooks --no-random-sleep-on-renew" || rc=$?
    expect_rc "$g: certbot renews $name without its deploy hook" 0 $rc "$g-renew-$name.log"
  done
  rc=0; glog "$g" "$g-doctor-stale.log" 120 matrix-provision doctor --ca-file /root/pebble-roots.pem $cfg || rc=$?
  local stale="$RUN_DIR/logs/$g-doctor-stale.log"
  if [ $rc -eq 1 ] && grep -q '✗ TLS served matrix.example.test:443: nginx presents another certificate' "$stale" &&
    grep -q '✗ TLS served matrix.example.test:8448' "$stale" && grep -q '✗ TLS served turn.example.test:5349: coturn presents' "$stale" &&
    grep -A1 '✗ TLS served matrix.example.test:443' "$stale" | grep -q 'fix: systemctl reload-or-restart nginx' &&
    grep -q '✓ TLS served element.example.test:443' "$stale" &&
    grep -q '✗ files: .*/etc/coturn/certs/fullchain.pem: differs from /etc/letsencrypt/live/turn.example.test/fullchain.pem' "$stale"; then
    pass "$g: doctor after a hookless renewal: exit 1, ✗ served 443/8448/5349 with the reload, ✗ coturn's stale copy"
  else
    fail "$g: doctor after a hookless renewal: exit 1, ✗ served 443/8448/5349 with the reload, ✗ coturn's stale copy (exit $rc)"
    show_tail "$stale" 40
  fi
  guest_run "$g" 'systemctl reload nginx' >/dev/null 2>&1 || true
  rc=0; glog "$g" "$g-doctor-reloaded.log" 120 matrix-provision doctor --ca-file /root/pebble-roots.pem || rc=$?
  if grep -q '✓ TLS served matrix.example.test:443' "$RUN_DIR/logs/$g-doctor-reloaded.log" &&
    grep -q '✓ TLS served matrix.example.test:8448' "$RUN_DIR/logs/$g-doctor-reloaded.log"; then
    pass "$g: after systemctl reload nginx, doctor (default HOST_TOML) sees nginx serve the renewed certificate"
  else
    fail "$g: after systemctl reload nginx, doctor (default HOST_TOML) sees nginx serve the renewed certificate (exit $rc)"
    show_tail "$RUN_DIR/logs/$g-doctor-reloaded.log" 40
  fi
  guest_run "$g" 'systemctl stop coturn' >/dev/null 2>&1 || true
  rc=0; glog "$g" "$g-doctor2.log" 120 matrix-provision doctor --ca-file /root/pebble-roots.pem $cfg || rc=$?
  if [ $rc -eq 1 ] && grep -q '✗ service coturn' "$RUN_DIR/logs/$g-doctor2.log" &&
    grep -A1 '✗ service coturn' "$RUN_DIR/logs/$g-doctor2.log" | grep -q 'fix: systemctl status coturn'; then
    pass "$g: doctor with coturn stopped: exit 1, ✗ coturn with its fix"
  else
    fail "$g: doctor with coturn stopped: exit 1, ✗ coturn with its fix (exit $rc)"; show_tail "$RUN_DIR/logs/$g-doctor2.log" 20
  fi
  guest_destroy "$g"
}
