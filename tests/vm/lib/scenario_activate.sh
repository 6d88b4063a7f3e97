# shellcheck shell=bash
# Issue 9 on converged guests, against real nginx, Synapse, coturn, certbot and Pebble:
#   rejected: a config change nginx rejects (element.host moved to a name with no DNS, so no certificate:
#             the new vhost's ssl_certificate cannot load) fails the step with nginx's message, the old
#             vhost stays live and everything keeps serving; putting host.toml back converges again.
#   renew:    certbot.timer's own service renews every certificate (--force-renewal through cli.ini, the
#             unit untouched) against Pebble; 443, 8448 and 5349 then serve the new ones.

# served_certs NAME: "host:port served=<sha256> disk=<sha256>" for each TLS port, leaf certificates only.
served_certs() {
  guest_run "$1" 'python3 -' <<'PY'
import hashlib, ssl
def fp(pem):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()[:16]
for host, port in [("matrix.example.test", 443), ("matrix.example.test", 8448), ("turn.example.test", 5349)]:
    try:
        served = fp(ssl.get_server_certificate((host, port), timeout=10))
    except Exception as e:
        served = "error:" + type(e).__name__
    with open(f"/etc/letsencrypt/live/{host}/cert.pem") as f:
        disk = fp(f.read())
    print(f"{host}:{port} served={served} disk={disk}")
PY
}

scenario_rejected() {
  local tier=$1 g=$1-rejected rc cfg=/root/host.toml vhost=/etc/nginx/sites-available/matrix-provision-element.conf before after out
  fresh_guest "$g" "$tier" || return 0
  rc=0; phase "$g: apply (fresh)" glog "$g" "$g-apply.log" "$(apply_timeout "$g")" matrix-provision apply $cfg || rc=$?
  expect_rc "$g: apply on a fresh host" 0 $rc "$g-apply.log"
  [ $rc -eq 0 ] || { guest_destroy "$g"; return 0; }
  guest_run "$g" 'curl -fsS --cacert /srv/fixtures/pebble/ca.pem https://localhost:15000/roots/0 > /root/pebble-roots.pem'
  before=$(guest_run "$g" "sha256sum $vhost; readlink /etc/nginx/sites-enabled/matrix-provision-element.conf" 2>&1 || true)

  # The role's password is stored as the SCRAM verifier apply computed (no plain password was sent).
  out=$(guest_run "$g" "runuser -u postgres -- psql -Atc \"select rolpassword like 'SCRAM-SHA-256\\\$4096:%' from pg_authid where rolname = 'synapse'\"" 2>&1 || true)
  check "$g: the synapse role holds a SCRAM-SHA-256 verifier ($out)" [ "$out" = t ]
  # What a run killed between chmod and rename left behind: an executable temp file among certbot's hooks.
  local leftover=/etc/letsencrypt/renewal-hooks/deploy/.matrix-provision.mp-tmp-KiLLeD01
  guest_run "$g" "install -m 0755 /dev/null $leftover"
  guest_run "$g" "cp $cfg /root/host.toml.orig"
  set_toml_key "$g" element host '"chat.example.test"'
  rc=0; phase "$g: apply (rejected change)" glog "$g" "$g-apply-bad.log" 600 matrix-provision apply $cfg || rc=$?
  expect_rc "$g: apply with a vhost nginx rejects fails" 1 $rc "$g-apply-bad.log"
  local log=$RUN_DIR/logs/$g-apply-bad.log
  if grep -q 'nginx-element-vhost' "$log" && grep -q 'nginx -t -q.*rejects' "$log" &&
    grep -q 'cannot load certificate.*chat.example.test' "$log"; then
    pass "$g: the failure names the step (nginx-element-vhost) and nginx's message"
  else
    fail "$g: the failure names the step (nginx-element-vhost) and nginx's message"; show_tail "$log" 30
  fi
  rc=0; guest_run "$g" "test ! -e $leftover" || rc=$?
  check "$g: apply swept the leftover temp file from renewal-hooks/deploy/" [ $rc -eq 0 ]
  after=$(guest_run "$g" "sha256sum $vhost; readlink /etc/nginx/sites-enabled/matrix-provision-element.conf" 2>&1 || true)
  check "$g: the old Element vhost stays live, byte for byte" [ "$before" = "$after" ]
  rc=0; guest_run "$g" 'nginx -t -q' >/dev/null 2>&1 || rc=$?
  check "$g: nginx -t still passes (a reload or renewal would work)" [ $rc -eq 0 ]
  check "$g: postgresql, matrix-synapse, coturn, nginx still active" services_active "$g"
  client_checks "$g" checks-after-rejection

  guest_run "$g" "cp /root/host.toml.orig $cfg"
  rc=0; phase "$g: apply (input fixed)" glog "$g" "$g-apply-fixed.log" 600 matrix-provision apply $cfg || rc=$?
  expect_rc "$g: apply with host.toml put back converges" 0 $rc "$g-apply-fixed.log"
  rc=0; glog "$g" "$g-apply-again.log" 300 matrix-provision apply --detailed-exitcodes $cfg || rc=$?
  expect_rc "$g: and a rerun changes nothing" 0 $rc "$g-apply-again.log"
  guest_destroy "$g"
}

scenario_renew() {
  local tier=$1 g=$1-renew rc cfg=/root/host.toml old new line bad=0
  fresh_guest "$g" "$tier" || return 0
  rc=0; phase "$g: apply (fresh)" glog "$g" "$g-apply.log" "$(apply_timeout "$g")" matrix-provision apply $cfg || rc=$?
  expect_rc "$g: apply on a fresh host" 0 $rc "$g-apply.log"
  [ $rc -eq 0 ] || { guest_destroy "$g"; return 0; }
  old=$(served_certs "$g" 2>&1 || true)
  # certbot reads cli.ini on every run: --force-renewal without touching certbot.service or its timer.
  guest_run "$g" 'echo "force-renewal = true" >> /etc/letsencrypt/cli.ini'
  rc=0; phase "$g: certbot.service (renew)" glog "$g" "$g-renew.log" 600 \
    'systemctl start certbot.service; rc=$?; journalctl -u certbot.service --no-pager -o cat | tail -n 40; exit $rc' || rc=$?
  guest_run "$g" 'sed -i "/^force-renewal = true$/d" /etc/letsencrypt/cli.ini'
  expect_rc "$g: certbot.service (what certbot.timer starts) renews against Pebble" 0 $rc "$g-renew.log"
  # coturn restarts from the deploy hook; give it a moment to listen on 5349 again.
  for _ in $(seq 20); do
    new=$(served_certs "$g" 2>&1 || true)
    grep -q 'served=error' <<<"$new" || break
    sleep 1
  done
  while IFS= read -r line; do
    local port=${line%% *} served disk was
    served=$(sed -n 's/.*served=\([^ ]*\).*/\1/p' <<<"$line")
    disk=$(sed -n 's/.*disk=\([^ ]*\).*/\1/p' <<<"$line")
    was=$(grep "^$port " <<<"$old" | sed -n 's/.*served=\([^ ]*\).*/\1/p')
    if [ -n "$served" ] && [ "$served" = "$disk" ] && [ "$served" != "$was" ]; then
      pass "$g: $port serves the renewed certificate ($was -> $served)"
    else
      bad=1; fail "$g: $port serves the renewed certificate (before $was, served $served, on disk $disk)"
    fi
  done <<<"$new"
  [ $bad -eq 0 ] || show_tail "$RUN_DIR/logs/$g-renew.log" 30
  check "$g: postgresql, matrix-synapse, coturn, nginx active after the renewal" services_active "$g"
  # certbot killed while creating a lineage leaves its renewal conf empty (it creates the file first):
  # apply must move the pieces aside and request anew, not let certbot make a second NAME-0001 lineage.
  local name=element.example.test
  guest_run "$g" ": > /etc/letsencrypt/renewal/$name.conf"
  rc=0; phase "$g: apply (lineage left half made)" glog "$g" "$g-broken.log" 600 matrix-provision apply $cfg || rc=$?
  expect_rc "$g: apply after certbot left $name's lineage half made" 0 $rc "$g-broken.log"
  check "$g: $name has one whole lineage again (no $name-0001, the broken one kept aside)" guest_run "$g" \
    "grep -q '^server = ' /etc/letsencrypt/renewal/$name.conf && ! ls -d /etc/letsencrypt/*/$name-0001* 2>/dev/null \
     && ls -d /etc/letsencrypt/renewal/$name.conf.mp-broken-* >/dev/null"
  rc=0; phase "$g: apply (again)" glog "$g" "$g-again.log" 600 matrix-provision apply --detailed-exitcodes $cfg || rc=$?
  expect_rc "$g: then apply changes nothing" 0 $rc "$g-again.log"
  guest_destroy "$g"
}
