# shellcheck shell=bash
# Issue 8, item 2: the firewall never locks the admin out. sshd listens only on `ListenAddress 0.0.0.0:2222`
# (sshd -T still says `port 22`); after apply, ufw allows 2222 and a real SSH login reaches it from another
# network namespace, through the guest's veth (ufw filters non-loopback traffic only), while a control
# listener on a port nobody asked for is blocked. Then sshd moves to a socket-activated ssh.socket on 2022
# (the sshd_config drop-in removed, so only the socket unit knows the port): the next apply allows 2022 and
# SSH reaches it there too. Container tier only: the client namespace takes over the guest's veth peer.

# ssh_in CLIENT_NS PORT: a real SSH login (key auth) from the client namespace to the guest's 192.0.2.10.
ssh_in() {
  ip netns exec "$1" ssh -i "$RUN_DIR/ssh-key" -p "$2" -o BatchMode=yes -o ConnectTimeout=5 \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@192.0.2.10 true
}
# tcp_in CLIENT_NS PORT: does a TCP connection to the guest's veth address get through (5 s)?
tcp_in() { ip netns exec "$1" timeout 5 bash -c "exec 3<>/dev/tcp/192.0.2.10/$2" 2>/dev/null; }

scenario_ssh() {
  local tier=$1 g=$1-ssh rc cns out
  if [ "$tier" != container ]; then skip "$tier/ssh (needs the container tier's veth pair)"; return 0; fi
  fresh_guest "$g" "$tier" || return 0
  # The client side: the guest's veth peer moves into a namespace of its own, 192.0.2.20.
  cns=mpvm$$-sshc
  ip netns add "$cns"
  on_exit "ip netns del $cns"
  ip -n "$(cat "$(gdir "$g")/netns")" link set mp1 netns "$cns"
  ip -n "$cns" addr add 192.0.2.20/24 dev mp1
  ip -n "$cns" link set lo up
  ip -n "$cns" link set mp1 up
  rm -f "$RUN_DIR/ssh-key" "$RUN_DIR/ssh-key.pub"
  ssh-keygen -q -t ed25519 -N '' -f "$RUN_DIR/ssh-key"
  guest_run "$g" 'install -d -m700 /root/.ssh && cat > /root/.ssh/authorized_keys' <"$RUN_DIR/ssh-key.pub"
  guest_run "$g" 'printf "ListenAddress 0.0.0.0:2222\n" > /etc/ssh/sshd_config.d/mp-test.conf && systemctl restart ssh &&
    systemd-run --quiet --unit=mp-control python3 -m http.server 2399 --bind 0.0.0.0' >/dev/null 2>&1
  out=$(guest_run "$g" 'sshd -T | grep -E "^(port|listenaddress) "' 2>&1 | tr '\n' ' ')
  local i
  for ((i = 0; i < 50; i++)); do tcp_in "$cns" 2399 && break; sleep 0.2; done
  if ssh_in "$cns" 2222 && tcp_in "$cns" 2399; then
    pass "$g: before apply, SSH on 2222 and the control port 2399 are reachable over the veth ($out)"
  else
    fail "$g: before apply, SSH on 2222 and the control port 2399 are reachable over the veth ($out)"
  fi

  rc=0; phase "$g: apply (fresh)" glog "$g" "$g-apply1.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply with sshd on ListenAddress 0.0.0.0:2222" 0 $rc "$g-apply1.log"
  out=$(guest_run "$g" 'ufw status' 2>&1 || true)
  if grep -q 'Status: active' <<<"$out" && grep -Eq '^2222/tcp +ALLOW' <<<"$out"; then
    pass "$g: ufw is active and allows 2222/tcp"
  else
    fail "$g: ufw is active and allows 2222/tcp"; sed 's/^/      | /' <<<"$out" | head -20
  fi
  check "$g: after apply, SSH still logs in on 2222 over the veth" ssh_in "$cns" 2222
  if tcp_in "$cns" 2399; then fail "$g: the control port 2399 is blocked (the firewall filters)"; else
    pass "$g: the control port 2399 is blocked (the firewall filters)"; fi

  # sshd by socket activation on 2022; its config no longer names any port but the default 22.
  guest_run "$g" 'rm /etc/ssh/sshd_config.d/mp-test.conf && mkdir -p /etc/systemd/system/ssh.socket.d &&
    printf "[Socket]\nListenStream=\nListenStream=2022\n" > /etc/systemd/system/ssh.socket.d/mp-test.conf &&
    systemctl daemon-reload && systemctl disable --now ssh.service && systemctl enable --now ssh.socket' >/dev/null 2>&1
  out=$(guest_run "$g" 'systemctl show -p Listen -p ActiveState ssh.socket' 2>&1 | tr '\n' ' ')
  if ssh_in "$cns" 2022; then fail "$g: before the second apply, ufw blocks SSH on 2022 ($out)"; else
    pass "$g: before the second apply, ufw blocks SSH on 2022 ($out)"; fi
  rc=0; glog "$g" "$g-apply2.log" "$(apply_timeout "$g")" matrix-provision apply /root/host.toml || rc=$?
  expect_rc "$g: apply with sshd behind ssh.socket on 2022" 0 $rc "$g-apply2.log"
  check "$g: ufw allows 2022/tcp" guest_run "$g" "ufw status | grep -Eq '^2022/tcp +ALLOW'"
  check "$g: after apply, SSH logs in on 2022 (ssh.socket) over the veth" ssh_in "$cns" 2022
  guest_destroy "$g"
}
