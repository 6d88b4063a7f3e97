# shellcheck shell=bash
# Issue 9, items 3 and 4: a converged guest as outside judges see it. gixy on the guest's real nginx tree
# (no finding of medium or higher severity), `systemd-analyze security` of the units running our services
# (under the thresholds below, with the sandboxes in place and every service still passing the client
# checks), and checks/judges.py: no version banner, security headers on every vhost, unknown names and
# no-SNI clients get no TLS handshake on 443/8448, coturn's TLS and its refusal to relay to the host itself.

GIXY_VERSION=${MP_VM_GIXY_VERSION:-0.2.59}
# Exposure levels (systemd-analyze security; lower is better, under 5.0 is "OK"), unit:max, max exclusive
# (nginx: at most 7.0, as one decimal). The issue sets none for PostgreSQL; its drop-in keeps it "OK" too.
# @PG@: the guest's own cluster (postgresql@15-main on Debian 12, @17-main on 13), read in the guest.
JUDGES_EXPOSURE_MAX="matrix-synapse:5.0 coturn:5.0 nginx:7.05 matrix-element-update:5.0 postgresql@@PG@-main:5.0"

# The gixy-ng wheels for the guest's Python (3.11), downloaded once on the host with pip (the guest has no
# PyPI access). Pure-Python apart from markupsafe, whose pure fallback also works. Prints the directory.
gixy_wheels() {
  local dir=$CACHE/gixy-ng-$GIXY_VERSION lockfd
  [ -f "$dir/.ok" ] && { echo "$dir"; return 0; }
  mkdir -p "$CACHE"
  exec {lockfd}>"$CACHE/.lock-gixy-ng"
  flock "$lockfd"
  if [ ! -f "$dir/.ok" ]; then
    rm -rf "$dir.tmp"
    if ! python3 -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version 3.11 \
      --implementation cp --platform manylinux2014_x86_64 -d "$dir.tmp" "gixy-ng==$GIXY_VERSION" \
      >"$RUN_DIR/logs/gixy-download.log" 2>&1; then
      exec {lockfd}>&-
      return 1
    fi
    rm -rf "$dir" && mv "$dir.tmp" "$dir" && touch "$dir/.ok"
  fi
  exec {lockfd}>&-
  echo "$dir"
}

scenario_judges() {
  local tier=$1 g=$1-judges rc cfg=/root/host.toml out unit max level line wheels
  fresh_guest "$g" "$tier" || return 0
  rc=0; phase "$g: apply (fresh)" glog "$g" "$g-apply.log" "$(apply_timeout "$g")" matrix-provision apply $cfg || rc=$?
  expect_rc "$g: apply on a fresh host" 0 $rc "$g-apply.log"
  [ $rc -eq 0 ] || { guest_destroy "$g"; return 0; }
  rc=0; glog "$g" "$g-apply2.log" 300 matrix-provision apply --detailed-exitcodes $cfg || rc=$?
  expect_rc "$g: a rerun changes nothing (the default site stays disabled, the drop-ins in place)" 0 $rc "$g-apply2.log"
  # The sandboxed services still do their work.
  client_checks "$g" checks

  out=$(guest_run "$g" 'ls /etc/nginx/sites-enabled/; test -e /etc/nginx/sites-available/default && echo conffile-kept' 2>&1 || true)
  check "$g: Debian's default site is disabled, its conffile kept ($(echo $out))" \
    eval '! grep -qx default <<<"$out" && grep -q conffile-kept <<<"$out"'

  local pg
  pg=$(guest_run "$g" 'ls /etc/postgresql | sort -n | tail -n1' 2>/dev/null || true)
  for line in ${JUDGES_EXPOSURE_MAX//@PG@/${pg:-unknown}}; do
    unit=${line%%:*} max=${line#*:}
    level=$(guest_run "$g" "systemd-analyze security --no-pager $unit.service 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p'" 2>/dev/null || true)
    check "$g: systemd-analyze security $unit: ${level:-?} < $max" \
      python3 -c "import sys; sys.exit(0 if '$level' and float('$level') < float('$max') else 1)"
  done

  # judges.py: one PASS/FAIL/SKIP line per check.
  rc=0; glog "$g" "$g-judges.log" 300 python3 /root/checks/judges.py --synapse-host matrix.example.test \
    --server-name example.test --element-host element.example.test --turn-host turn.example.test || rc=$?
  local n=0
  while IFS= read -r line; do
    case $line in
      "PASS "*) pass "$g: ${line#PASS }"; n=$((n + 1)) ;;
      "FAIL "*) fail "$g: ${line#FAIL }"; n=$((n + 1)) ;;
      "SKIP "*) skip "$g: ${line#SKIP }" ;;
    esac
  done <"$RUN_DIR/logs/$g-judges.log"
  if [ $rc -ne 0 ] && [ $n -eq 0 ]; then fail "$g: judges.py ran (exit $rc)"; show_tail "$RUN_DIR/logs/$g-judges.log"; fi

  # gixy on the guest's own nginx tree, from wheels unpacked beside it (no pip needed in the guest).
  if ! wheels=$(gixy_wheels); then
    skip "$g: gixy (pip download gixy-ng==$GIXY_VERSION failed on the host; see $RUN_DIR/logs/gixy-download.log)"
  else
    guest_copy "$g" "$wheels" /root/gixy-wheels
    rc=0; glog "$g" "$g-gixy.log" 120 "mkdir -p /root/gixy-lib && for w in /root/gixy-wheels/*.whl; do python3 -m zipfile -e \"\$w\" /root/gixy-lib; done &&
      PYTHONPATH=/root/gixy-lib python3 /root/checks/gixy_judge.py /etc/nginx/nginx.conf" || rc=$?
    n=0
    while IFS= read -r line; do
      case $line in
        "PASS "*) pass "$g: ${line#PASS }"; n=$((n + 1)) ;;
        "FAIL "*) fail "$g: ${line#FAIL }"; n=$((n + 1)) ;;
        "NOTE "*) log "$g: ${line#NOTE }" ;;
      esac
    done <"$RUN_DIR/logs/$g-gixy.log"
    if [ $rc -ne 0 ] && [ $n -eq 0 ]; then fail "$g: gixy ran (exit $rc)"; show_tail "$RUN_DIR/logs/$g-gixy.log"; fi
  fi
  guest_destroy "$g"
}
