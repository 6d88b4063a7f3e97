#!/usr/bin/env python3
"""What outside judges see of a converged guest (issue 9, items 3 and 4). Standard library only; runs inside
the guest as root. Prints one line per check: PASS/FAIL/SKIP <name>: <detail>; exits 1 if any failed.

  judges.py --synapse-host H --server-name S --element-host E --turn-host T
"""
import argparse
import base64
import hashlib
import hmac
import re
import socket
import ssl
import subprocess
import time
import urllib.request

FAILED = []


def report(ok, name, detail=""):
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        FAILED.append(name)


def skip(name, why):
    print(f"SKIP {name} ({why})", flush=True)


def tls_handshake(port, sni, version=None, host="127.0.0.1"):
    """(ok, detail): a TLS handshake to host:port with SNI `sni` (None: no SNI), certificate not checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    try:
        with socket.create_connection((host, port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=sni) as s:
                return True, f"{s.version()} {s.cipher()[0]}"
    except (ssl.SSLError, OSError) as e:
        return False, str(e)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def head(url):
    """Response headers of GET url (any status), TLS not verified: the judges look at headers, not trust."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), NoRedirect)
    try:
        with opener.open(url, timeout=15) as r:
            return r.headers
    except urllib.error.HTTPError as e:
        return e.headers


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--synapse-host", required=True)
    p.add_argument("--server-name", required=True)
    p.add_argument("--element-host", required=True)
    p.add_argument("--turn-host", required=True)
    a = p.parse_args()

    # No version banner, on HTTPS and on plain HTTP.
    for url in (f"https://{a.synapse_host}/_matrix/client/versions", f"http://{a.synapse_host}/"):
        server = head(url).get("Server", "")
        report(server == "nginx", f"no version banner on {url.split(':')[0]}", f"Server: {server!r}")

    # Security headers on every vhost, in locations with their own add_header too (/.well-known).
    want = {
        "Strict-Transport-Security": "max-age=",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    urls = [
        f"https://{a.synapse_host}/_matrix/client/versions",
        f"https://{a.synapse_host}/_synapse/admin/v1/server_version",
        f"https://{a.server_name}/.well-known/matrix/client",
        f"https://{a.element_host}/",
        f"https://{a.element_host}/config.json",
    ]
    for url in urls:
        h = head(url)
        missing = [k for k, v in want.items() if v not in (h.get(k) or "")]
        report(not missing, f"security headers on {url}", f"missing {missing}" if missing else "all present")

    # The default server: no SNI or an unknown name gets no handshake (so no certificate, no Element vhost);
    # the real names still do (the control).
    for port in (443, 8448):
        ok, detail = tls_handshake(port, None)
        report(not ok, f"no-SNI TLS handshake on {port} is rejected", detail)
        ok, detail = tls_handshake(port, "unknown.example.test")
        report(not ok, f"unknown-name TLS handshake on {port} is rejected", detail)
        ok, detail = tls_handshake(port, a.synapse_host)
        report(ok, f"{a.synapse_host} still handshakes on {port}", detail)
        ok, detail = tls_handshake(port, a.synapse_host, ssl.TLSVersion.TLSv1_1)
        report(not ok, f"TLS 1.1 refused on {port}", detail)

    # coturn's TLS port: 1.2 with our forward-secret ciphers; 1.3 where the coturn release can.
    ok, detail = tls_handshake(5349, a.turn_host, ssl.TLSVersion.TLSv1_2)
    report(ok and "ECDHE" in detail, "TLS 1.2 with an ECDHE cipher on 5349", detail)
    ok, detail = tls_handshake(5349, a.turn_host, ssl.TLSVersion.TLSv1_1)
    report(not ok, "TLS 1.1 refused on 5349", detail)
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "coturn"], capture_output=True, text=True).stdout
    old = subprocess.run(["dpkg", "--compare-versions", version, "lt", "4.6.2"]).returncode == 0
    ok, detail = tls_handshake(5349, a.turn_host, ssl.TLSVersion.TLSv1_3)
    if old and not ok:
        skip("TLS 1.3 on 5349", f"coturn {version} picks a TLS-1.2-only context for every TLS 1.3 ClientHello; fixed in 4.6.2: {detail}")
    else:
        report(ok, "TLS 1.3 on 5349", detail)

    # coturn never relays to the host itself: every address of the guest is denied in its config, and a
    # relay to loopback and to the guest's own interface address gets 403.
    conf = open("/etc/coturn/matrix-provision.conf").read()
    denied = set(re.findall(r"^denied-peer-ip=(\S+)$", conf, re.M))
    out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
    own = sorted({m.split("/")[0] for m in re.findall(r"\sinet6? (\S+)", out)})
    missing = [addr for addr in own if addr not in denied]
    report(own and not missing, "coturn denies each of the host's own addresses", f"own {own}, not denied {missing}")
    secret = open("/etc/matrix-synapse/secrets/turn_shared_secret").read().strip()
    user = f"{int(time.time()) + 600}:judges"
    password = base64.b64encode(hmac.new(secret.encode(), user.encode(), hashlib.sha1).digest()).decode()
    for peer in ("127.0.0.1", "192.0.2.10"):
        r = subprocess.run(
            ["turnutils_uclient", "-u", user, "-w", password, "-n", "1", "-m", "1", "-l", "64",
             "-e", peer, "-r", "3480", a.turn_host],
            capture_output=True, text=True, timeout=60)
        text = r.stdout + r.stderr
        report("403" in text, f"relay to the host's own {peer} is denied (403)",
               (re.search(r".*403.*", text) or re.search(r".*ERROR.*", text) or [text[-200:]])[0].strip())


if __name__ == "__main__":
    main()
    raise SystemExit(1 if FAILED else 0)
