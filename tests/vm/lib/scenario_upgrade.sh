# shellcheck shell=bash
# Issue 11, item 3: a Debian 12 host converged with data (a user and a message), upgraded in place to 13 the
# way Debian's release notes say (every apt source to trixie, `apt full-upgrade`, from the local mirror). Its
# PostgreSQL 15 cluster still holds Synapse's data; postgresql-17 is installed beside it (it creates no 17/main:
# postgresql-common makes a main cluster only on a host that has none).
# apply must stop before touching anything and print the procedure; after running exactly the printed
# commands, apply converges on PostgreSQL 17 and the old message is still readable.

# The procedure apply printed: "  N. sudo CMD   # why" lines → CMD, one per line.
printed_procedure() { sed -n 's/^ *[0-9]\. sudo \(.*\)$/\1/p' "$1" | sed 's/ *#.*$//'; }

scenario_upgrade() {
  local tier=$1 g=$1-upgrade rc out
  if [ ! -d "$FIXTURES/debian13" ]; then
    skip "$g (this run's fixtures have no Debian 13 mirror to upgrade from; it runs with --release 12|all)"
    return 0
  fi
  fresh_guest "$g" "$tier" || return 0
  rc=0; phase "$g: apply (Debian 12)" glog "$g" "$g-apply12.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply on Debian 12" 0 $rc "$g-apply12.log"
  [ $rc -eq 0 ] || { guest_destroy "$g"; return 0; }
  rc=0; glog "$g" "$g-write.log" 200 python3 /root/checks/message.py write /root/message.json || rc=$?
  expect_rc "$g: a user sends a message on Debian 12 ($(head -c 200 "$RUN_DIR/logs/$g-write.log"))" 0 $rc "$g-write.log"

  # The admin's upgrade: Debian's sources and the matrix.org one to trixie, then full-upgrade.
  rc=0; phase "$g: apt full-upgrade to 13" glog "$g" "$g-full-upgrade.log" 1800 '
    set -e
    echo "deb [trusted=yes] file:/srv/fixtures/debian13 ./" > /etc/apt/sources.list
    sed -i "s/^Suites: bookworm$/Suites: trixie/" /etc/apt/sources.list.d/matrix-org.sources
    # A container boots no kernel of its own: a new one (and its initramfs, minutes under TCG-like load) proves nothing here.
    if [ "$(systemd-detect-virt -c)" != none ]; then
      apt-mark hold linux-image-amd64 >/dev/null
      sed -i "s/^update_initramfs=.*/update_initramfs=no/" /etc/initramfs-tools/update-initramfs.conf
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get full-upgrade -y -q -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef
    . /etc/os-release; echo "now: $PRETTY_NAME"; pg_lsclusters' || rc=$?
  expect_rc "$g: apt full-upgrade to Debian 13" 0 $rc "$g-full-upgrade.log"
  [ $rc -eq 0 ] || { guest_destroy "$g"; return 0; }
  out=$(guest_run "$g" '. /etc/os-release; echo "$VERSION_ID $(pg_lsclusters --no-header | awk "{print \$1\"/\"\$2\":\"\$3}" | tr "\n" " ")"' 2>&1)
  check "$g: Debian 13, Synapse's data still in 15/main on 5432 ($out)" grep -Eq '^13 15/main:5432 (17/main:[0-9]+ )?$' <<<"$out"
  local new_cluster=
  ! grep -q '17/main' <<<"$out" || new_cluster=1

  local roots="/etc /usr/local /var/www /opt /var/lib/dpkg/status /var/lib/matrix-provision"
  snapshot "$g" $roots >"$RUN_DIR/logs/$g-before.snap"
  rc=0; phase "$g: apply (upgraded, refuses)" glog "$g" "$g-refused.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply on the upgraded host stops" 1 $rc "$g-refused.log"
  local procedure
  procedure=$(printed_procedure "$RUN_DIR/logs/$g-refused.log")
  # An existing (empty) 17/main must go first, or pg_upgradecluster refuses; without one, the upgrade is first.
  local first='pg_upgradecluster 15 main'
  [ -z "$new_cluster" ] || first='pg_dropcluster --stop 17 main'
  if grep -q 'upgraded in place' "$RUN_DIR/logs/$g-refused.log" && grep -qx 'pg_upgradecluster 15 main' <<<"$procedure" &&
    [ "$(head -n1 <<<"$procedure")" = "$first" ]; then
    pass "$g: it prints the procedure ($(tr '\n' ';' <<<"$procedure"))"
  else
    fail "$g: it prints the procedure (got: $(tr '\n' ';' <<<"$procedure"))"; show_tail "$RUN_DIR/logs/$g-refused.log" 20
  fi
  snapshot "$g" $roots >"$RUN_DIR/logs/$g-after.snap"
  if diff -q "$RUN_DIR/logs/$g-before.snap" "$RUN_DIR/logs/$g-after.snap" >/dev/null; then pass "$g: the refused apply changed no file"; else
    fail "$g: the refused apply changed no file"; diff "$RUN_DIR/logs/$g-before.snap" "$RUN_DIR/logs/$g-after.snap" | head -20 | sed 's/^/      | /'; fi
  if [ -n "$new_cluster" ]; then
    out=$(guest_run "$g" 'ls /etc/postgresql/17/main/conf.d/; port=$(pg_lsclusters --no-header | awk "\$1 == 17 {print \$3}"); runuser -u postgres -- psql -p "$port" -XAtqc "SELECT count(*) FROM pg_database WHERE datname = '"'synapse'"'" 2>&1' || true)
    check "$g: nothing was created on PostgreSQL 17 ($out)" [ "$out" = 0 ]
  else
    out=$(guest_run "$g" 'ls -d /etc/postgresql/17/main 2>&1' || true)
    check "$g: no PostgreSQL 17 cluster was created ($out)" grep -q 'No such file' <<<"$out"
  fi

  # The printed procedure, up to and including pg_upgradecluster; the old cluster goes after Synapse works.
  local cmd ran=
  while IFS= read -r cmd; do
    [ -n "$cmd" ] || continue
    rc=0; phase "$g: $cmd" glog "$g" "$g-proc-$(tr -c 'a-z0-9' _ <<<"$cmd" | head -c 40).log" 900 "$cmd" || rc=$?
    check "$g: the documented step \`$cmd\` succeeds" [ $rc -eq 0 ] || break
    ran="$ran$cmd;"
    case $cmd in pg_upgradecluster*) break ;; esac
  done <<<"$procedure"
  rc=0; phase "$g: apply (after pg_upgradecluster)" glog "$g" "$g-apply13.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply converges on PostgreSQL 17 after the documented steps ($ran)" 0 $rc "$g-apply13.log"
  rc=0; glog "$g" "$g-read.log" 200 python3 /root/checks/message.py read /root/message.json || rc=$?
  expect_rc "$g: the old user reads the old message on Debian 13" 0 $rc "$g-read.log"
  out=$(guest_run "$g" 'ls /etc/postgresql/17/main/conf.d/; pg_lsclusters --no-header | awk "{print \$1\"/\"\$2\":\"\$3\":\"\$4}" | tr "\n" " "' 2>&1 || true)
  check "$g: Synapse's data now in 17/main on 5432, tuned there ($out)" grep -q 'matrix-provision.conf.*17/main:5432:online' <<<"$(tr '\n' ' ' <<<"$out")"
  # The rest of the procedure: drop the old cluster, purge its package; then nothing left to change.
  local rest
  rest=$(sed -n '/^pg_upgradecluster/,$p' <<<"$procedure" | tail -n +2)
  while IFS= read -r cmd; do
    [ -n "$cmd" ] || continue
    case $cmd in apt\ *) cmd="DEBIAN_FRONTEND=noninteractive $cmd -y" ;; esac
    rc=0; glog "$g" "$g-proc-rest.log" 600 "$cmd" || rc=$?
    check "$g: the documented step \`$cmd\` succeeds" [ $rc -eq 0 ]
  done <<<"$rest"
  rc=0; glog "$g" "$g-apply13b.log" "$(apply_timeout "$g")" matrix-provision apply --detailed-exitcodes /root/host.toml || rc=$?
  expect_rc "$g: then apply changes nothing" 0 $rc "$g-apply13b.log"
  client_checks "$g" checks-after-upgrade
  rc=0; glog "$g" "$g-read2.log" 200 python3 /root/checks/message.py read /root/message.json || rc=$?
  expect_rc "$g: the old message is still readable with the old cluster gone" 0 $rc "$g-read2.log"
  guest_destroy "$g"
}
