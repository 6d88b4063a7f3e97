# shellcheck shell=bash
# Issue 14, items 1, 2, 4, 5 and 6: backups that really restore. The restic repository lives on the host
# ($RUN_DIR/backup-repo, bind-mounted at /srv/backup in each guest), outside guest A's disk.
#   A: converge with [backup] and [media] on; a user, a room, a message and an uploaded file; the backup
#      timer's own service (sandboxed) backs up; `backup list`; the maintenance service; restore refusals
#      (a database with data, an incomplete backup) that change nothing; a backup killed midway (SIGKILL of
#      its cgroup while restic runs), doctor says interrupted, the next backup succeeds and `restic check`
#      is clean. The repository password goes "off the host" (to the harness), then A is destroyed.
#   B: a fresh guest, booted beside A and converged with the stock host.toml (no [backup], no [media])
#      while A converges: the two long applies overlap instead of following each other (that halved the
#      scenario). It never holds data. Then A's host.toml and the stored password put in place,
#      `restore --snapshot latest` (its apply first installs restic, opens the repository and sets the
#      media keys): the old user logs in with the old password, reads the old message, downloads the old
#      file, /_matrix/key/v2/server serves A's signing key; apply then changes nothing; another
#      server_name is refused.

backup_rc() { # NAME LOG TIMEOUT CMD: glog, and print its exit status
  local rc=0
  glog "$@" || rc=$?
  echo "$rc"
}

# backup_stop_guest NAME: the guest is gone at once (container stopped, overlay unmounted, netns deleted);
# removing its disk (a converged guest's files: about a minute on a busy disk) goes on in the background,
# beside B's restore or the next scenario, and the harness waits for it on exit.
backup_stop_guest() {
  nspawn_destroy "$1"
  guest_destroy "$1" >/dev/null 2>&1 &
  on_exit "wait $!"
}

scenario_backup() {
  local tier=$1 a=$1-backup-a b=$1-backup-b rc out repo
  if [ "$tier" != container ]; then
    skip "$tier/backup (the repository is a host directory bind-mounted into container guests)"
    return 0
  fi
  repo=$RUN_DIR/backup-repo
  rm -rf "$repo" && mkdir -p "$repo"
  GUEST_BINDS="$repo:/srv/backup" fresh_guest "$a" "$tier" || return 0
  GUEST_BINDS="$repo:/srv/backup" fresh_guest "$b" "$tier" || { guest_destroy "$a"; return 0; }
  # B's apply in the background (a subshell: it reports through a file, the checks stay in this shell).
  local bdone=$RUN_DIR/$b-preapply.done bpid t0
  rm -f "$bdone"
  t0=$(now_ms)
  (
    r=0
    glog "$b" "$b-preapply.log" "$(apply_timeout "$b")" matrix-provision apply /root/host.toml || r=$?
    echo "$r $(($(now_ms) - t0))" >"$bdone"
  ) &
  bpid=$!
  set_toml_key "$a" backup enabled true
  set_toml_key "$a" backup repository '"/srv/backup/matrix"'
  set_toml_key "$a" media purge_remote_media_days 30
  set_toml_key "$a" media remote_media_lifetime_days 60
  rc=0; phase "$a: apply (backups on)" glog "$a" "$a-apply.log" "$(apply_timeout "$a")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$a: apply with [backup] and [media]" 0 $rc "$a-apply.log"
  [ $rc -eq 0 ] || { wait "$bpid"; guest_destroy "$a"; guest_destroy "$b"; return 0; }
  local pwfile=/etc/matrix-provision/backup/restic-password
  if grep -q "$pwfile" "$RUN_DIR/logs/$a-apply.log" && grep -q 'OFF this host' "$RUN_DIR/logs/$a-apply.log" &&
    ! grep -qF "$(guest_run "$a" "cat $pwfile")" "$RUN_DIR/logs/$a-apply.log"; then
    pass "$a: apply says where the repository password is and that it must be stored off the host, not the value"
  else
    fail "$a: apply says where the repository password is and that it must be stored off the host, not the value"
    show_tail "$RUN_DIR/logs/$a-apply.log" 20
  fi
  out=$(guest_run "$a" "stat -c '%a %U' $pwfile; systemctl is-active matrix-backup.timer matrix-maintenance.timer; ls /srv/backup/matrix" 2>&1 | tr '\n' ' ' || true)
  check "$a: password 0600 root, both timers active, the repository created on the host's disk ($out)" \
    grep -q '^600 root active active .*config' <<<"$out"
  check "$a: the repository is outside the guest: in the host's $repo" test -f "$repo/matrix/config"

  rc=0; glog "$a" "$a-write.log" 200 python3 /root/checks/message.py write /root/message.json --with-file || rc=$?
  expect_rc "$a: a user sends a message and uploads a file ($(head -c 200 "$RUN_DIR/logs/$a-write.log"))" 0 $rc "$a-write.log"
  rc=0; glog "$a" "$a-key.log" 60 python3 /root/checks/message.py key /root/key-a.json || rc=$?
  expect_rc "$a: /_matrix/key/v2/server on A" 0 $rc "$a-key.log"

  # The timer's own service: the sandbox must allow pg_dump as postgres, the media, the repository, and
  # node-exporter's textfile directory (made here as prometheus-node-exporter would: metrics are off, their
  # apply is the metrics scenario's).
  guest_run "$a" 'install -d -m 0755 /var/lib/prometheus/node-exporter'
  rc=0; phase "$a: systemctl start matrix-backup.service" glog "$a" "$a-backup1.log" 600 \
    'systemctl start matrix-backup.service; s=$?; journalctl -u matrix-backup.service --no-pager -n 20; exit $s' || rc=$?
  expect_rc "$a: the backup service (sandboxed) backs up" 0 $rc "$a-backup1.log"
  out=$(guest_run "$a" 'python3 -c "import json; s=json.load(open(\"/var/lib/matrix-provision/last-backup.json\")); print(s[\"result\"], s[\"snapshot\"], s[\"last_success_unix\"] is not None)"' 2>&1 || true)
  check "$a: last-backup.json records the success ($out)" grep -Eq '^ok [0-9a-f]{8} True$' <<<"$out"
  out=$(guest_run "$a" 'python3 -c "import json; print(json.load(open(\"/var/lib/matrix-provision/last-backup.json\"))[\"last_success_unix\"])";
    grep -E "^matrix_provision_backup_(last_success_timestamp_seconds|last_run_success) " /var/lib/prometheus/node-exporter/matrix-provision-backup.prom' 2>&1 | tr '\n' ' ' || true)
  check "$a: the textfile metric holds the last success's time and last_run_success 1 ($out)" \
    grep -Eq '^([0-9]+) matrix_provision_backup_last_success_timestamp_seconds \1 matrix_provision_backup_last_run_success 1 $' <<<"$out"
  rc=0; glog "$a" "$a-list.log" 120 matrix-provision backup list || rc=$?
  check "$a: backup list shows one complete backup with size and age (exit $rc: $(tail -n1 "$RUN_DIR/logs/$a-list.log"))" \
    grep -Eq '^[0-9a-f]{8} +20[0-9-]+T[0-9:]+Z +[0-9]+ (s|min) +[0-9.]+ [KM]iB +complete$' "$RUN_DIR/logs/$a-list.log"
  rc=0; glog "$a" "$a-maint.log" 300 \
    'systemctl start matrix-maintenance.service; s=$?; journalctl -u matrix-maintenance.service --no-pager -n 30; exit $s' || rc=$?
  if [ $rc -eq 0 ] && grep -q 'purged [0-9]* cached remote media' "$RUN_DIR/logs/$a-maint.log" &&
    grep -q 'database synapse: ' "$RUN_DIR/logs/$a-maint.log" && grep -q 'largest rooms' "$RUN_DIR/logs/$a-maint.log"; then
    pass "$a: the maintenance service purges remote media through the admin API, reports database size and largest rooms"
  else
    fail "$a: the maintenance service purges remote media, reports database size and largest rooms (exit $rc)"; show_tail "$RUN_DIR/logs/$a-maint.log" 20
  fi
  guest_run "$a" 'curl -fsS --cacert /srv/fixtures/pebble/ca.pem https://localhost:15000/roots/0 > /root/pebble-roots.pem'
  rc=0; glog "$a" "$a-doctor.log" 120 matrix-provision doctor --offline --ca-file /root/pebble-roots.pem || rc=$?
  out=$(grep '^. backup' "$RUN_DIR/logs/$a-doctor.log" || true)
  check "$a: doctor: ${out:-no backup line}" grep -Eq '^✓ backup: last success [0-9]+ (s|min) ago' <<<"$out"

  # Refusals on A, which has data: nothing is stopped or changed.
  rc=0; glog "$a" "$a-refuse-data.log" 300 matrix-provision restore --snapshot latest /root/host.toml || rc=$?
  if [ $rc -eq 1 ] && grep -q 'already holds data' "$RUN_DIR/logs/$a-refuse-data.log" && guest_run "$a" 'systemctl is-active -q matrix-synapse'; then
    pass "$a: restore onto a database with data is refused ($(grep -o 'already holds data ([^)]*)' "$RUN_DIR/logs/$a-refuse-data.log")), Synapse still runs"
  else
    fail "$a: restore onto a database with data is refused (exit $rc)"; show_tail "$RUN_DIR/logs/$a-refuse-data.log"
  fi

  # A backup killed midway: a big file in the media store keeps restic busy long enough to be caught.
  guest_run "$a" 'head -c 400M /dev/urandom > /var/lib/matrix-synapse/media/big.bin'
  guest_run "$a" 'systemctl start --no-block matrix-backup.service'
  local caught= i
  for ((i = 0; i < 600; i++)); do
    if guest_run "$a" 'pgrep -af "^restic backup --host"' 2>/dev/null | grep -q -- '--tag mp-files'; then
      caught=1; break
    fi
    sleep 0.1
  done
  sleep 0.5
  guest_run "$a" 'systemctl kill --signal=KILL matrix-backup.service; sleep 1; systemctl reset-failed matrix-backup.service' >/dev/null 2>&1 || true
  check "$a: the backup was killed while restic stored the files" test -n "$caught"
  out=$(guest_run "$a" 'python3 -c "import json; print(json.load(open(\"/var/lib/matrix-provision/last-backup.json\"))[\"result\"])"' 2>&1 || true)
  rc=0; glog "$a" "$a-doctor-killed.log" 120 matrix-provision doctor --offline --ca-file /root/pebble-roots.pem || rc=$?
  check "$a: after the kill the state says running and doctor ✗ interrupted ($out; $(grep '^. backup' "$RUN_DIR/logs/$a-doctor-killed.log"))" \
    grep -q '^✗ backup: the backup started .* was interrupted' "$RUN_DIR/logs/$a-doctor-killed.log"
  # The dump the killed run stored, with no file snapshot: an incomplete backup, refused by restore.
  local orphan
  orphan=$(guest_run "$a" 'RESTIC_REPOSITORY=/srv/backup/matrix RESTIC_PASSWORD_FILE='"$pwfile"' restic snapshots --json --tag mp-database |
    python3 -c "import json,sys; print(json.load(sys.stdin)[-1][\"short_id\"])"' 2>/dev/null || true)
  rc=0; glog "$a" "$a-refuse-incomplete.log" 300 matrix-provision restore --snapshot "$orphan" /root/host.toml || rc=$?
  if [ $rc -eq 1 ] && grep -q "snapshot $orphan is incomplete" "$RUN_DIR/logs/$a-refuse-incomplete.log"; then
    pass "$a: restore of the killed run's incomplete backup $orphan is refused"
  else
    fail "$a: restore of the killed run's incomplete backup ${orphan:-?} is refused (exit $rc)"; show_tail "$RUN_DIR/logs/$a-refuse-incomplete.log"
  fi
  guest_run "$a" 'rm -f /var/lib/matrix-synapse/media/big.bin'
  rc=0; phase "$a: backup after the kill" glog "$a" "$a-backup2.log" 600 matrix-provision backup || rc=$?
  expect_rc "$a: the next backup succeeds ($(tail -n1 "$RUN_DIR/logs/$a-backup2.log"))" 0 $rc "$a-backup2.log"
  rc=0; glog "$a" "$a-check.log" 600 "RESTIC_REPOSITORY=/srv/backup/matrix RESTIC_PASSWORD_FILE=$pwfile restic check" || rc=$?
  if [ $rc -eq 0 ] && grep -q 'no errors were found' "$RUN_DIR/logs/$a-check.log"; then
    pass "$a: restic check is clean after the killed backup"
  else
    fail "$a: restic check is clean after the killed backup (exit $rc)"; show_tail "$RUN_DIR/logs/$a-check.log"
  fi
  rc=0; glog "$a" "$a-list2.log" 120 matrix-provision backup list || rc=$?
  check "$a: backup list: 2 complete backups, none incomplete (the killed run's dump was forgotten)" \
    [ "$(grep -c ' complete$' "$RUN_DIR/logs/$a-list2.log").$(grep -c INCOMPLETE "$RUN_DIR/logs/$a-list2.log")" = 2.0 ]

  # Off the host: the password, host.toml and what the client checks need; then A is gone.
  guest_run "$a" "cat $pwfile" >"$RUN_DIR/restic-password"
  guest_run "$a" 'cat /root/host.toml' >"$RUN_DIR/backup-host.toml"
  guest_run "$a" 'cat /root/message.json' >"$RUN_DIR/backup-message.json"
  guest_run "$a" 'cat /root/key-a.json' >"$RUN_DIR/backup-key-a.json"
  backup_stop_guest "$a"

  wait "$bpid" || true
  local brc=1 bms=0
  read -r brc bms <"$bdone" || true
  PHASES+=("$(printf '%-44s %8s%s' "$b: apply, stock host.toml (beside A)" "$(fmt_ms "$bms")" "$([ "$brc" = 0 ] || echo "  (exit $brc)")")")
  expect_rc "$b: a fresh guest converges with the stock host.toml (beside A)" 0 "$brc" "$b-preapply.log"
  [ "$brc" = 0 ] || { guest_destroy "$b"; return 0; }
  guest_copy "$b" "$RUN_DIR/backup-host.toml" /root/host.toml
  guest_copy "$b" "$RUN_DIR/backup-message.json" /root/message.json
  guest_run "$b" "install -d -m 0700 /etc/matrix-provision /etc/matrix-provision/backup && install -m 0600 /dev/stdin $pwfile" <"$RUN_DIR/restic-password"
  rc=0; phase "$b: restore --snapshot latest (apply first)" glog "$b" "$b-restore.log" "$(apply_timeout "$b")" \
    matrix-provision restore --snapshot latest /root/host.toml || rc=$?
  expect_rc "$b: restore onto a fresh host with the same host.toml" 0 $rc "$b-restore.log"
  rc=0; glog "$b" "$b-read.log" 200 python3 /root/checks/message.py read /root/message.json || rc=$?
  expect_rc "$b: $(head -c 200 "$RUN_DIR/logs/$b-read.log")" 0 $rc "$b-read.log"
  rc=0; glog "$b" "$b-key.log" 60 python3 /root/checks/message.py key /root/key-b.json || rc=$?
  out=$(guest_run "$b" 'cat /root/key-b.json' 2>/dev/null || true)
  check "$b: /_matrix/key/v2/server serves A's signing key ($out)" [ "$out" = "$(cat "$RUN_DIR/backup-key-a.json")" ]
  rc=0; glog "$b" "$b-apply.log" 300 matrix-provision apply --detailed-exitcodes /root/host.toml || rc=$?
  expect_rc "$b: apply after the restore changes nothing" 0 $rc "$b-apply.log"
  guest_run "$b" "sed 's/^server_name = .*/server_name = \"other.test\"/' /root/host.toml > /root/other.toml"
  rc=0; glog "$b" "$b-refuse-name.log" 300 matrix-provision restore --snapshot latest /root/other.toml || rc=$?
  if [ $rc -eq 1 ] && grep -q 'holds backups of example.test.*server_name = "other.test"' "$RUN_DIR/logs/$b-refuse-name.log" && guest_run "$b" 'systemctl is-active -q matrix-synapse'; then
    pass "$b: a backup of example.test restored with server_name other.test is refused ($(grep -o 'holds backups of [^;]*' "$RUN_DIR/logs/$b-refuse-name.log" | head -c 120))"
  else
    fail "$b: a backup restored with another server_name is refused (exit $rc)"; show_tail "$RUN_DIR/logs/$b-refuse-name.log"
  fi
  backup_stop_guest "$b"
}
