# shellcheck shell=bash
# The scenarios of issue 3, written once against lib/guest.sh. Each starts from a fresh guest, prints one
# line per check (PASS/FAIL/SKIPPED) and tears its guest down. Product contract used here:
#   matrix-provision validate|plan|apply FILE; plan: 0 converged, 2 changes pending; apply: 0 ok, 1 error;
#   apply --detailed-exitcodes: 2 when it changed something; closing summary "N in sync, M changed, ...".

APPLY_TIMEOUT_CONTAINER=${MP_VM_APPLY_TIMEOUT_CONTAINER:-1200}
APPLY_TIMEOUT_QEMU=${MP_VM_APPLY_TIMEOUT_QEMU:-3600}
LAST_FRESH_APPLY_S=0
declare -A TIER_BOOTED=() TIER_UNAVAILABLE=()
# What else a presence change may touch: Element's config.json (enable_presence_by_hs_url) and the copy of
# host.toml apply keeps (doctor, token, user and the Element updater read it). Steps by id, files by path
# (extended regexes).
PRESENCE_COLLATERAL_STEPS='^element-config$|^host-toml$'
PRESENCE_COLLATERAL_FILES='/etc/matrix-provision/element/config.json|/etc/matrix-provision/host.toml'
# Files whose content must survive a crashed run unchanged (globs, inside the guest).
SECRET_GLOBS='/etc/matrix-synapse/secrets/* /var/lib/matrix-provision/secrets/* /etc/matrix-synapse/homeserver.signing.key /etc/turnserver.conf'

apply_timeout() { if [ "$(gtier "$1")" = qemu ]; then echo "$APPLY_TIMEOUT_QEMU"; else echo "$APPLY_TIMEOUT_CONTAINER"; fi; }

# glog NAME LOG TIMEOUT CMD: run CMD in the guest, output to $RUN_DIR/logs/LOG; prints nothing, returns CMD's rc.
glog() {
  local name=$1 logf=$RUN_DIR/logs/$2 to=$3
  shift 3
  mkdir -p "$RUN_DIR/logs"
  local rc=0
  # In the background + wait: a TERM/INT to the harness is handled at once, not after a long apply.
  GUEST_TIMEOUT=$to guest_run "$name" "$*" >"$logf" 2>&1 </dev/null &
  wait $! || rc=$?
  return $rc
}

# Show the end of a log under a failed check, so CI output says why.
show_tail() { tail -n "${2:-15}" "$1" 2>/dev/null | sed 's/^/      | /'; }
expect_rc() { # DESC WANT RC LOGNAME (under $RUN_DIR/logs)
  if [ "$3" -eq "$2" ]; then pass "$1"; else fail "$1 (exit $3, want $2; log $RUN_DIR/logs/$4)"; show_tail "$RUN_DIR/logs/$4"; fi
}

# examples/host.toml, pointed at the stand-ins (host.toml.sed).
host_toml() { sed -f "$VM_DIR/host.toml.sed" -e "s/@REPO_FPR@/$REPO_FPR/" "$VM_DIR/../../examples/host.toml"; }

# build_product_deb: packaging/build-deb for the binary under test, once per binary: the package is kept in
# target/vm-deb/<hash of the binary>/, so a run with an unchanged build reuses it. Sets MP_DEB.
build_product_deb() {
  local sum dir
  sum=$(sha256sum <"$MP_BIN" | cut -c1-16)
  dir=$REPO_ROOT/target/vm-deb/$sum
  if [ ! -f "$dir/.ok" ]; then
    if ! cargo deb --version >/dev/null 2>&1; then
      [ -n "$INSTALL" ] || { log "cargo-deb is missing (cargo install cargo-deb --locked)"; return 1; }
      log "installing cargo-deb (a build tool) from crates.io"
      cargo install cargo-deb --locked >"$RUN_DIR/logs/cargo-install-deb.log" 2>&1 || return 1
    fi
    rm -rf "$REPO_ROOT/target/vm-deb"
    mkdir -p "$dir"
    "$REPO_ROOT/packaging/build-deb" --no-build --out "$dir" >"$RUN_DIR/logs/build-deb.log" 2>&1 || return 1
    touch "$dir/.ok"
  fi
  MP_DEB=$(ls "$dir"/matrix-provision_*.deb)
  log "package: ${MP_DEB#"$REPO_ROOT"/}"
}

# The product into a fresh guest: the .deb with apt-get, as an admin installs it (`apt install ./….deb`
# pulls its Depends: Debian 13 has no gpgv until something asks for it), or a binary given with
# --binary, copied in.
install_product() {
  local name=$1
  if [ -n "${MP_DEB:-}" ]; then
    guest_copy "$name" "$MP_DEB" /root/matrix-provision.deb &&
      guest_run "$name" 'apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /root/matrix-provision.deb'
  elif [ -x "${MP_BIN:-}" ]; then
    guest_copy "$name" "$MP_BIN" /usr/local/sbin/matrix-provision
  fi
}

# What the package gives an admin: /usr/sbin/matrix-provision naming this build, man pages, completion.
package_checks() {
  local g=$1 out want
  [ -n "${MP_DEB:-}" ] || { skip "$g: package checks (--binary given: no .deb)"; return 0; }
  out=$(guest_run "$g" 'command -v matrix-provision; matrix-provision --version' 2>&1 || true)
  want=$("$MP_BIN" --version)
  check "$g: the .deb gives /usr/sbin/matrix-provision, '$want'" [ "$out" = "/usr/sbin/matrix-provision"$'\n'"$want" ]
  # man-db is not in a minimal guest: the page is where man looks, and it is a section-8 page of that name.
  out=$(guest_run "$g" 'dpkg -L matrix-provision | grep -c "^/usr/share/man/man8/matrix-provision.*\.8\.gz$";
    zcat /usr/share/man/man8/matrix-provision-apply.8.gz | grep "^\.TH"' 2>&1 || true)
  check "$g: man pages, one per subcommand ($(head -1 <<<"$out") pages; $(tail -1 <<<"$out"))" \
    grep -q '^\.TH matrix-provision-apply 8' <<<"$out"
  # Tab completion as bash does it: the package's completion function completes "ap" to "apply".
  out=$(guest_run "$g" 'source /usr/share/bash-completion/completions/matrix-provision
    COMP_WORDS=(matrix-provision ap); COMP_CWORD=1; COMP_LINE="matrix-provision ap"; COMP_POINT=${#COMP_LINE}
    _matrix__provision matrix-provision ap matrix-provision; echo "${COMPREPLY[*]}"' 2>&1 || true)
  check "$g: bash completes 'matrix-provision ap' to '$out'" [ "$out" = apply ]
  out=$(guest_run "$g" 'ls /usr/share/zsh/vendor-completions/_matrix-provision /usr/share/fish/vendor_completions.d/matrix-provision.fish /usr/share/doc/matrix-provision/examples/host.toml' 2>&1 || true)
  check "$g: zsh and fish completions, examples/host.toml under /usr/share/doc" [ "$(grep -c ^/ <<<"$out")" -eq 3 ]
}

# A fresh guest with the fixture services up, the product installed and the test files in place.
fresh_guest() {
  local name=$1 tier=$2
  if ! phase "$name: boot" guest_up "$name" "$tier"; then
    # The first boot of a tier failing means this machine cannot run such guests (no nspawn support, no
    # usable QEMU): that tier cannot run here. Once one guest has booted, a failing boot is a failure.
    if [ -z "${TIER_BOOTED[$tier]:-}" ]; then
      TIER_UNAVAILABLE[$tier]=1
      skip "$tier tier (a fresh Debian guest does not boot on this machine; see $(gdir "$name")/console.log)"
    else
      fail "$name: guest boots"
    fi
    return 1
  fi
  TIER_BOOTED[$tier]=1
  if ! {
    guest_copy "$name" "$VM_DIR/guest" /root/mp-guest &&
      guest_copy "$name" "$VM_DIR/checks" /root/checks &&
      host_toml | guest_run "$name" 'cat > /root/host.toml' &&
      install_product "$name" &&
      GUEST_TIMEOUT=120 guest_run "$name" /root/mp-guest/prepare.sh
  } >"$RUN_DIR/logs/$name-prepare.log" 2>&1; then
    fail "$name: fixture services start in the guest"
    show_tail "$RUN_DIR/logs/$name-prepare.log"
    return 1
  fi
}

# client_checks NAME LABEL [client.py args]: one PASS/FAIL line per client check.
client_checks() {
  local name=$1 label=$2 logf=$RUN_DIR/logs/$1-$2.log rc=0 line n=0
  shift 2
  phase "$name: $label" glog "$name" "$name-$label.log" 300 python3 /root/checks/client.py "$@" || rc=$?
  while IFS= read -r line; do
    case $line in
      "PASS "*) pass "$name: $label: ${line#PASS }"; n=$((n + 1)) ;;
      "FAIL "*) fail "$name: $label: ${line#FAIL }"; n=$((n + 1)) ;;
      "SKIP "*) skip "$name: $label: ${line#SKIP }" ;;
    esac
  done <"$logf"
  if [ $rc -ne 0 ] && [ $n -eq 0 ]; then fail "$name: $label: client.py ran (exit $rc)"; show_tail "$logf"; fi
}

# tuning_checks NAME LABEL: issue 17's tuning in effect (checks/tuning.py): PostgreSQL runs our sized settings,
# Synapse's connections have no TLS, nginx keeps its connections to Synapse alive. One PASS/FAIL line each.
tuning_checks() {
  local name=$1 label=$2 logf=$RUN_DIR/logs/$1-$2.log rc=0 line n=0
  glog "$name" "$name-$label.log" 120 python3 /root/checks/tuning.py || rc=$?
  while IFS= read -r line; do
    case $line in
      "PASS "*) pass "$name: $label: ${line#PASS }"; n=$((n + 1)) ;;
      "FAIL "*) fail "$name: $label: ${line#FAIL }"; n=$((n + 1)) ;;
    esac
  done <"$logf"
  if [ $rc -ne 0 ] && [ $n -eq 0 ]; then fail "$name: $label: tuning.py ran (exit $rc)"; show_tail "$logf"; fi
}

services_active() {
  guest_run "$1" 'systemctl is-active postgresql matrix-synapse coturn nginx' >/dev/null 2>&1
}

secrets_digest() {
  guest_run "$1" "for f in $SECRET_GLOBS; do [ -f \"\$f\" ] && sha256sum \"\$f\"; done; true" 2>/dev/null
}

# snapshot NAME [ROOT...]: the configuration a run may touch (not data dirs, whose files change on their own).
# set_toml_key NAME SECTION KEY VALUE: in the guest's /root/host.toml, drop KEY's lines (commented or not) from
# [SECTION] and set KEY = VALUE right under the header (the section is added when the file has none).
set_toml_key() {
  local name=$1 section=$2 key=$3 value=$4
  guest_run "$name" "grep -q '^\[$section\]' /root/host.toml || printf '\n[$section]\n' >> /root/host.toml
    sed -i -e '/^\[$section\]/,/^\[/{/^#\? *$key *=/d}' -e '/^\[$section\]/a $key = $value' /root/host.toml"
}

snapshot() {
  local name=$1
  shift
  guest_run "$name" "python3 /root/checks/snapshot.py ${*:-/etc /usr/local /var/www /opt /var/lib/dpkg/status}"
}

# ---- scenarios -------------------------------------------------------------------------------------------

# Without the product: the stand-ins work by hand (signed repo, debconf, Pebble, Element, mirror).
scenario_standins() {
  local tier=$1 g=$1-standins line rc=0
  fresh_guest "$g" "$tier" || return 0
  phase "$g: manual install" glog "$g" "$g.log" "$(apply_timeout "$g")" bash /root/checks/standins.sh "$REPO_FPR" || rc=$?
  while IFS= read -r line; do
    case $line in
      "PASS "*) pass "$g: ${line#PASS }" ;;
      "FAIL "*) fail "$g: ${line#FAIL }" ;;
    esac
  done <"$RUN_DIR/logs/$g.log"
  [ $rc -eq 0 ] || grep -q '^FAIL ' "$RUN_DIR/logs/$g.log" || { fail "$g: standins.sh (exit $rc)"; show_tail "$RUN_DIR/logs/$g.log"; }
  guest_destroy "$g"
}

# fresh → apply → apply again changes nothing → plan says converged → client checks [→ reboot → again].
scenario_core() {
  local tier=$1 with_reboot=${2:-} g=$1-core rc t0
  fresh_guest "$g" "$tier" || return 0
  package_checks "$g"
  rc=0; glog "$g" "$g-validate.log" 60 matrix-provision validate /root/host.toml || rc=$?
  expect_rc "$g: validate accepts the test host.toml" 0 $rc "$g-validate.log"
  rc=0; glog "$g" "$g-plan0.log" 300 matrix-provision plan /root/host.toml || rc=$?
  expect_rc "$g: plan on a fresh host reports pending changes" 2 $rc "$g-plan0.log"
  t0=$(date +%s)
  rc=0; phase "$g: apply (fresh)" glog "$g" "$g-apply1.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  LAST_FRESH_APPLY_S=$(($(date +%s) - t0))
  expect_rc "$g: apply on a fresh host" 0 $rc "$g-apply1.log"
  if [ $rc -ne 0 ]; then guest_destroy "$g"; return 0; fi
  if [ -n "${MP_DEB:-}" ]; then
    # The packaged binary is what the update timer runs: no second copy that a package upgrade would leave stale.
    local exec
    exec=$(guest_run "$g" 'systemctl show -p ExecStart --value matrix-element-update.service | grep -o "path=[^ ;]*"; ls /usr/local/bin' 2>&1 || true)
    check "$g: the update timer runs the package's /usr/sbin/matrix-provision, no copy in /usr/local/bin ($(tr '\n' ' ' <<<"$exec"))" \
      [ "$exec" = path=/usr/sbin/matrix-provision ]
  fi
  rc=0; phase "$g: apply (rerun)" glog "$g" "$g-apply2.log" "$(apply_timeout "$g")" matrix-provision apply --detailed-exitcodes /root/host.toml || rc=$?
  expect_rc "$g: second apply changes nothing (--detailed-exitcodes)" 0 $rc "$g-apply2.log"
  if grep -Eq '(^|[^0-9])0 changed' "$RUN_DIR/logs/$g-apply2.log"; then pass "$g: second apply says 0 changed"; else
    fail "$g: second apply says 0 changed"; show_tail "$RUN_DIR/logs/$g-apply2.log" 5; fi
  rc=0; phase "$g: plan (converged)" glog "$g" "$g-plan1.log" 300 matrix-provision plan /root/host.toml || rc=$?
  expect_rc "$g: plan on the converged host exits 0" 0 $rc "$g-plan1.log"
  client_checks "$g" checks
  tuning_checks "$g" tuning
  if [ -n "$with_reboot" ]; then
    if phase "$g: reboot" guest_reboot "$g"; then
      pass "$g: guest reboots"
      local i
      for ((i = 0; i < 60; i++)); do services_active "$g" && break; sleep 2; done
      client_checks "$g" checks-after-reboot
      tuning_checks "$g" tuning-after-reboot
      # Facts read again after a boot (memory, CPUs, cgroup limits) size everything the same.
      rc=0; glog "$g" "$g-apply3.log" "$(apply_timeout "$g")" matrix-provision apply --detailed-exitcodes /root/host.toml || rc=$?
      expect_rc "$g: apply after the reboot changes nothing (--detailed-exitcodes)" 0 $rc "$g-apply3.log"
    else
      fail "$g: guest reboots"
    fi
  fi
  guest_destroy "$g"
}

# Change one setting → plan shows that fragment and a Synapse restart → apply changes only that.
scenario_change() {
  local tier=$1 g=$1-change rc
  fresh_guest "$g" "$tier" || return 0
  rc=0; phase "$g: apply (fresh)" glog "$g" "$g-apply1.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply on a fresh host" 0 $rc "$g-apply1.log"
  [ $rc -eq 0 ] || { guest_destroy "$g"; return 0; }
  snapshot "$g" >"$RUN_DIR/logs/$g-before.snap"
  local pid0
  pid0=$(guest_run "$g" 'systemctl show -p MainPID --value matrix-synapse')
  # presence defaults to on; the test turns it off.
  set_toml_key "$g" synapse presence false
  rc=0; glog "$g" "$g-plan.log" 300 matrix-provision plan /root/host.toml || rc=$?
  expect_rc "$g: plan after the change reports pending changes" 2 $rc "$g-plan.log"
  if grep -qi presence "$RUN_DIR/logs/$g-plan.log" && grep -Eqi 'restart.*matrix-synapse|matrix-synapse.*restart' "$RUN_DIR/logs/$g-plan.log"; then
    pass "$g: plan names the presence fragment and a matrix-synapse restart"
  else
    fail "$g: plan names the presence fragment and a matrix-synapse restart"; show_tail "$RUN_DIR/logs/$g-plan.log" 30
  fi
  # Exactly the presence fragment and a Synapse restart. Presence also legitimately reaches Element's
  # config.json (enable_presence_by_hs_url) and the copy of host.toml the Element updater reads; nothing else
  # (no other fragment, no nginx/coturn reload) may be planned.
  local ids steps others handlers
  ids=$(guest_run "$g" 'matrix-provision plan --json /root/host.toml 2>/dev/null | python3 /root/checks/plan_ids.py' 2>/dev/null) || true
  steps=$(grep -Ev '^(restart|reload|systemd):' <<<"$ids" || true)
  handlers=$(grep -E '^(restart|reload|systemd):' <<<"$ids" || true)
  others=$(grep -Ev "presence|$PRESENCE_COLLATERAL_STEPS" <<<"$steps" || true)
  if grep -qi 'synapse.*presence' <<<"$steps" && [ -z "$others" ] && [ "$handlers" = restart:matrix-synapse ]; then
    pass "$g: plan --json: the presence fragment and only a Synapse restart ($(tr '\n' ' ' <<<"$ids"))"
  else
    fail "$g: plan --json: the presence fragment and only a Synapse restart (got: $(tr '\n' ' ' <<<"$ids"))"
  fi
  snapshot "$g" >"$RUN_DIR/logs/$g-afterplan.snap"
  if diff -q "$RUN_DIR/logs/$g-before.snap" "$RUN_DIR/logs/$g-afterplan.snap" >/dev/null; then pass "$g: plan wrote nothing"; else
    fail "$g: plan wrote nothing"; diff "$RUN_DIR/logs/$g-before.snap" "$RUN_DIR/logs/$g-afterplan.snap" | head -20 | sed 's/^/      | /'; fi
  rc=0; phase "$g: apply (change)" glog "$g" "$g-apply2.log" "$(apply_timeout "$g")" matrix-provision apply --detailed-exitcodes /root/host.toml || rc=$?
  expect_rc "$g: apply of the change reports a change (--detailed-exitcodes)" 2 $rc "$g-apply2.log"
  snapshot "$g" >"$RUN_DIR/logs/$g-after.snap"
  # Changed or new paths, leaving out backups the atomic writer may keep.
  local changed
  changed=$(diff "$RUN_DIR/logs/$g-before.snap" "$RUN_DIR/logs/$g-after.snap" | sed -n 's/^[<>] \([^ ]*\) .*/\1/p' | sort -u |
    grep -Ev '(\.bak|\.orig|~|\.dpkg-[a-z]+)$|/backups?/' || true)
  local fragment extra
  fragment=$(grep '^/etc/matrix-synapse/conf.d/' <<<"$changed" || true)
  extra=$(grep -Ev "^/etc/matrix-synapse/conf.d/|^($PRESENCE_COLLATERAL_FILES)\$" <<<"$changed" || true)
  if [ "$(grep -c . <<<"$fragment")" -eq 1 ] && guest_run "$g" "grep -qs presence $fragment" && [ -z "$extra" ]; then
    pass "$g: apply changed only the presence fragment and its Element/updater copies ($(tr '\n' ' ' <<<"$changed"))"
  else
    fail "$g: apply changed only the presence fragment and its Element/updater copies (changed: $(tr '\n' ' ' <<<"$changed"))"
  fi
  local pid1
  pid1=$(guest_run "$g" 'systemctl show -p MainPID --value matrix-synapse')
  if [ "$pid0" != "$pid1" ] && [ "$pid1" != 0 ]; then pass "$g: matrix-synapse was restarted"; else fail "$g: matrix-synapse was restarted (MainPID $pid0 -> $pid1)"; fi
  rc=0; glog "$g" "$g-apply3.log" "$(apply_timeout "$g")" matrix-provision apply --detailed-exitcodes /root/host.toml || rc=$?
  expect_rc "$g: apply again changes nothing" 0 $rc "$g-apply3.log"
  guest_destroy "$g"
}

# SIGKILL apply at several points, each on a fresh guest; the rerun must converge, keep every secret that
# existed at the kill, change nothing when run once more, and the client checks pass. Two kinds of kill, by turns:
#   apply   SIGKILL to apply's process group: apply dies, a dpkg that apt started (in its own session) runs on,
#           so the rerun meets a held dpkg lock (an admin's apply killed by the OOM killer or `kill -9`);
#   tree    SIGKILL to every process of the run (its cgroup), dpkg included: packages are left half
#           configured, as after a power cut.
scenario_crash() {
  local tier=$1 points i=0 p mode
  if [ -n "${MP_VM_CRASH_POINTS:-}" ]; then
    points=${MP_VM_CRASH_POINTS//,/ }
  elif [ "$LAST_FRESH_APPLY_S" -gt 0 ]; then
    points="$((LAST_FRESH_APPLY_S * 15 / 100)) $((LAST_FRESH_APPLY_S * 45 / 100)) $((LAST_FRESH_APPLY_S * 80 / 100))"
  else
    points="10 40 80"
  fi
  for p in $points; do
    i=$((i + 1))
    # The kinds of kill alternate over the points (MP_VM_CRASH_MODES, default "apply tree"): apply alone (its
    # apt/dpkg run on and hold the lock) and its whole cgroup (dpkg dies mid-unpack, like a power cut).
    local modes=(${MP_VM_CRASH_MODES:-apply tree})
    mode=${modes[$(((i - 1) % ${#modes[@]}))]}
    crash_once "$tier" "$1-crash$i" "$p" "$mode"
  done
}

crash_once() {
  local tier=$1 g=$2 at=$3 mode=$4 rc pid
  fresh_guest "$g" "$tier" || return 0
  # A transient scope gives the run its own cgroup; setsid makes apply lead its own process group.
  guest_run "$g" 'setsid sh -c "echo \$\$ > /run/mp-apply.pid; exec systemd-run --quiet --scope --unit=mp-apply matrix-provision apply /root/host.toml" >/root/apply-killed.log 2>&1 </dev/null &'
  sleep "$at"
  pid=$(guest_run "$g" 'cat /run/mp-apply.pid')
  if guest_run "$g" "kill -0 $pid" 2>/dev/null; then
    if [ "$mode" = tree ]; then
      guest_run "$g" 'systemctl kill --signal=KILL mp-apply.scope'
    else
      guest_run "$g" "kill -KILL -- -$pid"
    fi
    pass "$g: apply killed ($mode) with SIGKILL after ${at}s"
  else
    skip "$g: apply had already finished after ${at}s (nothing to kill)"
  fi
  guest_run "$g" 'cat /root/apply-killed.log' >"$RUN_DIR/logs/$g-killed.log" 2>&1 || true
  local before after
  before=$(secrets_digest "$g")
  rc=0; phase "$g: apply (after kill)" glog "$g" "$g-rerun.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply after the kill converges" 0 $rc "$g-rerun.log"
  after=$(secrets_digest "$g")
  local missing
  missing=$(comm -23 <(sort <<<"$before") <(sort <<<"$after"))
  if [ -z "$missing" ]; then pass "$g: secrets unchanged by the rerun ($(grep -c . <<<"$before") present at the kill)"; else
    fail "$g: secrets unchanged by the rerun: $(awk '{print $2}' <<<"$missing" | tr '\n' ' ')"; fi
  # Without a converged host the client checks would only repeat that failure eleven times.
  if [ $rc -eq 0 ]; then
    rc=0; glog "$g" "$g-rerun2.log" "$(apply_timeout "$g")" matrix-provision apply --detailed-exitcodes /root/host.toml || rc=$?
    expect_rc "$g: then apply changes nothing" 0 $rc "$g-rerun2.log"
    client_checks "$g" checks
  fi
  guest_destroy "$g"
}

# Invalid host.toml → exit 1 naming the field, and not a file changed.
scenario_badinput() {
  local tier=$1 g=$1-badinput rc
  fresh_guest "$g" "$tier" || return 0
  local roots="/etc /usr/local /var/www /opt /var/lib/dpkg/status /var/lib/apt/lists /var/lib/matrix-provision"
  snapshot "$g" $roots >"$RUN_DIR/logs/$g-before.snap"
  local field bad
  for bad in 'server_name:s/^server_name = .*/server_name = "not a domain!"/' \
    'presense:/^\[synapse\]/a presense = true' \
    'email:/^email = /d'; do
    field=${bad%%:*}
    guest_run "$g" "sed '${bad#*:}' /root/host.toml > /root/bad.toml"
    rc=0; glog "$g" "$g-$field.log" 120 matrix-provision apply /root/bad.toml || rc=$?
    expect_rc "$g: apply rejects a bad '$field'" 1 $rc "$g-$field.log"
    if grep -q "$field" "$RUN_DIR/logs/$g-$field.log"; then pass "$g: the error names '$field'"; else
      fail "$g: the error names '$field'"; show_tail "$RUN_DIR/logs/$g-$field.log" 8; fi
  done
  snapshot "$g" $roots >"$RUN_DIR/logs/$g-after.snap"
  if diff -q "$RUN_DIR/logs/$g-before.snap" "$RUN_DIR/logs/$g-after.snap" >/dev/null; then pass "$g: no file changed"; else
    fail "$g: no file changed"; diff "$RUN_DIR/logs/$g-before.snap" "$RUN_DIR/logs/$g-after.snap" | head -20 | sed 's/^/      | /'; fi
  guest_destroy "$g"
}

# Element pinned to v1.0.0 → apply serves it; element-update to v1.1.0, a tampered release refused with the
# live one untouched, rollback; config.json stays ours throughout; the update timer is enabled, and its
# service, run for real, takes "latest" (v1.1.0) as the unprivileged matrix-element user.
scenario_element() {
  local tier=$1 g=$1-element rc
  fresh_guest "$g" "$tier" || return 0
  set_toml_key "$g" element version '"v1.0.0"'
  rc=0; phase "$g: apply (fresh)" glog "$g" "$g-apply1.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply with element.version = v1.0.0" 0 $rc "$g-apply1.log"
  [ $rc -eq 0 ] || { guest_destroy "$g"; return 0; }
  client_checks "$g" element-v1.0.0 --only element
  element_serves "$g" v1.0.0
  if guest_run "$g" 'systemctl is-enabled matrix-element-update.timer' >/dev/null 2>&1; then
    pass "$g: matrix-element-update.timer is enabled"; else fail "$g: matrix-element-update.timer is enabled"; fi
  rc=0; glog "$g" "$g-check.log" 120 matrix-provision element-update --version v1.1.0 --check || rc=$?
  expect_rc "$g: element-update --check reports the pending update" 2 $rc "$g-check.log"
  element_serves "$g" v1.0.0
  rc=0; glog "$g" "$g-update.log" 300 matrix-provision element-update /root/host.toml --version v1.1.0 || rc=$?
  expect_rc "$g: element-update --version v1.1.0" 0 $rc "$g-update.log"
  element_serves "$g" v1.1.0
  client_checks "$g" element-v1.1.0 --only element
  rc=0; glog "$g" "$g-tampered.log" 300 matrix-provision element-update /root/host.toml --version v1.2.0-tampered || rc=$?
  expect_rc "$g: element-update refuses a tampered release" 1 $rc "$g-tampered.log"
  element_serves "$g" v1.1.0
  # HOST_TOML is positional (default: the copy apply keeps); the spelling before it, --config, still works.
  rc=0; glog "$g" "$g-rollback.log" 300 matrix-provision element-update --config /root/host.toml --rollback || rc=$?
  expect_rc "$g: element-update --rollback" 0 $rc "$g-rollback.log"
  element_serves "$g" v1.0.0
  rc=0; glog "$g" "$g-apply2.log" "$(apply_timeout "$g")" matrix-provision apply --detailed-exitcodes /root/host.toml || rc=$?
  expect_rc "$g: apply after the rollback to the pinned version changes nothing" 0 $rc "$g-apply2.log"
  # Follow "latest" and let the timer's own service (unprivileged, hardened, host.toml by LoadCredential) update.
  set_toml_key "$g" element version '"latest"'
  rc=0; glog "$g" "$g-apply3.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply with element.version = latest" 0 $rc "$g-apply3.log"
  rc=0; glog "$g" "$g-timer.log" 300 'systemctl start matrix-element-update.service; r=$?; journalctl -u matrix-element-update.service --no-pager -o cat | tail -n 20; exit $r' || rc=$?
  expect_rc "$g: matrix-element-update.service (the timer's job) runs" 0 $rc "$g-timer.log"
  element_serves "$g" v1.1.0
  guest_destroy "$g"
}

# element_serves NAME TAG: nginx serves that release's index.html over TLS.
element_serves() {
  if guest_run "$1" "curl -fsS --cacert /root/pebble-roots.pem https://element.example.test/ | grep -q '$2'" 2>/dev/null; then
    pass "$1: https://element.example.test/ serves $2"
  else
    fail "$1: https://element.example.test/ serves $2 (got: $(guest_run "$1" 'curl -sS --cacert /root/pebble-roots.pem https://element.example.test/ | head -c 200' 2>&1))"
  fi
}
