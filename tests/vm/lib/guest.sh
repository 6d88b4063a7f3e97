# shellcheck shell=bash
# One guest API over two backends, so scenarios are written once:
#   guest_up NAME TIER          boot a fresh guest (TIER: container | qemu) from the cached rootfs
#   guest_run NAME CMD          run CMD (a bash script string) as root in the guest; stdin passes through
#   guest_copy NAME SRC DEST    copy a host file or directory into the guest (DEST: the target path)
#   guest_reboot NAME           clean reboot; returns when the guest is booted again
#   guest_kill NAME             hard power-off (no shutdown), the guest stays down
#   guest_start NAME            boot a guest that is down again, on the same disk
#   guest_destroy NAME          stop it and remove everything it had (also registered as a cleanup)
# Container: systemd-nspawn -b on an overlayfs over the rootfs, in a network namespace we create (loopback plus
# a veth pair with both ends inside: coturn needs a non-loopback address, nothing is routed anywhere);
# commands enter the container's namespaces with nsenter.
# QEMU: qcow2 overlay, direct kernel boot, user networking with restrict=on and only an ssh forward on
# 127.0.0.1; the fixtures arrive through a read-only 9p share. KVM when a probe boot works, TCG otherwise.

GUEST_BOOT_TIMEOUT_CONTAINER=120
GUEST_BOOT_TIMEOUT_QEMU=${MP_VM_QEMU_BOOT_TIMEOUT:-600}
GUEST_ENV='env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb'

gdir() { echo "$RUN_DIR/guests/$1"; }
gtier() { cat "$(gdir "$1")/tier"; }

guest_up() {
  local name=$1 tier=$2 d
  d=$(gdir "$name")
  rm -rf "$d"
  mkdir -p "$d"
  echo "$tier" >"$d/tier"
  # GUEST_BINDS="HOSTDIR:GUESTDIR ...": read-write bind mounts (container tier), kept across reboots.
  [ -z "${GUEST_BINDS:-}" ] || tr ' ' '\n' <<<"$GUEST_BINDS" >"$d/binds"
  on_exit "guest_destroy $name"
  case $tier in
    container) nspawn_create "$name" && nspawn_start "$name" ;;
    qemu) qemu_create "$name" && qemu_start "$name" ;;
    *) die "unknown tier $tier" ;;
  esac
}

# GUEST_TIMEOUT=SECONDS guest_run ... bounds the command (exit 124 when it expires).
guest_run() {
  local name=$1 t=()
  shift
  [ -z "${GUEST_TIMEOUT:-}" ] || t=(timeout -k 10 "$GUEST_TIMEOUT")
  case $(gtier "$name") in
    container) "${t[@]}" nsenter -t "$(cat "$(gdir "$name")/leader")" -m -u -i -n -p -C -- $GUEST_ENV /bin/bash -c "$*" ;;
    qemu)
      ssh_args "$name"
      "${t[@]}" "${SSH_ARGS[@]}" "$GUEST_ENV /bin/bash -c $(printf '%q' "$*")"
      ;;
  esac
}

guest_copy() {
  local name=$1 src=$2 dest=$3
  if [ -d "$src" ]; then
    tar -C "$src" -cf - . | guest_run "$name" "mkdir -p '$dest' && tar -C '$dest' --no-same-owner -xf -"
  else
    guest_run "$name" "mkdir -p \"\$(dirname '$dest')\" && cat > '$dest' && chmod $(stat -c %a "$src") '$dest'" <"$src"
  fi
}

guest_boot_id() { guest_run "$1" 'cat /proc/sys/kernel/random/boot_id' 2>/dev/null; }

guest_reboot() {
  local name=$1 old
  old=$(guest_boot_id "$name")
  case $(gtier "$name") in
    container)
      # nspawn ends when the container reboots (exit 133); systemd-nspawn@.service would start it again: so do we.
      guest_run "$name" 'systemctl reboot' >/dev/null 2>&1 || true
      nspawn_wait_exit "$name" 90 || nspawn_hard_stop "$name"
      nspawn_start "$name"
      ;;
    qemu)
      guest_run "$name" 'systemctl reboot' >/dev/null 2>&1 || true
      qemu_ssh_close "$name"
      # sshd of the old boot may still answer for a moment: wait for a new boot id.
      local deadline=$(($(date +%s) + GUEST_BOOT_TIMEOUT_QEMU)) id
      while [ "$(date +%s)" -lt "$deadline" ]; do
        sleep 3
        qemu_wait_ssh "$name" $((deadline - $(date +%s))) || return 1
        id=$(guest_boot_id "$name") || true
        [ -z "$id" ] || [ "$id" = "$old" ] || break
        qemu_ssh_close "$name"
      done
      guest_wait_booted "$name" 300 || return 1
      ;;
  esac
  local new
  new=$(guest_boot_id "$name")
  [ -n "$new" ] && [ "$new" != "$old" ] || { log "$name: boot id unchanged after reboot"; return 1; }
}

guest_kill() {
  case $(gtier "$1") in
    container) nspawn_hard_stop "$1" ;;
    qemu) qemu_hard_stop "$1" ;;
  esac
}

guest_start() {
  case $(gtier "$1") in
    container) nspawn_start "$1" ;;
    qemu) qemu_start "$1" ;;
  esac
}

guest_destroy() {
  local name=$1 d
  d=$(gdir "$name")
  [ -d "$d" ] || return 0
  case $(gtier "$name") in
    container) nspawn_destroy "$name" ;;
    qemu) qemu_destroy "$name" ;;
  esac
  # Logs stay for a failed run; disks and overlays go either way.
  rm -rf "$d/disk" "$d/merged" "$d/disk.qcow2"
}

# Wait until systemd in the guest has finished booting (running or degraded).
guest_wait_booted() {
  local name=$1 deadline=$(($(date +%s) + $2)) state=
  # Early in boot systemctl cannot reach systemd yet and fails at once: retry until the deadline.
  while [ "$(date +%s)" -lt "$deadline" ]; do
    state=$(GUEST_TIMEOUT=$((deadline - $(date +%s) + 1)) guest_run "$name" 'systemctl is-system-running --wait' 2>/dev/null) || true
    case $state in running | degraded) break ;; esac
    sleep 0.5
  done
  case $state in
    running) ;;
    degraded) log "$name: system is degraded: $(guest_run "$name" 'systemctl --failed --no-legend --plain | cut -d" " -f1 | tr "\n" " "')" ;;
    *) log "$name: boot did not finish (state '$state')"; return 1 ;;
  esac
}

# ---- systemd-nspawn ------------------------------------------------------------------------------------

nspawn_create() {
  local name=$1 d ns
  d=$(gdir "$name")
  ns=mpvm$$-$name
  echo "$ns" >"$d/netns"
  mkdir -p "$d/disk" "$d/merged"
  # The guest's writes go to a tmpfs unless MP_VM_GUEST_DISK=disk: removing a converged guest's upper
  # directory (Synapse's venv, PostgreSQL, tens of thousands of files) took 50-60 s of every scenario on
  # this machine's disk; a tmpfs goes with one umount. Benchmarks use the disk (their own default), as a
  # real server would.
  if [ "${MP_VM_GUEST_DISK:-tmpfs}" = tmpfs ]; then
    mount -t tmpfs -o "size=${MP_VM_GUEST_TMPFS_SIZE:-8g},mode=0755" "mpvm-$name" "$d/disk"
    touch "$d/disk-mounted"
  fi
  mkdir -p "$d/disk/upper" "$d/disk/work"
  mount -t overlay overlay -o "lowerdir=$ROOTFS_DIR,upperdir=$d/disk/upper,workdir=$d/disk/work" "$d/merged"
  touch "$d/mounted"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  # 192.0.2.0/24 (TEST-NET-1) never leaves this namespace: there is no route out and no peer outside.
  ip -n "$ns" link add mp0 type veth peer name mp1
  ip -n "$ns" addr add 192.0.2.10/24 dev mp0
  ip -n "$ns" link set mp0 up
  ip -n "$ns" link set mp1 up
}

nspawn_start() {
  local name=$1 d pid leader= binds=() b
  d=$(gdir "$name")
  if [ -f "$d/binds" ]; then
    while IFS= read -r b; do [ -z "$b" ] || binds+=("--bind=$b"); done <"$d/binds"
  fi
  # Our netns is private to the guest, as with --private-network, so grant what that would (that option
  # cannot go with --network-namespace-path): CAP_NET_ADMIN and a writable /proc/sys/net. Without them ufw
  # fails inside the guest (iptables, sysctl) for anything not entered with nsenter, e.g. over SSH.
  SYSTEMD_NSPAWN_API_VFS_WRITABLE=network \
    setsid systemd-nspawn -D "$d/merged" -M "$name" --register=no --keep-unit -b --console=pipe \
    --capability=CAP_NET_ADMIN \
    --resolv-conf=off --timezone=off --link-journal=no \
    --network-namespace-path="/run/netns/$(cat "$d/netns")" \
    --bind-ro="$FIXTURES:/srv/fixtures" "${binds[@]}" \
    >>"$d/console.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$d/nspawn.pid"
  # The container's PID 1 is nspawn's child running systemd (an intermediate child exits early).
  local i c
  for ((i = 0; i < 100; i++)); do
    for c in $(pgrep -P "$pid" 2>/dev/null); do
      [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] && leader=$c
    done
    [ -n "$leader" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$leader" ] || { log "$name: nspawn did not start; see $d/console.log"; tail -n 20 "$d/console.log" >&2; return 1; }
  echo "$leader" >"$d/leader"
  guest_wait_booted "$name" "$GUEST_BOOT_TIMEOUT_CONTAINER"
}

nspawn_wait_exit() {
  local pid i
  pid=$(cat "$(gdir "$1")/nspawn.pid" 2>/dev/null) || return 0
  for ((i = 0; i < $2 * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  return 1
}

# SIGKILL to the container's PID 1 takes its whole PID namespace down at once, like pulling the plug.
nspawn_hard_stop() {
  local d
  d=$(gdir "$1")
  [ -f "$d/leader" ] && kill -KILL "$(cat "$d/leader")" 2>/dev/null || true
  nspawn_wait_exit "$1" 30 || kill_pid "$(cat "$d/nspawn.pid")" 5
}

nspawn_destroy() {
  local name=$1 d pid
  d=$(gdir "$name")
  pid=$(cat "$d/nspawn.pid" 2>/dev/null) || pid=
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    timeout 20 nsenter -t "$(cat "$d/leader")" -m -u -i -n -p -C -- /bin/systemctl poweroff >/dev/null 2>&1 || true
    nspawn_wait_exit "$name" 60 || nspawn_hard_stop "$name"
  fi
  if [ -f "$d/mounted" ]; then
    umount "$d/merged" 2>/dev/null || { sleep 1; umount "$d/merged" 2>/dev/null; } || umount -l "$d/merged" || true
    rm -f "$d/mounted"
  fi
  if [ -f "$d/disk-mounted" ]; then
    umount "$d/disk" 2>/dev/null || umount -l "$d/disk" || true
    rm -f "$d/disk-mounted"
  fi
  [ -f "$d/netns" ] && ip netns del "$(cat "$d/netns")" 2>/dev/null || true
  rm -f "$d/netns"
}

# ---- QEMU ----------------------------------------------------------------------------------------------

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

qemu_create() {
  local d
  d=$(gdir "$1")
  qemu-img create -q -f qcow2 -b "$QEMUIMG_DIR/base.qcow2" -F qcow2 "$d/disk.qcow2"
  free_port >"$d/sshport"
}

# Which accelerator: KVM when a probe boot reaches ssh, else TCG. The probe result is cached per kernel and
# QEMU version (a probe that hangs costs a minute). MP_VM_ACCEL=kvm|tcg overrides.
qemu_accel() {
  if [ -n "${MP_VM_ACCEL:-}" ]; then echo "$MP_VM_ACCEL"; return; fi
  if [ ! -w /dev/kvm ]; then echo tcg; return; fi
  local f
  f=$CACHE/kvm-probe-$(cache_key "$(uname -r)" "$(qemu-system-x86_64 --version | head -1)" "${QEMUIMG_DIR##*/}")
  if [ ! -f "$f" ]; then
    log "probing KVM with a test boot (result cached in $f)"
    local probe=kvmprobe r=tcg
    mkdir -p "$(gdir $probe)"
    echo qemu >"$(gdir $probe)/tier"
    qemu_create $probe
    if MP_VM_ACCEL=kvm GUEST_BOOT_TIMEOUT_QEMU=90 qemu_start $probe >/dev/null 2>&1; then r=kvm; fi
    qemu_destroy $probe
    rm -rf "$(gdir $probe)"
    echo "$r" >"$f"
  fi
  cat "$f"
}

qemu_start() {
  local name=$1 d accel
  d=$(gdir "$name")
  accel=$(qemu_accel)
  echo "$accel" >"$d/accel"
  local acc=(-accel tcg,thread=multi -cpu max)
  [ "$accel" = kvm ] && acc=(-accel kvm -cpu host)
  rm -f "$d/qemu.pid" "$d/ssh.ctl"
  qemu-system-x86_64 -name "$name" "${acc[@]}" -smp "${MP_VM_QEMU_SMP:-2}" -m "${MP_VM_QEMU_MEM:-3072}" \
    -kernel "$KERNEL_DIR/vmlinuz" -initrd "$KERNEL_DIR/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 quiet" \
    -drive "file=$d/disk.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$(cat "$d/sshport")-:22" \
    -device virtio-net-pci,netdev=n0 -device virtio-rng-pci \
    -virtfs "local,path=$FIXTURES,mount_tag=fixtures,security_model=none,readonly=on" \
    -display none -serial "file:$d/console.log" -monitor "unix:$d/monitor.sock,server,nowait" \
    -pidfile "$d/qemu.pid" -daemonize || return 1
  qemu_wait_ssh "$name" "$GUEST_BOOT_TIMEOUT_QEMU" && guest_wait_booted "$name" 300
}

# ssh_args NAME: sets SSH_ARGS, the ssh command line for the guest (an array, so `timeout` can run it).
ssh_args() {
  local d
  d=$(gdir "$1")
  SSH_ARGS=(ssh -q -i "$QEMUIMG_DIR/ssh/id_ed25519" -p "$(cat "$d/sshport")" -o StrictHostKeyChecking=no
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes -o ConnectTimeout=10
    -o ServerAliveInterval=15 -o ServerAliveCountMax=8
    -o ControlMaster=auto -o ControlPath="$d/ssh.ctl" -o ControlPersist=600 root@127.0.0.1)
}

qemu_ssh_close() { ssh -o ControlPath="$(gdir "$1")/ssh.ctl" -O exit x >/dev/null 2>&1 || true; }

qemu_wait_ssh() {
  local name=$1 timeout=$2 t0 pid
  t0=$(date +%s)
  pid=$(cat "$(gdir "$name")/qemu.pid")
  while [ $(($(date +%s) - t0)) -lt "$timeout" ]; do
    kill -0 "$pid" 2>/dev/null || { log "$name: qemu exited"; return 1; }
    if GUEST_TIMEOUT=20 guest_run "$name" true 2>/dev/null; then return 0; fi
    qemu_ssh_close "$name"
    sleep 2
  done
  log "$name: no ssh after ${timeout}s; console: $(gdir "$name")/console.log"
  return 1
}

qemu_hard_stop() {
  local d
  d=$(gdir "$1")
  qemu_ssh_close "$1"
  [ -f "$d/qemu.pid" ] && kill_pid "$(cat "$d/qemu.pid")" 5
  rm -f "$d/qemu.pid"
}

qemu_destroy() {
  local name=$1 d pid i
  d=$(gdir "$name")
  pid=$(cat "$d/qemu.pid" 2>/dev/null) || pid=
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    GUEST_TIMEOUT=20 guest_run "$name" 'systemctl poweroff' >/dev/null 2>&1 || true
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  qemu_hard_stop "$name"
}
