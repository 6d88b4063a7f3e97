# shellcheck shell=bash
# Issue 14, metrics: [metrics] on a fresh guest (scrape and evaluation every 5 s, down_for 10 s so the test
# need not wait minutes; production defaults are 30 s and 5 m): every target up in Prometheus, everything
# on loopback, the packages' conffiles untouched, the UI behind basic auth on the Synapse vhost; Synapse
# stopped fires SynapseDown, which doctor reports; a rerun changes nothing; metrics.enabled = false stops,
# disables and removes what it installed, and a rerun after that changes nothing either.

# prom_query NAME PATH: Prometheus's API on the guest's loopback, one line per target or alert.
prom_query() {
  guest_run "$1" "python3 - '$2'" <<'PY'
import json, sys, urllib.request
d = json.load(urllib.request.urlopen("http://127.0.0.1:9090" + sys.argv[1], timeout=5))["data"]
for t in d.get("activeTargets", []):
    print("target", t["labels"]["job"], t["labels"].get("process", "-"), t["health"])
for a in d.get("alerts", []):
    print("alert", a["labels"]["alertname"], a["state"])
PY
}

# wait_for NAME SECONDS CMD: poll CMD in the guest's view (a host-side function) until it succeeds.
wait_for() {
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  until "$@"; do
    [ $((SECONDS - t0)) -lt "$limit" ] || return 1
    sleep 3
  done
}

metrics_targets_up() {
  local out
  out=$(prom_query "$1" /api/v1/targets 2>/dev/null) || return 1
  [ "$(grep -c '^target' <<<"$out")" -eq 4 ] && ! grep -v ' up$' <<<"$out" | grep -q '^target'
}
metrics_alert_firing() { prom_query "$1" /api/v1/alerts 2>/dev/null | grep -q "^alert $2 firing$"; }

scenario_metrics() {
  local tier=$1 g=$1-metrics rc cfg=/root/host.toml out t0
  fresh_guest "$g" "$tier" || return 0
  set_toml_key "$g" metrics enabled true
  set_toml_key "$g" metrics expose_ui true
  set_toml_key "$g" metrics scrape_interval '"5s"'
  set_toml_key "$g" metrics evaluation_interval '"5s"'
  set_toml_key "$g" metrics down_for '"10s"'
  rc=0; phase "$g: apply (fresh, metrics on)" glog "$g" "$g-apply.log" "$(apply_timeout "$g")" matrix-provision apply $cfg || rc=$?
  expect_rc "$g: apply with [metrics] on a fresh host" 0 $rc "$g-apply.log"
  [ $rc -eq 0 ] || { guest_destroy "$g"; return 0; }
  rc=0; glog "$g" "$g-apply-again.log" 300 matrix-provision apply --detailed-exitcodes $cfg || rc=$?
  expect_rc "$g: a rerun changes nothing" 0 $rc "$g-apply-again.log"

  t0=$SECONDS
  if wait_for "$g" 90 metrics_targets_up "$g"; then
    pass "$g: Prometheus scrapes all 4 targets, every one up, after $((SECONDS - t0)) s ($(prom_query "$g" /api/v1/targets | tr '\n' ' '))"
  else
    fail "$g: Prometheus scrapes all 4 targets, every one up ($(prom_query "$g" /api/v1/targets 2>&1 | tr '\n' ' '))"
  fi
  # Every series an alert reads exists (no rule silently watching nothing), and a recording rule's result
  # (after its first evaluation); the backup metric is the backup job's to write and absent here. Synapse's
  # labelled counters appear only once something is counted, so none is required.
  local tries=0
  while :; do
  out=$(guest_run "$g" 'python3 -' <<'PY' 2>&1 || true
import json, urllib.parse, urllib.request
missing = []
for m in ["up", "pg_up", "pg_stat_activity_count", "pg_settings_max_connections", "node_filesystem_avail_bytes",
          "node_filesystem_size_bytes", "node_textfile_mtime_seconds", "synapse_federation_transaction_queue_pending_pdus",
          "synapse_federation_transaction_queue_pending_edus", "synapse_federation_transaction_queue_pending"]:
    q = urllib.parse.urlencode({"query": "count(%s)" % m})
    r = json.load(urllib.request.urlopen("http://127.0.0.1:9090/api/v1/query?" + q, timeout=5))["data"]["result"]
    if not r:
        missing.append(m)
print("missing: " + " ".join(missing) if missing else "all present")
PY
)
  [ "$out" != "all present" ] && [ $((tries += 1)) -lt 6 ] || break
  sleep 5
  done
  check "$g: the series the rules read exist ($out)" [ "$out" = "all present" ]
  out=$(guest_run "$g" "ss -Hltn '( sport = :9090 or sport = :9100 or sport = :9187 or sport = :9000 )' | awk '{print \$4}' | sort" 2>&1 || true)
  check "$g: Prometheus, both exporters and Synapse's metrics listen on 127.0.0.1 only ($(tr '\n' ' ' <<<"$out"))" \
    [ "$(tr '\n' ' ' <<<"$out")" = "127.0.0.1:9000 127.0.0.1:9090 127.0.0.1:9100 127.0.0.1:9187 " ]
  out=$(guest_run "$g" 'dpkg --verify prometheus prometheus-node-exporter prometheus-postgres-exporter; echo rc=$?' 2>&1 || true)
  check "$g: the packages' conffiles (prometheus.yml, /etc/default/*) are as shipped (dpkg --verify: $(tr '\n' ' ' <<<"$out"))" [ "$out" = rc=0 ]
  if wait_for "$g" 30 guest_run "$g" 'grep -q "^matrix_provision_certificate_expiry_timestamp_seconds{name=\"matrix.example.test\"} [0-9]" /var/lib/prometheus/node-exporter/matrix-provision-certificates.prom' 2>/dev/null; then
    pass "$g: the certificate-expiry timer wrote the expiry of each certificate for node-exporter"
  else
    fail "$g: the certificate-expiry timer wrote the expiry of each certificate for node-exporter"
    guest_run "$g" 'cat /var/lib/prometheus/node-exporter/matrix-provision-certificates.prom; ls -la /etc/letsencrypt/live/; command -v openssl;
      sh -x /usr/local/lib/matrix-provision/cert-expiry-textfile 2>&1 | tail -n 12' 2>&1 | show_tail /dev/stdin 30
  fi

  # The UI on the Synapse vhost: 401 without the password, the API with it.
  out=$(guest_run "$g" 'curl -fsS --cacert /srv/fixtures/pebble/ca.pem https://localhost:15000/roots/0 > /root/pebble-roots.pem
    u=https://matrix.example.test/prometheus/api/v1/targets
    curl -s -o /dev/null -w "%{http_code} " --cacert /root/pebble-roots.pem "$u"
    curl -s -o /dev/null -w "%{http_code} " --cacert /root/pebble-roots.pem -u metrics:wrong "$u"
    curl -s -o /dev/null -w "%{http_code}\n" --cacert /root/pebble-roots.pem -u "metrics:$(cat /var/lib/matrix-provision/secrets/prometheus_ui_password)" "$u"
    grep -c "^metrics:[$]6[$]" /etc/nginx/matrix-provision-prometheus.htpasswd' 2>&1 || true)
  check "$g: /prometheus/ on the Synapse vhost: 401, 401 with a wrong password, 200 with the generated one, stored hashed ($(tr '\n' ' ' <<<"$out"))" \
    [ "$(tr '\n' ' ' <<<"$out")" = "401 401 200 1 " ]

  rc=0; glog "$g" "$g-doctor.log" 300 matrix-provision doctor --offline --ca-file /root/pebble-roots.pem || rc=$?
  if grep -q '✓ prometheus targets: all 4 up' "$RUN_DIR/logs/$g-doctor.log" && grep -q '✓ prometheus alerts: none firing' "$RUN_DIR/logs/$g-doctor.log"; then
    pass "$g: doctor: all targets up, no alert firing"
  else
    fail "$g: doctor: all targets up, no alert firing"; grep -i prometheus "$RUN_DIR/logs/$g-doctor.log" | show_tail /dev/stdin
  fi

  # One alert made to fire: Synapse stopped.
  guest_run "$g" 'systemctl stop matrix-synapse'
  t0=$SECONDS
  if wait_for "$g" 120 metrics_alert_firing "$g" SynapseDown; then
    pass "$g: Synapse stopped: SynapseDown fires after $((SECONDS - t0)) s"
  else
    fail "$g: Synapse stopped: SynapseDown fires ($(prom_query "$g" /api/v1/alerts 2>&1 | tr '\n' ' '))"
  fi
  rc=0; glog "$g" "$g-doctor-down.log" 300 matrix-provision doctor --offline --ca-file /root/pebble-roots.pem || rc=$?
  if [ $rc -eq 1 ] && grep -q '✗ prometheus alerts: firing: SynapseDown (process=main)' "$RUN_DIR/logs/$g-doctor-down.log" &&
    grep -q '✗ prometheus targets: 1 of 4 down: synapse main' "$RUN_DIR/logs/$g-doctor-down.log"; then
    pass "$g: doctor exits 1 naming the firing SynapseDown and the down target"
  else
    fail "$g: doctor exits 1 naming the firing SynapseDown and the down target (exit $rc)"; grep -i prometheus "$RUN_DIR/logs/$g-doctor-down.log" | show_tail /dev/stdin
  fi
  guest_run "$g" 'systemctl start matrix-synapse'

  # Off again: stopped, disabled, our files gone, Synapse's listener gone; the packages stay.
  set_toml_key "$g" metrics enabled false
  rc=0; phase "$g: apply (metrics off)" glog "$g" "$g-apply-off.log" 600 matrix-provision apply $cfg || rc=$?
  expect_rc "$g: apply with metrics.enabled = false" 0 $rc "$g-apply-off.log"
  out=$(guest_run "$g" 'for u in prometheus prometheus-node-exporter prometheus-postgres-exporter matrix-provision-cert-expiry.timer; do
      echo "$u $(systemctl is-active $u) $(systemctl is-enabled $u 2>/dev/null || true)"; done
    ls -d /etc/systemd/system/prometheus*.service.d /etc/prometheus/matrix-provision* /etc/nginx/snippets/matrix-provision-prometheus.conf \
      /etc/nginx/matrix-provision-prometheus.htpasswd /etc/systemd/system/matrix-provision-cert-expiry.* 2>/dev/null
    ss -Hltn "( sport = :9000 or sport = :9090 )"
    runuser -u postgres -- psql -Atc "select count(*) from pg_roles where rolname = '"'"'prometheus'"'"'"' 2>&1 || true)
  local want="prometheus inactive disabled
prometheus-node-exporter inactive disabled
prometheus-postgres-exporter inactive disabled
matrix-provision-cert-expiry.timer inactive 
0"
  if [ "$out" = "$want" ] || [ "$out" = "${want/timer inactive /timer inactive not-found}" ]; then
    pass "$g: metrics off: units stopped and disabled, drop-ins, configs, snippet and role gone, nothing on 9000/9090"
  else
    fail "$g: metrics off: units stopped and disabled, drop-ins, configs, snippet and role gone (got: $(tr '\n' '|' <<<"$out"))"
  fi
  rc=0; glog "$g" "$g-apply-off-again.log" 300 matrix-provision apply --detailed-exitcodes $cfg || rc=$?
  expect_rc "$g: and a rerun changes nothing" 0 $rc "$g-apply-off-again.log"
  check "$g: postgresql, matrix-synapse, coturn, nginx active" services_active "$g"
  guest_destroy "$g"
}
