#!/usr/bin/env python3
"""Client-side checks of a converged guest, run INSIDE the guest as root (standard library only).

Everything a user reaches goes through nginx over TLS, verified against the CA of the test ACME server
(Pebble): register with a registration token, log in, create a room, send a message and read it back,
.well-known, the federation key endpoint on 8448, the admin API not exposed, TURN credentials that coturn
accepts, Element's index.html and config.json. Local facts (services, ufw) are checked too.

Prints one line per check: "PASS name", "FAIL name: why" or "SKIP name: why"; exits 1 if any failed.
"""

import argparse
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

PEBBLE_MGMT_CA = "/srv/fixtures/pebble/ca.pem"
PEBBLE_ROOT_URL = "https://localhost:15000/roots/0"
SYNAPSE_LOCAL = "http://127.0.0.1:8008"

results = []


def report(name, ok, why=""):
    results.append(ok)
    print(f"PASS {name}" if ok else f"FAIL {name}: {why}", flush=True)


def skip(name, why):
    print(f"SKIP {name}: {why}", flush=True)


class Http:
    def __init__(self, cafile):
        self.ctx = ssl.create_default_context(cafile=cafile)

    def request(self, method, url, body=None, token=None, timeout=30):
        """Returns (status, headers, parsed JSON or raw bytes). HTTP errors are returned, not raised."""
        data = None
        headers = {"User-Agent": "mp-vm-client"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        ctx = self.ctx if url.startswith("https:") else None
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
                status, hdrs, raw = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, hdrs, raw = e.code, e.headers, e.read()
        try:
            return status, hdrs, json.loads(raw)
        except ValueError:
            return status, hdrs, raw


def trust_pebble_root(cafile):
    """Pebble makes a new root at every start: keep every root we have seen, so certificates issued before a
    reboot still verify after it."""
    ctx = ssl.create_default_context(cafile=PEBBLE_MGMT_CA)
    with urllib.request.urlopen(PEBBLE_ROOT_URL, context=ctx, timeout=10) as r:
        root = r.read().decode()
    known = open(cafile).read() if os.path.exists(cafile) else ""
    if root.strip() not in known:
        with open(cafile, "a") as f:
            f.write(root if root.endswith("\n") else root + "\n")


def registration_shared_secret():
    """The secret Synapse reads: a *_path file (what the product writes) or an inline value in conf.d."""
    confs = ["/etc/matrix-synapse/homeserver.yaml"]
    d = "/etc/matrix-synapse/conf.d"
    if os.path.isdir(d):
        confs += [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".yaml")]
    path = inline = None
    for c in confs:
        for line in open(c):
            m = re.match(r"^registration_shared_secret(_path)?\s*:\s*(.+?)\s*$", line)
            if m:
                v = m.group(2).strip("'\"")
                if m.group(1):
                    path = v
                else:
                    inline = v
    if path:
        return open(path).read().strip()
    if inline:
        return inline
    raise RuntimeError("no registration_shared_secret(_path) in /etc/matrix-synapse")


def admin_token(http):
    """Register a throw-away admin through Synapse's shared-secret registration (loopback listener)."""
    secret = registration_shared_secret().encode()
    _, _, r = http.request("GET", f"{SYNAPSE_LOCAL}/_synapse/admin/v1/register")
    nonce = r["nonce"]
    user, pw = "mpadmin" + secrets.token_hex(4), secrets.token_urlsafe(16)
    mac = hmac.new(secret, digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), user.encode(), pw.encode(), b"admin"]))
    status, _, r = http.request(
        "POST",
        f"{SYNAPSE_LOCAL}/_synapse/admin/v1/register",
        {"nonce": nonce, "username": user, "password": pw, "admin": True, "mac": mac.hexdigest()},
    )
    if status != 200:
        raise RuntimeError(f"shared-secret registration: HTTP {status} {r}")
    return r["access_token"]


def registration_token(http):
    """`matrix-provision token create` once the product has it (issue 5); the admin API until then."""
    mp = shutil.which("matrix-provision")
    if mp and subprocess.run([mp, "token", "--help"], capture_output=True).returncode == 0:
        out = subprocess.run(
            [mp, "token", "create", "--uses", "1", "/root/host.toml"], capture_output=True, text=True
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().split()[-1], "matrix-provision token create"
    tok = admin_token(http)
    status, _, r = http.request(
        "POST", f"{SYNAPSE_LOCAL}/_synapse/admin/v1/registration_tokens/new", {"uses_allowed": 1}, token=tok
    )
    if status != 200:
        raise RuntimeError(f"registration_tokens/new: HTTP {status} {r}")
    return r["token"], "admin API"


def register(http, base, user, pw, token):
    """Client-server registration, completing the user-interactive auth stages a token server asks for."""
    body = {"username": user, "password": pw, "initial_device_display_name": "mp-vm"}
    status, _, r = http.request("POST", f"{base}/_matrix/client/v3/register", body)
    for _ in range(4):
        if status == 200:
            return r
        if status != 401 or "session" not in r:
            raise RuntimeError(f"register: HTTP {status} {r}")
        flows = [f["stages"] for f in r.get("flows", [])]
        flow = next((f for f in flows if "m.login.registration_token" in f), None)
        if flow is None:
            raise RuntimeError(f"register: no registration-token flow offered: {flows}")
        done = set(r.get("completed", []))
        stage = next(s for s in flow if s not in done)
        auth = {"type": stage, "session": r["session"]}
        if stage == "m.login.registration_token":
            auth["token"] = token
        elif stage != "m.login.dummy":
            raise RuntimeError(f"register: cannot complete stage {stage}")
        status, _, r = http.request("POST", f"{base}/_matrix/client/v3/register", dict(body, auth=auth))
    raise RuntimeError(f"register: did not finish: {r}")


def check(name, fn):
    try:
        fn()
        report(name, True)
    except Exception as e:  # noqa: BLE001 - any error is this check's failure, the others still run
        report(name, False, f"{type(e).__name__}: {e}")


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server-name", default="example.test")
    ap.add_argument("--synapse-host", default="matrix.example.test")
    ap.add_argument("--element-host", default="element.example.test")
    ap.add_argument("--turn-host", default="turn.example.test")
    ap.add_argument("--cafile", default="/root/pebble-roots.pem")
    ap.add_argument("--federation-port", default="8448", help="where federation keys are fetched (443 behind an edge)")
    ap.add_argument("--ufw-ports", default="80,443,8448,3478,5349", help="ports ufw must allow besides sshd's")
    ap.add_argument("--ufw-closed", default="", help="ports ufw must not allow")
    ap.add_argument("--only", default="", help="comma-separated check name prefixes")
    ap.add_argument("--skip", default="", help="comma-separated check name prefixes to leave out")
    a = ap.parse_args()

    only = [p for p in a.only.split(",") if p]
    skips = [p for p in a.skip.split(",") if p]

    def selected(name):
        return (not only or any(name.startswith(p) for p in only)) and not any(name.startswith(p) for p in skips)

    needs_user = ("login", "room-send-read", "turn-relay")

    def wanted(name):
        # A check that needs a logged-in user brings registration and login along.
        if name in ("register-with-token", "login") and any(selected(n) for n in needs_user):
            return True
        return selected(name)

    trust_pebble_root(a.cafile)
    http = Http(a.cafile)
    base = f"https://{a.synapse_host}"
    fed = f"https://{a.synapse_host}:{a.federation_port}"
    st = {}

    def c(name, fn):
        if wanted(name):
            check(name, fn)

    def services():
        out = subprocess.run(
            ["systemctl", "is-active", "postgresql", "matrix-synapse", "coturn", "nginx"], capture_output=True, text=True
        )
        expect(out.returncode == 0, "not all active: " + " ".join(out.stdout.split()))

    def versions():
        s, _, r = http.request("GET", f"{base}/_matrix/client/versions")
        expect(s == 200 and "versions" in r, f"HTTP {s} {r!r:.200}")

    def wk_server():
        s, h, r = http.request("GET", f"https://{a.server_name}/.well-known/matrix/server")
        expect(s == 200 and isinstance(r, dict), f"HTTP {s} {r!r:.200}")
        host, _, port = r.get("m.server", "").partition(":")
        expect(host == a.synapse_host and port in ("443", "8448", ""), f"m.server is {r.get('m.server')!r}")

    def wk_client():
        s, h, r = http.request("GET", f"https://{a.server_name}/.well-known/matrix/client")
        expect(s == 200 and isinstance(r, dict), f"HTTP {s} {r!r:.200}")
        url = r.get("m.homeserver", {}).get("base_url", "").rstrip("/")
        expect(url == base, f"m.homeserver.base_url is {url!r}")
        expect(h.get("Access-Control-Allow-Origin") == "*", "no CORS header Access-Control-Allow-Origin: *")

    def fed_key():
        s, _, r = http.request("GET", f"{fed}/_matrix/key/v2/server")
        expect(s == 200 and isinstance(r, dict), f"HTTP {s} {r!r:.200}")
        expect(r.get("server_name") == a.server_name, f"server_name is {r.get('server_name')!r}")
        expect(r.get("verify_keys"), "no verify_keys")

    def admin_hidden():
        for url in (base, fed):
            s, _, r = http.request("GET", f"{url}/_synapse/admin/v1/server_version")
            expect(s in (403, 404), f"{url}/_synapse/admin answered HTTP {s} {r!r:.100}")

    def register_user():
        token, how = registration_token(http)
        st["user"], st["pw"] = "alice" + secrets.token_hex(4), secrets.token_urlsafe(16)
        r = register(http, base, st["user"], st["pw"], token)
        expect("user_id" in r, f"no user_id in {r}")
        # The token was single-use: a second registration with it must be refused.
        try:
            register(http, base, st["user"] + "x", st["pw"], token)
            raise AssertionError(f"token from {how} accepted twice")
        except RuntimeError:
            pass

    def login():
        expect("user" in st, "no registered user")
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": st["user"]}, "password": st["pw"]}
        s, _, r = http.request("POST", f"{base}/_matrix/client/v3/login", body)
        expect(s == 200 and "access_token" in r, f"HTTP {s} {r}")
        st["token"] = r["access_token"]

    def room_message():
        expect("token" in st, "not logged in")
        t = st["token"]
        s, _, r = http.request("POST", f"{base}/_matrix/client/v3/createRoom", {"name": "mp-vm test"}, token=t)
        expect(s == 200, f"createRoom: HTTP {s} {r}")
        room = urllib.parse.quote(r["room_id"])
        text = "hello " + secrets.token_hex(8)
        s, _, r = http.request(
            "PUT",
            f"{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/{secrets.token_hex(6)}",
            {"msgtype": "m.text", "body": text},
            token=t,
        )
        expect(s == 200 and "event_id" in r, f"send: HTTP {s} {r}")
        s, _, r = http.request("GET", f"{base}/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=20", token=t)
        bodies = [e.get("content", {}).get("body") for e in r.get("chunk", [])] if s == 200 else []
        expect(text in bodies, f"message not read back: HTTP {s} {bodies}")

    def turn():
        expect("token" in st, "not logged in")
        s, _, r = http.request("GET", f"{base}/_matrix/client/v3/voip/turnServer", token=st["token"])
        expect(s == 200 and r.get("uris"), f"turnServer: HTTP {s} {r}")
        expect(any(a.turn_host in u for u in r["uris"]), f"uris do not name {a.turn_host}: {r['uris']}")
        uclient = shutil.which("turnutils_uclient")
        expect(uclient, "turnutils_uclient not installed (coturn)")
        st["turn"] = r
        # Allocation is the proof: credentials from Synapse accepted by coturn (shared secret and realm agree)
        # and a relay address handed out. Relaying data to a peer cannot be shown inside one guest: every
        # local address is on coturn's denied-peer-ip list (as it should be), so channel binds get 403.
        cmd = [uclient, "-v", "-u", r["username"], "-w", r["password"], "-n", "1", "-m", "1", "-l", "64", "-y", a.turn_host]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        log = out.stdout + out.stderr
        expect("Cannot complete Allocation" not in log, f"allocation refused: {log[-600:]}")
        expect("Received relay addr" in log, f"no relay address allocated: {log[-600:]}")

    def element():
        s, h, r = http.request("GET", f"https://{a.element_host}/")
        expect(s == 200 and b"Element" in (r if isinstance(r, bytes) else b""), f"index.html: HTTP {s} {r!r:.120}")
        s, h, r = http.request("GET", f"https://{a.element_host}/config.json")
        expect(s == 200 and isinstance(r, dict), f"config.json: HTTP {s} {r!r:.200}")
        hs = r.get("default_server_config", {}).get("m.homeserver", {})
        expect(hs.get("base_url", "").rstrip("/") == base, f"config.json base_url is {hs.get('base_url')!r}")
        expect(hs.get("server_name") == a.server_name, f"config.json server_name is {hs.get('server_name')!r}")

    def ufw():
        out = subprocess.run(["ufw", "status"], capture_output=True, text=True)
        expect(out.returncode == 0 and "Status: active" in out.stdout, f"ufw: {out.stdout or out.stderr}")
        sshd = subprocess.run(["sshd", "-T"], capture_output=True, text=True).stdout
        port = re.search(r"^port (\d+)", sshd, re.M)
        want = [port.group(1) if port else "22"] + [p for p in a.ufw_ports.split(",") if p]
        allowed = {m.group(1) for m in re.finditer(r"^(\d+)(?:/\w+)?\s.*ALLOW", out.stdout, re.M)}
        allowed |= {"22" for line in out.stdout.splitlines() if line.startswith("OpenSSH") and "ALLOW" in line}
        missing = [p for p in want if p not in allowed]
        expect(not missing, f"ports not allowed: {missing}\n{out.stdout}")
        opened = [p for p in a.ufw_closed.split(",") if p and p in allowed]
        expect(not opened, f"ports allowed that must not be: {opened}\n{out.stdout}")

    c("services-active", services)
    c("tls-client-versions", versions)
    c("well-known-server", wk_server)
    c("well-known-client", wk_client)
    c(f"federation-key-{a.federation_port}", fed_key)
    c("admin-api-hidden", admin_hidden)
    c("register-with-token", register_user)
    c("login", login)
    c("room-send-read", room_message)
    c("turn-relay", turn)
    c("element-served", element)
    c("ufw-ports", ufw)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
