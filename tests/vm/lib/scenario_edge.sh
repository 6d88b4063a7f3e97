# shellcheck shell=bash
# Issue 15: a homeserver behind an edge. A fresh guest converges with edge.mode = "proxied": nginx speaks
# plain HTTP on 192.0.2.10:8080 for the edge alone (edge.trusted), no certbot, nothing on 80/8448. The edge
# is HAProxy from Debian in the guest, configured by `matrix-provision edge-config haproxy`, terminating
# TLS on 443 with a certificate Pebble issued (certbot --standalone on the then free port 80). The client
# checks pass through it (federation key on 443); a client in a second network namespace (192.0.2.20,
# the guest's veth peer, as in the ssh scenario) is the address Synapse logs, also when it forges
# X-Forwarded-For, while a forged header from an untrusted address that reaches nginx (192.0.2.11, added
# for that moment) is not believed; ufw keeps that client away from 8080. doctor checks through the edge.
# A rerun changes nothing; plan shows the switch back to direct, which converges (client checks as in
# core), and plan back to proxied names the lineages that would stop renewing. Container tier only.

# edge_curl CLIENT_NS PATH [curl args]: HTTPS through the edge (192.0.2.10:443) from the client namespace.
edge_curl() {
  local ns=$1 path=$2
  shift 2
  ip netns exec "$ns" curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$RUN_DIR/edge-roots.pem" \
    --resolve matrix.example.test:443:192.0.2.10 "$@" "https://matrix.example.test$path"
}

# synapse_logged_ip NAME NONCE: the client address in Synapse's access log line for the request carrying
# NONCE (waits for Synapse's buffered log handler to flush).
synapse_logged_ip() {
  guest_run "$1" "for i in \$(seq 1 30); do
      l=\$({ cat /var/log/matrix-synapse/homeserver.log; journalctl -q -u matrix-synapse --no-pager; } 2>/dev/null |
        grep 'mp_edge=$2' | grep 'Processed request' | tail -n1)
      [ -n \"\$l\" ] && { echo \"\$l\" | sed -n 's/.* - \\([0-9a-f.:]*\\) - 8008 - .*/\\1/p'; exit 0; }
      sleep 0.5
    done; echo none" 2>/dev/null
}

scenario_edge() {
  local tier=$1 g=$1-edge rc out cns ns nonce ip code
  if [ "$tier" != container ]; then skip "$tier/edge (needs the container tier's veth pair)"; return 0; fi
  fresh_guest "$g" "$tier" || return 0
  ns=$(cat "$(gdir "$g")/netns")
  cns=mpvm$$-edgec
  ip netns add "$cns"
  on_exit "ip netns del $cns"
  ip -n "$ns" link set mp1 netns "$cns"
  ip -n "$cns" addr add 192.0.2.20/24 dev mp1
  ip -n "$cns" link set lo up
  ip -n "$cns" link set mp1 up

  # Behind the edge: plain HTTP on the guest's veth address for HAProxy there, TURN on an address of its
  # own, and 443 open for the edge itself (it runs on this host).
  set_toml_key "$g" edge mode '"proxied"'
  set_toml_key "$g" edge listen '"192.0.2.10"'
  set_toml_key "$g" edge trusted '["192.0.2.10"]'
  set_toml_key "$g" firewall extra_allowed_ports '["443/tcp"]'
  guest_run "$g" "sed '/^external_ip/d' /root/host.toml > /root/no-turn-ip.toml"
  rc=0; out=$(guest_run "$g" 'matrix-provision validate /root/no-turn-ip.toml' 2>&1) || rc=$?
  check "$g: proxied with TURN but no turn.external_ip is refused, naming it (exit $rc)" \
    eval '[ $rc -eq 1 ] && grep -q "turn.external_ip: missing: behind an edge" <<<"$out"'
  set_toml_key "$g" turn external_ip '"203.0.113.7"'

  rc=0; phase "$g: apply (fresh, proxied)" glog "$g" "$g-apply1.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply on a fresh host behind an edge" 0 $rc "$g-apply1.log"
  if [ $rc -ne 0 ]; then guest_destroy "$g"; return 0; fi
  out=$(guest_run "$g" 'dpkg-query -W -f="\${Status}" certbot 2>/dev/null; ls /etc/letsencrypt/live 2>/dev/null; ss -Hltn' 2>&1 || true)
  check "$g: no certbot, no certificate, nginx on 192.0.2.10:8080 and nothing on 80/443/8448" \
    eval '! grep -q "install ok" <<<"$out" && grep -q "192.0.2.10:8080 " <<<"$out" && ! grep -Eq ":(80|443|8448) " <<<"$out"'

  # The edge: a Pebble certificate for our three names, HAProxy configured by edge-config.
  rc=0; phase "$g: the edge (certbot --standalone from Pebble, HAProxy)" glog "$g" "$g-edge.log" 300 '
    set -e
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends haproxy certbot >/dev/null
    REQUESTS_CA_BUNDLE=/srv/fixtures/pebble/ca.pem certbot certonly --standalone --non-interactive --agree-tos \
      --no-eff-email -m edge@example.test --server https://localhost:14000/dir --cert-name mp-edge \
      -d matrix.example.test -d example.test -d element.example.test
    install -d -m 0750 /etc/haproxy/certs
    cat /etc/letsencrypt/live/mp-edge/fullchain.pem /etc/letsencrypt/live/mp-edge/privkey.pem > /etc/haproxy/certs/mp-edge.pem
    matrix-provision edge-config haproxy /root/host.toml >> /etc/haproxy/haproxy.cfg
    haproxy -c -f /etc/haproxy/haproxy.cfg
    systemctl restart haproxy' || rc=$?
  expect_rc "$g: HAProxy runs with the edge-config haproxy output and a Pebble certificate" 0 $rc "$g-edge.log"

  rc=0; glog "$g" "$g-apply2.log" 300 matrix-provision apply --detailed-exitcodes /root/host.toml || rc=$?
  expect_rc "$g: a rerun behind the edge changes nothing" 0 $rc "$g-apply2.log"
  # Through HAProxy: everything a user does, federation on 443; ufw allows 443 (the edge) and 8080 for it only.
  client_checks "$g" through-edge --federation-port 443 --ufw-ports 443,3478,8080 --ufw-closed 80,8448,5349
  guest_run "$g" 'cat /root/pebble-roots.pem' >"$RUN_DIR/edge-roots.pem" 2>/dev/null || true

  # Whose address Synapse logs: the client's, even when it forges X-Forwarded-For.
  nonce=$(head -c8 /dev/urandom | od -An -tx1 | tr -d ' \n')
  code=$(edge_curl "$cns" "/_matrix/client/versions?mp_edge=a$nonce" 2>&1 || true)
  ip=$(synapse_logged_ip "$g" "a$nonce")
  check "$g: a client at 192.0.2.20 through the edge (HTTP $code): Synapse logs $ip" [ "$ip" = 192.0.2.20 ]
  code=$(edge_curl "$cns" "/_matrix/client/versions?mp_edge=b$nonce" -H 'X-Forwarded-For: 203.0.113.99' 2>&1 || true)
  ip=$(synapse_logged_ip "$g" "b$nonce")
  check "$g: the same client forging X-Forwarded-For: 203.0.113.99 (HTTP $code): Synapse logs $ip" [ "$ip" = 192.0.2.20 ]
  if ip netns exec "$cns" timeout 5 bash -c 'exec 3<>/dev/tcp/192.0.2.10/8080' 2>/dev/null; then
    fail "$g: nginx's edge listener 8080 is closed to the client (ufw: only the edge may connect)"
  else pass "$g: nginx's edge listener 8080 is closed to the client (ufw: only the edge may connect)"; fi
  # An untrusted peer that does reach nginx (a second guest address, not in edge.trusted) is not believed.
  ip -n "$ns" addr add 192.0.2.11/32 dev mp0
  guest_run "$g" "curl -sS -o /dev/null --max-time 10 --interface 192.0.2.11 -H 'Host: matrix.example.test' \
    -H 'X-Forwarded-For: 203.0.113.98' 'http://192.0.2.10:8080/_matrix/client/versions?mp_edge=c$nonce'" >/dev/null 2>&1 || true
  ip=$(synapse_logged_ip "$g" "c$nonce")
  check "$g: X-Forwarded-For: 203.0.113.98 from untrusted 192.0.2.11 is not believed: Synapse logs $ip" [ "$ip" = 192.0.2.11 ]
  ip -n "$ns" addr del 192.0.2.11/32 dev mp0

  rc=0; glog "$g" "$g-doctor.log" 300 matrix-provision doctor --ca-file /root/pebble-roots.pem || rc=$?
  check "$g: doctor behind the edge: exit $rc, .well-known and federation keys through it, no certificate check" \
    eval '[ $rc -eq 0 ] && grep -q "federation keys on 443.*through the edge" "$RUN_DIR/logs/$g-doctor.log" &&
      ! grep -q "TLS certificate\|TLS served" "$RUN_DIR/logs/$g-doctor.log"'
  [ $rc -eq 0 ] || show_tail "$RUN_DIR/logs/$g-doctor.log" 30

  # Back to direct: the edge goes away, nginx takes 80/443/8448 again with certbot's certificates.
  guest_run "$g" 'systemctl disable --now haproxy' >/dev/null 2>&1
  set_toml_key "$g" edge mode '"direct"'
  rc=0; glog "$g" "$g-plan-direct.log" 300 matrix-provision plan /root/host.toml || rc=$?
  check "$g: plan shows the switch to direct (exit $rc: port 80 vhost, certificates, ufw 80/443/8448)" \
    eval '[ $rc -eq 2 ] && grep -q "nginx-http-enabled" "$RUN_DIR/logs/$g-plan-direct.log" &&
      grep -q "TLS certificate for matrix.example.test" "$RUN_DIR/logs/$g-plan-direct.log" && grep -q "ufw allow 8448/tcp" "$RUN_DIR/logs/$g-plan-direct.log"'
  rc=0; phase "$g: apply (switch to direct)" glog "$g" "$g-apply3.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply switches the host back to direct" 0 $rc "$g-apply3.log"
  rc=0; glog "$g" "$g-apply4.log" 300 matrix-provision apply --detailed-exitcodes /root/host.toml || rc=$?
  expect_rc "$g: a rerun after the switch changes nothing" 0 $rc "$g-apply4.log"
  client_checks "$g" direct-again --ufw-ports 80,443,8448,3478,5349 --ufw-closed 8080
  set_toml_key "$g" edge mode '"proxied"'
  rc=0; glog "$g" "$g-plan-proxied.log" 300 matrix-provision plan /root/host.toml || rc=$?
  check "$g: plan back to proxied (exit $rc) stops renewing the lineages, drops port 80 and ufw's 80/443/8448" \
    eval '[ $rc -eq 2 ] && grep -q "stop renewing the unused certificate matrix.example.test" "$RUN_DIR/logs/$g-plan-proxied.log" &&
      grep -q "nginx-http-disabled" "$RUN_DIR/logs/$g-plan-proxied.log" && grep -q "ufw delete allow 8448/tcp" "$RUN_DIR/logs/$g-plan-proxied.log"'
  guest_destroy "$g"
}
