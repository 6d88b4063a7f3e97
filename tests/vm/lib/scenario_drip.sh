# shellcheck shell=bash
# Issue 8, item 4: nothing hangs forever. Element v1.0.0 is installed (element-update from the normal
# fixtures; no full apply is needed for this), then a release server inside the guest on loopback
# (checks/drip.py) sends one byte a minute: first of the release list, then, with a list that answers at
# once, of the tarball. `element-update` must give up within its HTTP timeout with a message that says so
# and names the URL's host.toml key, leave no download behind, and v1.0.0 stays live.

DRIP_LIMIT_S=${MP_VM_DRIP_LIMIT_S:-150}

# drip_once NAME MODE ARGS...: run element-update against drip.py in MODE; check time, message, live release.
drip_once() {
  local g=$1 mode=$2 rc t0 took live left logf
  shift 2
  logf=$RUN_DIR/logs/$g-drip-$mode.log
  guest_run "$g" "systemctl stop mp-drip 2>/dev/null; systemd-run --quiet --unit=mp-drip python3 /root/checks/drip.py $mode 8098 60" >/dev/null 2>&1
  guest_run "$g" 'for i in $(seq 50); do curl -s -o /dev/null -m 1 http://127.0.0.1:8098/ && exit 0; sleep 0.2; done; exit 1' >/dev/null 2>&1 || true
  t0=$(date +%s)
  rc=0; glog "$g" "$g-drip-$mode.log" $((DRIP_LIMIT_S * 2)) matrix-provision element-update --config /root/drip.toml "$@" || rc=$?
  took=$(($(date +%s) - t0))
  if [ $rc -eq 1 ] && [ $took -le "$DRIP_LIMIT_S" ]; then
    pass "$g: element-update against a $mode that drips 1 byte/min gives up (exit 1) after ${took}s"
  else
    fail "$g: element-update against a $mode that drips 1 byte/min gives up (exit $rc after ${took}s, want 1 within ${DRIP_LIMIT_S}s)"
    show_tail "$logf"
  fi
  if grep -Eq 'timed out|too slow' "$logf" && grep -q '127.0.0.1:8098' "$logf" && grep -q 'sources.element_releases_url' "$logf"; then
    pass "$g: the message says it timed out, on which URL, and which host.toml key ($(grep -Em1 'timed out|too slow' "$logf" | cut -c1-160))"
  else
    fail "$g: the message says it timed out, on which URL, and which host.toml key"; show_tail "$logf" 5
  fi
  live=$(guest_run "$g" 'readlink /var/www/element/current' 2>&1 || true)
  check "$g: v1.0.0 stays live after the $mode drip ($live)" grep -q 'v1.0.0$' <<<"$live"
  left=$(guest_run "$g" 'ls -A /var/www/element | grep -E "^\.download-|\.tmp-" || true' 2>&1)
  check "$g: no partial download left behind ($left)" [ -z "$left" ]
  guest_run "$g" 'systemctl stop mp-drip' >/dev/null 2>&1 || true
}

scenario_drip() {
  local tier=$1 g=$1-drip rc
  fresh_guest "$g" "$tier" || return 0
  rc=0; glog "$g" "$g-install.log" 300 matrix-provision element-update --config /root/host.toml --version v1.0.0 || rc=$?
  expect_rc "$g: element-update installs v1.0.0 from the fixtures" 0 $rc "$g-install.log"
  [ $rc -eq 0 ] || { guest_destroy "$g"; return 0; }
  guest_run "$g" "sed 's|^element_releases_url = .*|element_releases_url = \"http://127.0.0.1:8098/releases\"|' /root/host.toml > /root/drip.toml"
  drip_once "$g" list
  drip_once "$g" tarball --version v1.1.0
  guest_destroy "$g"
}
