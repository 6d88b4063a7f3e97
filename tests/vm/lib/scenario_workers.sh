# shellcheck shell=bash
# Issue 13: Synapse workers on one guest. Explicit counts on a fresh host bring up Redis (unix socket only)
# and five workers (media, stream writer, sync, federation, client) under matrix-synapse.target; a rerun
# changes nothing; the client checks pass and the workers' journals show that they, not the main process,
# served /sync, sending, typing, media and federation; doctor checks every worker's /health and Redis; a reboot brings the target up again; scaling
# (sync 1 → 2, stream writer 1 → 0, a background worker) plans and applies exactly those units and files;
# mode = "auto" without counts picks no workers on this 2-CPU guest, plan says why, and apply stops,
# disables and deletes everything (the same path as mode = "off"); the client checks pass on one process.

# workers_layout NAME LINE...: replace the body of [synapse.workers] in the guest's /root/host.toml.
workers_layout() {
  local name=$1
  shift
  printf '%s\n' "$@" | guest_run "$name" 'python3 /root/checks/set_workers.py'
}

# plan_ids NAME LOG: the ids plan --json would change, one line, sorted.
workers_plan_ids() {
  guest_run "$1" 'matrix-provision plan --json /root/host.toml 2>/dev/null | python3 /root/checks/plan_ids.py | sort | tr "\n" " "' 2>/dev/null || true
}

# served_by NAME UNIT PATTERN: the unit's journal holds an access-log line matching PATTERN.
served_by() {
  guest_run "$1" "journalctl -u '$2' --no-pager -o cat | grep -Eq 'Processed request: .*$3'"
}

workers_active() { # NAME WORKER...: the target and every named worker active
  local g=$1 w units=matrix-synapse.target
  shift
  for w in "$@"; do units="$units matrix-synapse-worker@$w"; done
  guest_run "$g" "systemctl is-active $units" >/dev/null 2>&1
}

scenario_workers() {
  local tier=$1 g=$1-workers rc out ids cfg=/root/host.toml
  fresh_guest "$g" "$tier" || return 0

  # ---- a fresh host with explicit counts: five workers ----------------------------------------------
  workers_layout "$g" 'mode = "auto"' 'media = 1' 'stream_writer = 1' 'sync = 1' 'federation = 1' 'client = 1'
  rc=0; glog "$g" "$g-plan-on.log" 300 matrix-provision plan $cfg || rc=$?
  ids=$(workers_plan_ids "$g")
  local want
  for want in packages redis-service synapse-conf-workers synapse-worker-conf-sync1 synapse-worker-client1 synapse-target \
    restart:matrix-synapse restart:matrix-synapse-worker@media1 reload:nginx; do
    grep -qw -- "$want" <<<"$ids" || { fail "$g: plan for five workers lists $want (got: $ids)"; continue; }
  done
  check "$g: plan for five workers exits 2" test $rc -eq 2
  rc=0; phase "$g: apply (fresh, workers on)" glog "$g" "$g-apply-on.log" "$(apply_timeout "$g")" matrix-provision apply $cfg || rc=$?
  expect_rc "$g: apply on a fresh host brings up five workers" 0 $rc "$g-apply-on.log"
  [ $rc -eq 0 ] || { guest_destroy "$g"; return 0; }
  rc=0; glog "$g" "$g-apply-on2.log" 300 matrix-provision apply --detailed-exitcodes $cfg || rc=$?
  expect_rc "$g: a rerun changes nothing" 0 $rc "$g-apply-on2.log"
  check "$g: matrix-synapse.target and the five workers are active" workers_active "$g" media1 stream_writer1 sync1 federation1 client1
  out=$(guest_run "$g" 'ss -Hltn | grep -c ":6379 " ; runuser -u nobody -- redis-cli -s /run/matrix-provision-redis/redis.sock ping 2>&1; runuser -u matrix-synapse -- redis-cli -s /run/matrix-provision-redis/redis.sock ping' 2>&1 || true)
  check "$g: Redis: no TCP port, refused to nobody, PONG to matrix-synapse ($(tr '\n' ' ' <<<"$out"))" \
    python3 -c 'import sys; l=sys.argv[1].splitlines(); sys.exit(not (l[0]=="0" and "denied" in l[1].lower() and l[-1]=="PONG"))' "$out"

  client_checks "$g" checks-workers
  local traffic=$RUN_DIR/logs/$g-traffic.log line
  rc=0; glog "$g" "$g-traffic.log" 300 python3 /root/checks/workers_traffic.py || rc=$?
  while IFS= read -r line; do
    case $line in "PASS "*) pass "$g: ${line#PASS }" ;; "FAIL "*) fail "$g: ${line#FAIL }" ;; esac
  done <"$traffic"
  local unit pat
  while read -r unit pat; do
    check "$g: $unit served $pat" served_by "$g" "$unit" "$pat"
  done <<'EOF'
matrix-synapse-worker@sync1 "GET /_matrix/client/v3/sync
matrix-synapse-worker@client1 "PUT /_matrix/client/v3/rooms/[^ ]*/send/
matrix-synapse-worker@client1 "POST /_matrix/client/v3/createRoom
matrix-synapse-worker@stream_writer1 "PUT /_matrix/client/v3/rooms/[^ ]*/typing/
matrix-synapse-worker@media1 "POST /_matrix/media/v3/upload
matrix-synapse-worker@media1 "GET /_matrix/client/v1/media/download/
matrix-synapse-worker@federation1 "GET /_matrix/federation/v1/version
EOF
  out=$(guest_run "$g" "grep -cE '\"(GET|PUT|POST) /_matrix/(client/v3/sync|client/v3/rooms/[^ ]*/send/|media/|federation/v1/version)' /var/log/matrix-synapse/homeserver.log" 2>/dev/null || true)
  check "$g: the main process served none of those ($out lines)" [ "${out:-x}" = 0 ]
  guest_run "$g" 'curl -fsS --cacert /srv/fixtures/pebble/ca.pem https://localhost:15000/roots/0 >> /root/pebble-roots.pem' || true
  rc=0; glog "$g" "$g-doctor.log" 120 matrix-provision doctor --ca-file /root/pebble-roots.pem $cfg || rc=$?
  expect_rc "$g: doctor all ✓ with workers" 0 $rc "$g-doctor.log"
  for want in '✓ matrix-synapse-worker@sync1 health' '✓ matrix-synapse-worker@media1 health' '✓ redis-server answers' '✓ service matrix-synapse.target'; do
    grep -qF "$want" "$RUN_DIR/logs/$g-doctor.log" && pass "$g: doctor: $want" || fail "$g: doctor: $want"
  done

  # ---- reboot: the target brings everything up ------------------------------------------------------
  if phase "$g: reboot" guest_reboot "$g"; then
    local i
    for ((i = 0; i < 90; i++)); do workers_active "$g" media1 stream_writer1 sync1 federation1 client1 && break; sleep 2; done
    check "$g: after a reboot the target and every worker are active" workers_active "$g" media1 stream_writer1 sync1 federation1 client1
    client_checks "$g" checks-after-reboot --only register-with-token,login,room-send-read,admin-api-hidden
  else
    fail "$g: guest reboots"
  fi

  # ---- scale: sync 2, no stream writer, a background worker --------------------------------------------
  workers_layout "$g" 'mode = "auto"' 'media = 1' 'stream_writer = 0' 'sync = 2' 'federation = 1' 'client = 1' 'background = 1'
  ids=$(workers_plan_ids "$g")
  # (host-toml: the copy of host.toml apply keeps.) No PostgreSQL restart: max_connections stays at 100.
  # synapse-conf-caches: the caches are sized per process (6 → 7), under the restart Synapse needs anyway.
  want="host-toml nginx-synapse-vhost reload:nginx restart:matrix-synapse restart:matrix-synapse-worker@background1 restart:matrix-synapse-worker@sync2 synapse-conf-caches synapse-conf-workers synapse-worker-background1 synapse-worker-conf-background1 synapse-worker-conf-sync2 synapse-worker-sync2 synapse-workers-prune"
  local got_sorted want_sorted
  got_sorted=$(tr ' ' '\n' <<<"$ids" | grep -v '^$' | sort | tr '\n' ' ')
  want_sorted=$(tr ' ' '\n' <<<"$want" | sort | tr '\n' ' ')
  check "$g: plan for the new layout is exactly its units, files and restarts (got: $got_sorted)" [ "$got_sorted" = "$want_sorted" ]
  rc=0; phase "$g: apply (scale)" glog "$g" "$g-apply-scale.log" "$(apply_timeout "$g")" matrix-provision apply $cfg || rc=$?
  expect_rc "$g: apply of the new layout" 0 $rc "$g-apply-scale.log"
  check "$g: sync2 and background1 active" workers_active "$g" media1 sync1 sync2 federation1 client1 background1
  out=$(guest_run "$g" 'grep -o "/ [0-9]* process(es)" /etc/matrix-synapse/conf.d/mp-caches.yaml' 2>&1 || true)
  check "$g: the caches are sized for the main process and 6 workers ($out)" [ "$out" = "/ 7 process(es)" ]
  out=$(guest_run "$g" 'systemctl is-enabled matrix-synapse-worker@stream_writer1 2>&1; systemctl is-active matrix-synapse-worker@stream_writer1 2>&1; ls /etc/matrix-synapse/workers' 2>&1 || true)
  check "$g: stream_writer1 stopped, disabled, its file gone ($(tr '\n' ' ' <<<"$out"))" \
    python3 -c 'import sys; o=sys.argv[1]; sys.exit(not ("enabled\n" not in o and "\nactive" not in o and "stream_writer1.yaml" not in o))' "$out"
  rc=0; glog "$g" "$g-apply-scale2.log" 300 matrix-provision apply --detailed-exitcodes $cfg || rc=$?
  expect_rc "$g: a rerun after scaling changes nothing" 0 $rc "$g-apply-scale2.log"

  # ---- auto without counts on 2 CPUs: no workers, plan says why, everything goes --------------------
  workers_layout "$g" 'mode = "auto"'
  rc=0; glog "$g" "$g-plan-auto.log" 300 matrix-provision plan $cfg || rc=$?
  out=$(grep -o 'synapse.workers: auto: no workers on [^(]*' "$RUN_DIR/logs/$g-plan-auto.log" | head -n1 || true)
  check "$g: plan says why auto chooses no workers here (${out:-nothing})" test -n "$out"
  ids=$(workers_plan_ids "$g")
  for want in synapse-workers-prune synapse-target-off redis-off synapse-conf-workers-absent synapse-worker-unit-absent restart:matrix-synapse; do
    grep -qw -- "$want" <<<"$ids" || fail "$g: plan for no workers lists $want (got: $ids)"
  done
  rc=0; phase "$g: apply (auto: no workers)" glog "$g" "$g-apply-off.log" "$(apply_timeout "$g")" matrix-provision apply $cfg || rc=$?
  expect_rc "$g: apply with auto choosing no workers" 0 $rc "$g-apply-off.log"
  out=$(guest_run "$g" 'for f in /etc/systemd/system/matrix-synapse.target /etc/systemd/system/matrix-synapse-worker@.service \
      /etc/matrix-synapse/conf.d/mp-workers.yaml /etc/systemd/system/matrix-synapse.service.d/matrix-provision-workers.conf \
      /etc/systemd/system/redis-server.service.d/matrix-provision.conf /etc/matrix-provision/redis.conf /etc/matrix-synapse/workers/*.yaml; do
      [ -e "$f" ] && echo "left: $f"; done
    echo "units: $(systemctl list-units --no-legend "matrix-synapse-worker@*" | grep -c .)"; echo "redis: $(systemctl is-active redis-server)"' 2>&1 || true)
  check "$g: no worker unit, file, target or Redis left running ($(tr '\n' ' ' <<<"$out"))" [ "$(tr '\n' ' ' <<<"$out")" = "units: 0 redis: inactive " ]
  rc=0; glog "$g" "$g-apply-off2.log" 300 matrix-provision apply --detailed-exitcodes $cfg || rc=$?
  expect_rc "$g: a rerun with no workers changes nothing" 0 $rc "$g-apply-off2.log"
  client_checks "$g" checks-single --only register-with-token,login,room-send-read
  guest_destroy "$g"
}
