# shellcheck shell=bash
# Issue 16: a fleet of two homeservers driven by ansible-playbook over SSH, with the repository's collection
# (ansible/ansible_collections/matrix/provision). ansible-core (PyPI, in a cached venv) runs on the host,
# inside a network namespace of its own that reaches each guest's namespace through a veth pair; nothing is
# routed anywhere else. One ansible-playbook run covers both hosts:
#   --tags matrix_provision_install   the role installs the .deb on both (the guests start without it)
#   --check --diff                    reports the homeservers' changes (a diff, secrets redacted), changes nothing
#   (real run)                        converges both: the client checks pass on both
#   (again)                           changed=0 on both

ANSIBLE_CORE_VERSION=${MP_VM_ANSIBLE_CORE_VERSION:-2.18.19}
ANSIBLE_HOSTS="a b"

# The venv, cached like the other inputs (under $CACHE, its own lock); `cached` runs builders in a fresh
# bash, which inherits this function through export -f. It builds in a temporary directory and renames it,
# which breaks the venv's script shebangs: so ansible-playbook runs as `venv/bin/python3 -m ansible.cli.playbook`.
build_ansible_venv() {
  local out=$1 version=$2
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install --quiet --disable-pip-version-check "ansible-core==$version"
  "$out/venv/bin/python3" -m ansible.cli.playbook --version
}

ansible_venv() {
  export -f build_ansible_venv
  ANSIBLE_VENV=$(cached ansiblevenv "$(cache_key build_ansible_venv "$ANSIBLE_CORE_VERSION")" build_ansible_venv "$ANSIBLE_CORE_VERSION")/venv
}

# The controller's namespace and a veth pair into each guest's: 198.51.100.4i+1 (controller) <-> .4i+2 (guest).
ansible_network() {
  local ctl=$1 i=0 h gns
  ip netns add "$ctl"
  on_exit "ip netns del $ctl"
  ip -n "$ctl" link set lo up
  for h in $ANSIBLE_HOSTS; do
    gns=$(cat "$(gdir "container-ansible-$h")/netns")
    ip -n "$ctl" link add "to-$h" type veth peer name ans0 netns "$gns"
    ip -n "$ctl" addr add "198.51.100.$((4 * i + 1))/30" dev "to-$h"
    ip -n "$gns" addr add "198.51.100.$((4 * i + 2))/30" dev ans0
    ip -n "$ctl" link set "to-$h" up
    ip -n "$gns" link set ans0 up
    i=$((i + 1))
  done
}

# aplay LOG ARGS...: ansible-playbook from the controller namespace, output to $RUN_DIR/logs/LOG.
aplay() {
  local logf=$RUN_DIR/logs/$1 rc=0
  shift
  # In the background + wait, like glog: a TERM to the harness is handled at once.
  (cd "$ADIR" && exec timeout -k 10 "$(apply_timeout container-ansible-a)" ip netns exec "$ANSIBLE_NETNS" \
    env ANSIBLE_CONFIG="$ADIR/ansible.cfg" ANSIBLE_HOME="$ADIR/home" ANSIBLE_LOCAL_TEMP="$ADIR/tmp" \
    ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 \
    "$ANSIBLE_VENV/bin/python3" -m ansible.cli.playbook site.yml "$@") >"$logf" 2>&1 </dev/null &
  wait $! || rc=$?
  return $rc
}

# recap LOG HOST FIELD: FIELD (changed, failed, ...) of HOST in the log's PLAY RECAP.
recap() { sed -n "/^PLAY RECAP/,\$p" "$RUN_DIR/logs/$1" | awk -v h="$2" -v f="$3=" '$1 == h { for (i = 3; i <= NF; i++) if (index($i, f) == 1) print substr($i, length(f) + 1) }'; }

# expect_recap DESC LOG RC WANT_CHANGED: exit 0, no failure, and changed=0 (WANT_CHANGED=0) or >0 (WANT_CHANGED=some) per host.
expect_recap() {
  local desc=$1 logn=$2 rc=$3 want=$4 h c f bad=
  for h in $ANSIBLE_HOSTS; do
    c=$(recap "$logn" "$h" changed)
    f=$(recap "$logn" "$h" failed)
    [ -n "$c" ] && [ "$f" = 0 ] || bad=1
    case $want in 0) [ "$c" = 0 ] || bad=1 ;; some) [ "${c:-0}" -gt 0 ] || bad=1 ;; esac
    desc+=" $h:changed=${c:-?},failed=${f:-?}"
  done
  if [ "$rc" -eq 0 ] && [ -z "$bad" ]; then pass "$desc"; else
    fail "$desc (exit $rc; log $RUN_DIR/logs/$logn)"; show_tail "$RUN_DIR/logs/$logn" 25; fi
}

scenario_ansible() {
  local tier=$1 h rc g
  if [ "$tier" != container ]; then skip "$tier/ansible (the fleet's network is made of the containers' namespaces)"; return 0; fi
  if [ -z "${MP_DEB:-}" ]; then skip "$tier/ansible (the role installs the .deb; --binary gives none)"; return 0; fi
  if ! phase "ansible-core $ANSIBLE_CORE_VERSION (venv, cached)" ansible_venv; then
    skip "$tier/ansible (pip install of ansible-core failed; no access to PyPI?)"
    return 0
  fi
  # Without the package: installing it is the role's job here.
  for h in $ANSIBLE_HOSTS; do
    MP_DEB= MP_BIN= fresh_guest "$tier-ansible-$h" "$tier" || return 0
  done
  ADIR=$RUN_DIR/ansible
  ANSIBLE_NETNS=mpvm$$-ansible
  rm -rf "$ADIR"
  mkdir -p "$ADIR/home" "$ADIR/tmp"
  ansible_network "$ANSIBLE_NETNS"
  ssh-keygen -q -t ed25519 -N '' -C mp-vm-ansible -f "$ADIR/id_ed25519"
  local i=0
  {
    echo 'homeservers:'
    echo '  hosts:'
    for h in $ANSIBLE_HOSTS; do
      echo "    $h: {ansible_host: 198.51.100.$((4 * i + 2))}"
      i=$((i + 1))
    done
    echo '  vars:'
    echo '    ansible_user: root'
    echo '    ansible_python_interpreter: /usr/bin/python3'
    echo "    matrix_provision_deb: $MP_DEB"
    echo "    matrix_provision_host_toml_template: $ADIR/host.toml"
  } >"$ADIR/inventory.yml"
  host_toml >"$ADIR/host.toml"
  printf '[defaults]\ncollections_path = %s\ninventory = %s\nprivate_key_file = %s\nhost_key_checking = False\nforks = 2\n[ssh_connection]\nssh_args = -o UserKnownHostsFile=/dev/null -o ControlMaster=auto -o ControlPersist=60s\ncontrol_path_dir = %s\n' \
    "$REPO_ROOT/ansible" "$ADIR/inventory.yml" "$ADIR/id_ed25519" "$ADIR/cp" >"$ADIR/ansible.cfg"
  cp "$REPO_ROOT/ansible/examples/site.yml" "$ADIR/site.yml"
  for h in $ANSIBLE_HOSTS; do
    guest_run "$tier-ansible-$h" 'install -d -m700 /root/.ssh && cat >> /root/.ssh/authorized_keys && systemctl is-active --quiet ssh' <"$ADIR/id_ed25519.pub" ||
      { fail "$tier-ansible-$h: sshd runs with the controller's key"; return 0; }
  done

  rc=0; phase "ansible: install the .deb (role)" aplay ansible-install.log --tags matrix_provision_install || rc=$?
  expect_recap "ansible: the role installs the .deb on both hosts" ansible-install.log $rc some
  for h in $ANSIBLE_HOSTS; do
    check "$tier-ansible-$h: package installed by the role" guest_run "$tier-ansible-$h" 'dpkg-query -W -f="\${Status}" matrix-provision | grep -q "install ok installed"'
  done

  for h in $ANSIBLE_HOSTS; do snapshot "$tier-ansible-$h" >"$RUN_DIR/logs/ansible-$h-before.snap"; done
  rc=0; phase "ansible: --check --diff" aplay ansible-check.log --check --diff || rc=$?
  expect_recap "ansible: --check --diff reports changes on both hosts" ansible-check.log $rc some
  # The diff is the binary's plan: file diffs, and a redacted one for the file that holds the DB password.
  if grep -q 'mp-database.yaml\|conf.d/mp-' "$RUN_DIR/logs/ansible-check.log" && grep -q 'diff redacted' "$RUN_DIR/logs/ansible-check.log" &&
    [ "$(grep -c 'host.toml at /etc/matrix-provision/ansible-host.toml' "$RUN_DIR/logs/ansible-check.log")" -ge 2 ]; then
    pass "ansible: --diff shows the planned files, secrets redacted, for both hosts"
  else
    fail "ansible: --diff shows the planned files, secrets redacted, for both hosts"; show_tail "$RUN_DIR/logs/ansible-check.log" 30
  fi
  for h in $ANSIBLE_HOSTS; do
    snapshot "$tier-ansible-$h" >"$RUN_DIR/logs/ansible-$h-after.snap"
    if diff -q "$RUN_DIR/logs/ansible-$h-before.snap" "$RUN_DIR/logs/ansible-$h-after.snap" >/dev/null; then
      pass "$tier-ansible-$h: --check changed nothing"
    else
      fail "$tier-ansible-$h: --check changed nothing"
      diff "$RUN_DIR/logs/ansible-$h-before.snap" "$RUN_DIR/logs/ansible-$h-after.snap" | head -20 | sed 's/^/      | /'
    fi
  done

  rc=0; phase "ansible: converge both hosts" aplay ansible-apply.log || rc=$?
  expect_recap "ansible: the real run converges both hosts" ansible-apply.log $rc some
  for h in $ANSIBLE_HOSTS; do client_checks "$tier-ansible-$h" checks; done

  rc=0; phase "ansible: run again" aplay ansible-again.log --diff || rc=$?
  expect_recap "ansible: a second run changes nothing" ansible-again.log $rc 0

  for h in $ANSIBLE_HOSTS; do guest_destroy "$tier-ansible-$h"; done
}
