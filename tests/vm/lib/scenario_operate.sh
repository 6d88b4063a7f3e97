# shellcheck shell=bash
# Issue 5 on a converged guest, against real Synapse and coturn: the first admin made once, registration
# tokens (created, used by a real client, shown as used, revoked), users (add, list, reset-password,
# deactivate), and doctor (all ✓, then ✗ with the right hint once coturn is stopped).

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
  out=$(gjson "$g" '[u["name"] for u in d if u["admin"]]' matrix-provision user list --json --config $cfg 2>&1 || true)
  check "$g: the admin account exists and is an admin ($out)" grep -q "@admin:example.test" <<<"$out"
  rc=0; glog "$g" "$g-apply2.log" 300 matrix-provision apply --detailed-exitcodes $cfg || rc=$?
  expect_rc "$g: a rerun leaves the admin alone (nothing changed)" 0 $rc "$g-apply2.log"

  # A real client registers with a token from `token create` (client.py does it), which then shows as used.
  client_checks "$g" token-checks --only register-with-token,login
  out=$(gjson "$g" 'sum(t["completed"] for t in d)' matrix-provision token list --json --config $cfg 2>&1 || true)
  check "$g: token list shows the token used once ($out completed)" [ "$out" = 1 ]
  local tok
  tok=$(guest_run "$g" "matrix-provision token create --uses 3 --expires 2d --config $cfg 2>/dev/null" || true)
  out=$(gjson "$g" "[t[\"uses_allowed\"] for t in d if t[\"token\"] == \"$tok\"]" matrix-provision token list --json --config $cfg 2>&1 || true)
  check "$g: token create --uses 3 ($out)" [ "$out" = "[3]" ]
  rc=0; guest_run "$g" "matrix-provision token revoke '$tok' --config $cfg" >/dev/null 2>&1 || rc=$?
  out=$(gjson "$g" "[t for t in d if t[\"token\"] == \"$tok\"]" matrix-provision token list --json --config $cfg 2>&1 || true)
  check "$g: token revoke removes it (exit $rc, left: $out)" [ "$rc.$out" = "0.[]" ]

  local pw1 pw2
  pw1=$(guest_run "$g" "matrix-provision user add bob --config $cfg 2>/dev/null" || true)
  check "$g: user add prints a generated password once" [ "${#pw1}" -ge 16 ]
  pw2=$(guest_run "$g" "matrix-provision user reset-password bob --config $cfg 2>/dev/null" || true)
  check "$g: user reset-password prints a new one" test "${#pw2}" -ge 16 -a "$pw1" != "$pw2"
  rc=0; guest_run "$g" "matrix-provision user deactivate bob --config $cfg" >/dev/null 2>&1 || rc=$?
  out=$(gjson "$g" '[u["deactivated"] for u in d if u["name"] == "@bob:example.test"]' matrix-provision user list --json --config $cfg 2>&1 || true)
  check "$g: user deactivate (exit $rc, deactivated: $out)" [ "$rc.$out" = "0.[True]" ]

  # Pebble's issuing root stands in for the public roots Let's Encrypt certificates chain to.
  guest_run "$g" 'curl -fsS --cacert /srv/fixtures/pebble/ca.pem https://localhost:15000/roots/0 > /root/pebble-roots.pem'
  rc=0; glog "$g" "$g-doctor.log" 120 matrix-provision doctor --ca-file /root/pebble-roots.pem $cfg || rc=$?
  expect_rc "$g: doctor on the converged guest is all ✓" 0 $rc "$g-doctor.log"
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
