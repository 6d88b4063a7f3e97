# shellcheck shell=bash
# Cached inputs of the VM suite. Each build_* function writes one artifact into the directory it is given;
# `cached` (lib/common.sh) keys it by the function's own text plus its inputs and skips it when present.
# Only Debian's archive and PyPI are contacted, and only while building.

DEBIAN_MIRROR=${MP_VM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY=${MP_VM_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
SYNAPSE_VERSION=${MP_VM_SYNAPSE_VERSION:-1.163.2}

# The guest releases (tests/vm/run --release): the one table of what differs between them in the suite.
# release_suite / release_python print the codename and the Python the matrix-synapse-py3 stand-in is built
# with (upstream builds each release's package with that release's python3).
VM_RELEASES="12 13"
release_suite() {
  case $1 in 12) echo bookworm ;; 13) echo trixie ;; *) echo "unknown Debian release $1 (supported: $VM_RELEASES)" >&2; return 1 ;; esac
}
release_python() {
  case $1 in 12) echo python3.11 ;; 13) echo python3.13 ;; *) release_suite "$1" ;; esac
}

# What a fresh Debian server has: the `important` priority set (what the installer gives without tasks)
# plus ssh and the kernel for the QEMU tier, python3 for the test client and the fixture web server, curl.
# gnupg, nginx, ... are NOT here: installing them is the product's job.
ROOTFS_INCLUDE=linux-image-amd64,openssh-server,python3,ca-certificates,curl,dbus,systemd-sysv,udev,iproute2

# The local Debian mirror: everything the product (and the synapse package's dependencies) may install.
# apt resolves the closure against the guest rootfs, recommends included, so any install the product
# does from this list finds all its packages. Add a package here when the product starts needing it
# (workers: redis-server; backups: restic; metrics: prometheus + exporters; edge: haproxy/apache2 as the
# stand-in edge; tuning: libjemalloc2; bench/load: python3-venv).
MIRROR_PACKAGES="postgresql postgresql-contrib nginx certbot python3-certbot-nginx coturn ufw gnupg dirmngr
  jq curl wget ca-certificates openssl ssl-cert lsb-release sudo debconf-utils adduser libpq5
  apt-transport-https iptables nftables
  redis-server restic prometheus prometheus-node-exporter prometheus-postgres-exporter haproxy apache2
  libjemalloc2 python3-venv"

apt_sources() { # SUITE
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$DEBIAN_MIRROR" "$1" "$DEBIAN_MIRROR" "$1" "$DEBIAN_SECURITY" "$1"
}

# ---- rootfs: plain Debian (SUITE), the same tree for nspawn (overlay lower dir) and QEMU (ext4 image) --
build_rootfs() {
  local out=$1 suite=$2
  # The guest resolves the test names to itself: it stands in for public DNS.
  local hosts='127.0.0.1\tlocalhost\n127.0.1.1\tmp-guest\n127.0.0.1\tmatrix.example.test element.example.test turn.example.test example.test\n::1\tlocalhost ip6-localhost ip6-loopback\n'
  mmdebstrap --mode=root --variant=important --format=directory \
    --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
    --include="$ROOTFS_INCLUDE" \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"; echo COMPRESS=zstd > "$1/etc/initramfs-tools/conf.d/compress"' \
    --customize-hook='echo mp-guest > "$1/etc/hostname"' \
    --customize-hook="printf '$hosts' > \"\$1/etc/hosts\"" \
    --customize-hook='printf "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n" > "$1/etc/fstab"' \
    --customize-hook='printf "[Match]\nName=en* eth*\n[Network]\nDHCP=ipv4\n" > "$1/etc/systemd/network/20-wired.network"' \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd' \
    --customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer systemd-networkd-wait-online.service systemd-timesyncd.service' \
    --customize-hook='echo "deb [trusted=yes] file:/srv/fixtures/debian ./" > "$1/etc/apt/sources.list"; rm -f "$1/etc/apt/apt.conf.d/99mmdebstrap"' \
    --customize-hook=': > "$1/etc/resolv.conf"; mkdir -p "$1/srv/fixtures"' \
    "$suite" "$out/rootfs" "$(apt_sources "$suite")"
  cp -L "$out"/rootfs/boot/vmlinuz-* "$out/vmlinuz"
  cp -L "$out"/rootfs/boot/initrd.img-* "$out/initrd.img"
  du -sh "$out/rootfs"
}

# ---- QEMU disk: the rootfs as ext4 + qcow2, plus an ssh key and the 9p mount of the fixtures ---------
build_qemuimg() {
  local out=$1 rootfs=$2 o=$1/ovl
  mkdir -p "$o/upper/root/.ssh" "$o/upper/etc/systemd/system" "$o/work" "$o/merged" "$out/ssh"
  ssh-keygen -q -t ed25519 -N '' -C mp-vm -f "$out/ssh/id_ed25519"
  install -m600 "$out/ssh/id_ed25519.pub" "$o/upper/root/.ssh/authorized_keys"
  chmod 700 "$o/upper/root/.ssh"
  cp "$rootfs/etc/fstab" "$o/upper/etc/fstab"
  echo 'fixtures /srv/fixtures 9p trans=virtio,version=9p2000.L,ro,msize=262144,nofail 0 0' >>"$o/upper/etc/fstab"
  mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$o/upper,workdir=$o/work" "$o/merged"
  local rc=0
  mkfs.ext4 -q -F -L root -d "$o/merged" "$out/base.raw" 8G || rc=$?
  umount "$o/merged"
  [ $rc -eq 0 ]
  qemu-img convert -O qcow2 "$out/base.raw" "$out/base.qcow2"
  rm -rf "$out/base.raw" "$o"
}

# ---- matrix-synapse-py3: real Synapse from PyPI in the upstream package layout -----------------------
# The venv is built with the release's own python3 (PYTHON, e.g. python3.13 on trixie) in a throw-away chroot
# of that release, like upstream's dh-virtualenv build; homeserver.yaml and log.yaml are generated by the
# venv's own generate_config with upstream's path tweaks.
build_synapsedeb() {
  local out=$1 suite=$2 python=$3 stage=$1/stage ver=$SYNAPSE_VERSION
  mkdir -p "$stage"
  cp -a "$VM_DIR/fixtures/synapse-deb/." "$stage/"
  mkdir -p "$stage/opt/venvs" "$stage/etc/matrix-synapse/conf.d" "$stage/var/lib/matrix-synapse" "$stage/var/log/matrix-synapse"
  local venv_script
  venv_script="set -e
    $python -m venv /opt/venvs/matrix-synapse
    /opt/venvs/matrix-synapse/bin/pip install -q --no-cache-dir 'matrix-synapse[postgres,redis]==$ver'
    /opt/venvs/matrix-synapse/bin/pip freeze > /opt/venvs/matrix-synapse/pip-freeze.txt
    mkdir -p /out
    /opt/venvs/matrix-synapse/bin/generate_config --config-dir=/etc/matrix-synapse --data-dir=/var/lib/matrix-synapse > /out/homeserver.yaml
    /opt/venvs/matrix-synapse/bin/generate_log_config --output-file=/out/log.yaml"
  mmdebstrap --mode=root --variant=minbase --format=null \
    --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
    --include="$python,python3-venv,python3-dev,libpq-dev,gcc,libc6-dev,ca-certificates" \
    --customize-hook='copy-in /etc/ssl/certs/ca-certificates.crt /tmp' \
    --customize-hook="chroot \"\$1\" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_CERT=/tmp/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 sh -c \"$venv_script\"" \
    --customize-hook="sync-out /opt/venvs/matrix-synapse $stage/opt/venvs/matrix-synapse" \
    --customize-hook="sync-out /out $out/gen" \
    "$suite" /dev/null "$(apt_sources "$suite")"
  # The package depends on the interpreter its venv was built with (control.in @PYTHON@), as upstream's does.
  [ -L "$stage/opt/venvs/matrix-synapse/bin/$python" ]
  # Upstream's tweaks (debian/build_virtualenv): paths under /etc and /var, server_name moved to conf.d.
  sed -e '/^tls_.*_path:/s/SERVERNAME/homeserver/' \
    -e '/^signing_key_path:/s/SERVERNAME/homeserver/' \
    -e '/^pid_file:/s#:.*#: "/var/run/matrix-synapse.pid"#' \
    -e '/^log_config:/s/SERVERNAME\.log\.config/log.yaml/' \
    -e '/^media_store_path:/s#/media_store#/media#' \
    -e 's/^server_name:.*/#\n# This is set in \/etc\/matrix-synapse\/conf.d\/server_name.yaml for Debian installations.\n# &/' \
    -e '/^# report_stats:/d' \
    "$out/gen/homeserver.yaml" >"$stage/etc/matrix-synapse/homeserver.yaml"
  cp "$out/gen/log.yaml" "$stage/etc/matrix-synapse/log.yaml"
  grep -q '^# server_name:' "$stage/etc/matrix-synapse/homeserver.yaml"
  local links=(hash_password register_new_matrix_user synapse_port_db synapse_review_recent_signups synctl update_synapse_database)
  mkdir -p "$stage/usr/bin"
  local l
  for l in "${links[@]}"; do ln -s "/opt/venvs/matrix-synapse/bin/$l" "$stage/usr/bin/$l"; done
  sed -e "s/@VERSION@/${ver}+${suite}1/" -e "s/@PYTHON@/$python/" -e "s/@SIZE@/$(du -sk "$stage" | cut -f1)/" \
    "$stage/DEBIAN/control.in" >"$stage/DEBIAN/control"
  rm "$stage/DEBIAN/control.in"
  chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/config" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
  dpkg-deb --root-owner-group -Zxz -z1 --build "$stage" "$out/matrix-synapse-py3_${ver}+${suite}1_amd64.deb"
  rm -rf "$stage"
  ls -la "$out"
}

# ---- test OpenPGP key for the apt repo --------------------------------------------------------------
build_gpg() {
  local out=$1
  export GNUPGHOME=$out/home
  mkdir -m700 -p "$GNUPGHOME"
  gpg --batch --passphrase '' --quick-gen-key 'matrix-provision test repo <repo@example.test>' ed25519 sign never
  gpg --batch --with-colons --list-keys repo@example.test | awk -F: '/^fpr/ {print $10; exit}' >"$out/repo.fpr"
  gpg --batch --export repo@example.test >"$out/repo-keyring.gpg"
  gpgconf --kill all || true
}

# ---- signed apt repo laid out like packages.matrix.org/debian ----------------------------------------
# One dists/SUITE per SUITE:DEBDIR argument (upstream publishes one per Debian release).
build_matrixrepo() {
  local out=$1 gpgdir=$2 r=$1/matrix/debian arg suite debdir
  shift 2
  export GNUPGHOME=$gpgdir/home
  for arg in "$@"; do
    suite=${arg%%:*} debdir=${arg#*:}
    mkdir -p "$r/pool/$suite/main/m/matrix-synapse-py3" "$r/dists/$suite/main/binary-amd64"
    cp "$debdir"/*.deb "$r/pool/$suite/main/m/matrix-synapse-py3/"
    (
      cd "$r"
      apt-ftparchive packages "pool/$suite/main" >"dists/$suite/main/binary-amd64/Packages"
      gzip -9k "dists/$suite/main/binary-amd64/Packages"
      apt-ftparchive -o APT::FTPArchive::Release::Origin=matrix.org -o APT::FTPArchive::Release::Label=matrix.org \
        -o APT::FTPArchive::Release::Suite="$suite" -o APT::FTPArchive::Release::Codename="$suite" \
        -o APT::FTPArchive::Release::Architectures=amd64 -o APT::FTPArchive::Release::Components=main \
        release "dists/$suite" >"$out/Release"
      mv "$out/Release" "dists/$suite/Release"
      gpg --batch --yes --local-user repo@example.test --clearsign -o "dists/$suite/InRelease" "dists/$suite/Release"
      gpg --batch --yes --local-user repo@example.test -abs -o "dists/$suite/Release.gpg" "dists/$suite/Release"
    )
  done
  # A binary keyring, like upstream's matrix-org-archive-keyring.gpg.
  cp "$gpgdir/repo-keyring.gpg" "$r/matrix-org-archive-keyring.gpg"
  gpgconf --kill all || true
  find "$out" -type f | sort
}

# ---- flat Debian mirror: the closure of PACKAGES over the guest rootfs of SUITE ----------------------
# With FULL=full the rootfs's own packages are added too: a mirror a host of the previous release can
# `apt full-upgrade` from (the upgrade scenario).
build_mirror() {
  local out=$1 rootfs=$2 suite=$3 packages=$4 full=${5:-} o=$1/ovl
  mkdir -p "$o/upper/etc/apt" "$o/work" "$o/merged" "$out/debian"
  apt_sources "$suite" >"$o/upper/etc/apt/sources.list"
  cp /etc/resolv.conf "$o/upper/etc/resolv.conf"
  mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$o/upper,workdir=$o/work" "$o/merged"
  mkdir -p "$o/merged/mirror"
  mount --bind "$out/debian" "$o/merged/mirror"
  mount -t proc proc "$o/merged/proc"
  local rc=0
  # shellcheck disable=SC2086
  {
    chroot "$o/merged" apt-get update -q &&
      chroot "$o/merged" apt-get install --download-only -y -q -o APT::Sandbox::User=root \
        -o Dir::Cache::archives=/mirror/ $packages &&
      if [ "$full" = full ]; then
        chroot "$o/merged" sh -c 'cd /mirror && apt-get download -q -o APT::Sandbox::User=root $(dpkg-query -W -f "\${Package}\n")'
      fi
  } || rc=$?
  umount "$o/merged/proc" "$o/merged/mirror" "$o/merged"
  rm -rf "$o"
  [ $rc -eq 0 ]
  rm -rf "$out/debian/partial" "$out/debian/lock"
  (
    cd "$out/debian"
    apt-ftparchive packages . >Packages
    gzip -9k Packages
    apt-ftparchive release . >Release
  )
  echo "debs: $(ls "$out"/debian/*.deb | wc -l), $(du -sh "$out/debian" | cut -f1)"
}

# ---- Pebble: its TLS certificate for localhost, config, and the binary from Debian's pebble package --
build_pebble() {
  local out=$1
  mkdir -p "$out/bin"
  cp /usr/bin/pebble "$out/bin/pebble"
  (
    cd "$out"
    # Key usage and key identifiers: Python 3.13 (Debian 13's) verifies with VERIFY_X509_STRICT and rejects a
    # CA without keyUsage or a leaf without an authority key identifier.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj '/CN=mp-vm test CA' \
      -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' \
      -addext 'subjectKeyIdentifier=hash' -keyout ca.key -out ca.pem
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj '/CN=localhost' -keyout key.pem -out cert.csr
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n' >ext.cnf
    openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -extfile ext.cnf -out cert.pem
    rm -f cert.csr ca.srl ext.cnf ca.key
    chmod 644 key.pem
  )
  cat >"$out/pebble-config.json" <<'JSON'
{
  "pebble": {
    "listenAddress": "127.0.0.1:14000",
    "managementListenAddress": "127.0.0.1:15000",
    "certificate": "/srv/fixtures/pebble/cert.pem",
    "privateKey": "/srv/fixtures/pebble/key.pem",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
JSON
}

# ---- Element: signed fake releases and a GitHub-like release API (tests/support/element-fixtures.sh) ----
# Its download URLs name 127.0.0.1:8099, the guest's fixture server, which serves its www/ at the root.
build_element() {
  local out=$1
  "$REPO_ROOT/tests/support/element-fixtures.sh" "$out/src" 8099
  mv "$out/src/www" "$out/www"
  cp "$out/src/keyring.gpg" "$out/element-test-key.gpg"
  rm -rf "$out/src"
}

# ---- everything, as one fixtures tree the guest sees read-only at /srv/fixtures ----------------------
# build_release_inputs REL: the per-release artifacts (named ...REL, so building one release never removes
# the other's); sets R_ROOTFS, R_SYNAPSEDEB, R_MIRROR (FULL=full: the upgrade-target mirror).
build_release_inputs() {
  local rel=$1 full=${2:-} suite python pkgs
  suite=$(release_suite "$rel") || return 1
  python=$(release_python "$rel")
  pkgs="$MIRROR_PACKAGES $python"
  R_ROOTFS=$(cached "rootfs$rel" "$(cache_key build_rootfs "$ROOTFS_INCLUDE" "$DEBIAN_MIRROR" "$suite")" build_rootfs "$suite") || return 1
  R_SYNAPSEDEB=$(cached "synapsedeb$rel" "$(cache_key build_synapsedeb "$VM_DIR/fixtures/synapse-deb" "$SYNAPSE_VERSION" "$suite" "$python")" \
    build_synapsedeb "$suite" "$python") || return 1
  R_MIRROR=$(cached "mirror$rel$full" "$(cache_key build_mirror "${R_ROOTFS##*/}" "$suite" "$pkgs" "$full")" \
    build_mirror "$R_ROOTFS/rootfs" "$suite" "$pkgs" "$full") || return 1
}

# build_inputs REL [qemu] [upgrade]: the guest of Debian REL (12 or 13). Sets ROOTFS_DIR, KERNEL_DIR, QEMUIMG_DIR
# (only with qemu), FIXTURES, REPO_FPR, GUEST_RELEASE, GUEST_SUITE. With `upgrade` (REL 12 only) the fixtures
# also hold /srv/fixtures/debian13 (a full trixie mirror) and the matrix repo has dists for both releases.
build_inputs() {
  local rel=$1 want_qemu=${2:-} upgrade=${3:-}
  local rootfs synapsedeb mirror gpgd matrixrepo pebble element repos
  build_release_inputs "$rel" || return 1
  rootfs=$R_ROOTFS synapsedeb=$R_SYNAPSEDEB mirror=$R_MIRROR
  GUEST_RELEASE=$rel
  GUEST_SUITE=$(release_suite "$rel")
  ROOTFS_DIR=$rootfs/rootfs
  KERNEL_DIR=$rootfs
  if [ -n "$want_qemu" ]; then
    QEMUIMG_DIR=$(cached "qemuimg$rel" "$(cache_key build_qemuimg "${rootfs##*/}")" build_qemuimg "$rootfs/rootfs") || return 1
  fi
  gpgd=$(cached gpg "$(cache_key build_gpg)" build_gpg) || return 1
  [ -x "$REPO_ROOT/tests/support/element-fixtures.sh" ] || { log "tests/support/element-fixtures.sh is missing"; return 1; }
  repos="$GUEST_SUITE:$synapsedeb"
  local next_mirror= name=matrixrepo$rel
  if [ -n "$upgrade" ]; then
    build_release_inputs 13 full || return 1
    repos="$repos trixie:$R_SYNAPSEDEB"
    next_mirror=$R_MIRROR name=matrixrepoupgrade
  fi
  # shellcheck disable=SC2086
  matrixrepo=$(cached "$name" "$(cache_key build_matrixrepo "${gpgd##*/}" $repos)" build_matrixrepo "$gpgd" $repos) || return 1
  pebble=$(cached pebble "$(cache_key build_pebble /usr/bin/pebble)" build_pebble) || return 1
  element=$(cached element "$(cache_key build_element "$REPO_ROOT/tests/support/element-fixtures.sh")" build_element) || return 1
  REPO_FPR=$(cat "$gpgd/repo.fpr")
  # Hard links: instant, and the guest cannot follow symlinks out of its bind mount.
  FIXTURES=$RUN_DIR/fixtures
  rm -rf "$FIXTURES"
  mkdir -p "$FIXTURES"
  cp -al "$mirror/debian" "$FIXTURES/debian"
  [ -z "$next_mirror" ] || cp -al "$next_mirror/debian" "$FIXTURES/debian13"
  cp -al "$matrixrepo/matrix" "$FIXTURES/matrix"
  cp -al "$pebble" "$FIXTURES/pebble"
  cp -al "$element/www/." "$FIXTURES/"
  cp -al "$element/element-test-key.gpg" "$FIXTURES/element-test-key.gpg"
  rm -f "$FIXTURES"/*/.ok
}
