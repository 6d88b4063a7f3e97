# shellcheck shell=bash
# Issue 8 item 1 on a converged guest: the unprivileged updater user (matrix-element) turns its own tree and
# the release list against root. As that user: a `.lock` symlinked to a file root would create, a release
# directory in archive/ swapped for a symlink to a root-owned directory that looks like a release, and a
# release server whose "latest" is a pre-release, then an older release. Root then runs `apply` and
# `matrix-provision element-update`: nothing outside the tree changes and the live release stays (unless the
# admin pins another one, which is then installed for real, by the user, not through the link).

# as_updater NAME CMD: run CMD in the guest as matrix-element.
as_updater() { guest_run "$1" "runuser -u matrix-element -- sh -c '$2'"; }

# hostile_latest NAME TAG [FLAG]: as the updater user, the hostile server's releases/latest becomes tags/TAG,
# with FLAG (prerelease, draft) set to true when given.
hostile_latest() {
  guest_run "$1" "runuser -u matrix-element -- python3 - $2 ${3:-}" <<'PY'
import json, sys
d = json.load(open(f"/var/tmp/hostile/releases/tags/{sys.argv[1]}"))
for flag in sys.argv[2:]:
    d[flag] = True
json.dump(d, open("/var/tmp/hostile/releases/latest", "w"))
PY
}

live_is() { # NAME TAG WHEN: current points at TAG
  local got
  got=$(guest_run "$1" 'readlink /var/www/element/current' 2>&1 || true)
  if [ "$got" = "archive/element-$2" ]; then pass "$1: $3: the live release is $2"; else
    fail "$1: $3: the live release is $2 (current -> $got)"; fi
}

scenario_hostile() {
  local tier=$1 g=$1-hostile rc
  local roots="/etc /usr/local /root /srv/root-site /var/www/letsencrypt"
  fresh_guest "$g" "$tier" || return 0
  set_toml_key "$g" element version '"v1.0.0"'
  rc=0; phase "$g: apply (fresh)" glog "$g" "$g-apply1.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply with element.version = v1.0.0" 0 $rc "$g-apply1.log"
  [ $rc -eq 0 ] || { guest_destroy "$g"; return 0; }

  # Follow "latest" from a release server the updater user controls (a copy of the fixture list), and keep
  # a pinned variant for the applies that must install. A root-owned directory that looks like a release.
  guest_run "$g" 'install -d -o matrix-element -g matrix-element /var/tmp/hostile &&
    cp -r /srv/fixtures/releases /var/tmp/hostile/ && chown -R matrix-element: /var/tmp/hostile &&
    systemd-run --quiet --unit=mp-hostile-releases --uid=matrix-element \
      python3 -m http.server --bind 127.0.0.1 --directory /var/tmp/hostile 8098 &&
    for i in $(seq 50); do curl -fsS -o /dev/null http://127.0.0.1:8098/releases/latest && break; sleep 0.2; done
    mkdir -p /srv/root-site && echo "root site" > /srv/root-site/index.html' >"$RUN_DIR/logs/$g-setup.log" 2>&1 ||
    { fail "$g: the hostile release server starts"; show_tail "$RUN_DIR/logs/$g-setup.log"; guest_destroy "$g"; return 0; }
  set_toml_key "$g" element version '"latest"'
  set_toml_key "$g" sources element_releases_url '"http://127.0.0.1:8098/releases"'
  guest_run "$g" "sed 's/^version = \"latest\"/version = \"v1.1.0\"/' /root/host.toml > /root/pinned.toml"
  rc=0; glog "$g" "$g-apply2.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply with element.version = latest (v1.0.0 stays: latest is the timer's job)" 0 $rc "$g-apply2.log"
  snapshot "$g" $roots >"$RUN_DIR/logs/$g-before.snap"

  # 1. The lock: a symlink to a file root would create.
  as_updater "$g" 'rm -f /var/www/element/.lock && ln -s /etc/mp-hostile-lock /var/www/element/.lock'
  rc=0; glog "$g" "$g-lock-apply.log" "$(apply_timeout "$g")" matrix-provision apply /root/pinned.toml || rc=$?
  expect_rc "$g: apply (pinned v1.1.0) with a symlinked .lock fails" 1 $rc "$g-lock-apply.log"
  rc=0; glog "$g" "$g-lock-update.log" 300 matrix-provision element-update --config /root/host.toml || rc=$?
  expect_rc "$g: element-update with a symlinked .lock fails" 1 $rc "$g-lock-update.log"
  if grep -q 'is a symlink' "$RUN_DIR/logs/$g-lock-update.log"; then pass "$g: the error names the symlinked lock"; else
    fail "$g: the error names the symlinked lock"; show_tail "$RUN_DIR/logs/$g-lock-update.log" 5; fi
  if guest_run "$g" '! test -e /etc/mp-hostile-lock'; then pass "$g: the lock's target was not created"; else
    fail "$g: the lock's target was not created"; fi
  live_is "$g" v1.0.0 "symlinked .lock"
  as_updater "$g" 'rm /var/www/element/.lock'

  # 2. A release directory that is a link to root's directory; "latest" a pre-release; then an older one.
  as_updater "$g" 'ln -s /srv/root-site /var/www/element/archive/element-v1.1.0'
  hostile_latest "$g" v1.1.0 prerelease
  rc=0; glog "$g" "$g-pre.log" 300 matrix-provision element-update --config /root/host.toml || rc=$?
  expect_rc "$g: element-update refuses a pre-release \"latest\"" 1 $rc "$g-pre.log"
  if grep -q 'pre-release' "$RUN_DIR/logs/$g-pre.log"; then pass "$g: it says it refused a pre-release"; else
    fail "$g: it says it refused a pre-release"; show_tail "$RUN_DIR/logs/$g-pre.log" 5; fi
  live_is "$g" v1.0.0 "pre-release latest"
  hostile_latest "$g" v0.9.0
  rc=0; glog "$g" "$g-older.log" 300 matrix-provision element-update --config /root/host.toml || rc=$?
  expect_rc "$g: element-update refuses an older \"latest\"" 1 $rc "$g-older.log"
  if grep -q 'older than the live v1.0.0' "$RUN_DIR/logs/$g-older.log"; then pass "$g: it says it refused an older release"; else
    fail "$g: it says it refused an older release"; show_tail "$RUN_DIR/logs/$g-older.log" 5; fi
  live_is "$g" v1.0.0 "older latest"
  rc=0; glog "$g" "$g-apply3.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply (latest) on the hostile tree" 0 $rc "$g-apply3.log"
  live_is "$g" v1.0.0 "apply"

  # 3. The admin pins v1.1.0: it is unpacked for real by matrix-element, never through the planted link.
  rc=0; glog "$g" "$g-pinned.log" "$(apply_timeout "$g")" matrix-provision apply /root/pinned.toml || rc=$?
  expect_rc "$g: apply with element.version pinned to v1.1.0" 0 $rc "$g-pinned.log"
  live_is "$g" v1.1.0 "pinned v1.1.0"
  if guest_run "$g" 'test ! -L /var/www/element/archive/element-v1.1.0 &&
      [ "$(stat -c %U /var/www/element/archive/element-v1.1.0/index.html)" = matrix-element ]'; then
    pass "$g: v1.1.0 is a real directory unpacked by matrix-element, not the planted link"; else
    fail "$g: v1.1.0 is a real directory unpacked by matrix-element, not the planted link"; fi
  # TLS is not the point here (the element scenario checks it against Pebble's CA): -k.
  if guest_run "$g" 'curl -fsSk https://element.example.test/ | grep -q v1.1.0 &&
      curl -fsSk https://element.example.test/config.json | python3 -c "import json,sys; json.load(sys.stdin)[\"default_server_config\"]"'; then
    pass "$g: nginx serves v1.1.0 and our config.json"; else fail "$g: nginx serves v1.1.0 and our config.json"; fi
  # Back to host.toml, so the copy the timer reads is as it was.
  rc=0; glog "$g" "$g-apply4.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply (latest) again" 0 $rc "$g-apply4.log"

  snapshot "$g" $roots >"$RUN_DIR/logs/$g-after.snap"
  if diff -q "$RUN_DIR/logs/$g-before.snap" "$RUN_DIR/logs/$g-after.snap" >/dev/null; then
    pass "$g: nothing outside the Element tree changed ($roots)"; else
    fail "$g: nothing outside the Element tree changed"; diff "$RUN_DIR/logs/$g-before.snap" "$RUN_DIR/logs/$g-after.snap" | head -20 | sed 's/^/      | /'; fi
  guest_destroy "$g"
}
