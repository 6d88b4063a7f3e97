#!/usr/bin/env python3
"""Data that must survive: run INSIDE the guest as root (standard library only).

  message.py write STATE [--with-file]
                           register a user (shared-secret registration), create a room, send a message
                           (--with-file: also upload 256 KiB of random bytes and post it as an m.file), and
                           keep user, password, room, text (and the file's mxc URI and SHA-256) in STATE
  message.py read STATE    log in as that user, find that message in the room's history (and download the
                           file: the same bytes)
  message.py key OUT       the server's signing keys as /_matrix/key/v2/server serves them (verify_keys,
                           sorted JSON) into OUT, to compare across hosts

Talks to Synapse on loopback (the upgrade scenario checks the data, not nginx). Prints "PASS name" or
"FAIL name: why"; exits 1 on a failure.
"""

import hashlib
import hmac
import json
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, "/root/checks")
from client import SYNAPSE_LOCAL, Http, registration_shared_secret  # noqa: E402


def call(http, method, path, body=None, token=None):
    status, _, r = http.request(method, f"{SYNAPSE_LOCAL}{path}", body, token=token)
    if status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {status} {r}")
    return r


def wait_for_synapse(http):
    for _ in range(120):
        try:
            if http.request("GET", f"{SYNAPSE_LOCAL}/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError("Synapse /health did not answer within 120 s")


def upload(token, data):
    req = urllib.request.Request(f"{SYNAPSE_LOCAL}/_matrix/media/v3/upload?filename=old.bin", data=data,
                                 method="POST", headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["content_uri"]


def download(token, mxc):
    server, media_id = mxc[len("mxc://"):].split("/", 1)
    last = None
    # Authenticated media (Synapse >= 1.120), then the legacy endpoint.
    for path in (f"/_matrix/client/v1/media/download/{server}/{media_id}", f"/_matrix/media/v3/download/{server}/{media_id}"):
        req = urllib.request.Request(f"{SYNAPSE_LOCAL}{path}", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            last = f"{path}: HTTP {e.code}"
    raise RuntimeError(f"download of {mxc} failed: {last}")


def write(http, state, with_file=False):
    secret = registration_shared_secret().encode()
    nonce = call(http, "GET", "/_synapse/admin/v1/register")["nonce"]
    user, pw = "olduser" + secrets.token_hex(3), secrets.token_urlsafe(16)
    mac = hmac.new(secret, digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), user.encode(), pw.encode(), b"notadmin"]))
    r = call(http, "POST", "/_synapse/admin/v1/register",
             {"nonce": nonce, "username": user, "password": pw, "admin": False, "mac": mac.hexdigest()})
    token = r["access_token"]
    room = call(http, "POST", "/_matrix/client/v3/createRoom", {"name": "before the upgrade"}, token)["room_id"]
    text = "written before the upgrade " + secrets.token_hex(8)
    call(http, "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/send/m.room.message/{secrets.token_hex(6)}",
         {"msgtype": "m.text", "body": text}, token)
    saved = {"user": user, "pw": pw, "room": room, "text": text}
    if with_file:
        data = secrets.token_bytes(256 * 1024)
        mxc = upload(token, data)
        call(http, "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/send/m.room.message/{secrets.token_hex(6)}",
             {"msgtype": "m.file", "body": "old.bin", "url": mxc}, token)
        saved.update({"mxc": mxc, "sha256": hashlib.sha256(data).hexdigest()})
    with open(state, "w") as f:
        json.dump(saved, f)
    return f"{user} sent a message{' and a file' if with_file else ''} to {room}"


def read(http, state):
    s = json.load(open(state))
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": s["user"]}, "password": s["pw"]}
    # Right after apply restarted Synapse, /health can answer while its database pool still fails (HTTP 500).
    for _ in range(30):
        status, _, r = http.request("POST", f"{SYNAPSE_LOCAL}/_matrix/client/v3/login", body)
        if status < 500:
            break
        time.sleep(1)
    if status != 200:
        raise RuntimeError(f"login: HTTP {status} {r}")
    token = r["access_token"]
    r = call(http, "GET", f"/_matrix/client/v3/rooms/{urllib.parse.quote(s['room'])}/messages?dir=b&limit=50",
             token=token)
    bodies = [e.get("content", {}).get("body") for e in r.get("chunk", [])]
    if s["text"] not in bodies:
        raise RuntimeError(f"message not in the room's history: {bodies}")
    if "mxc" not in s:
        return f"{s['user']} logs in and reads the old message"
    got = hashlib.sha256(download(token, s["mxc"])).hexdigest()
    if got != s["sha256"]:
        raise RuntimeError(f"{s['mxc']}: downloaded bytes differ (sha256 {got}, uploaded {s['sha256']})")
    return f"{s['user']} logs in, reads the old message and downloads the old file ({s['mxc']}, same SHA-256)"


def key(http, out):
    status, _, r = http.request("GET", f"{SYNAPSE_LOCAL}/_matrix/key/v2/server")
    if status != 200 or not r.get("verify_keys"):
        raise RuntimeError(f"/_matrix/key/v2/server: HTTP {status} {r}")
    with open(out, "w") as f:
        json.dump(r["verify_keys"], f, sort_keys=True)
    return f"serves {sorted(r['verify_keys'])}"


def main():
    what, state = sys.argv[1], sys.argv[2]
    http = Http(None)
    try:
        wait_for_synapse(http)
        if what == "write":
            detail = write(http, state, "--with-file" in sys.argv[3:])
        elif what == "key":
            detail = key(http, state)
        else:
            detail = read(http, state)
        print(f"PASS message {what}: {detail}", flush=True)
    except Exception as e:  # noqa: BLE001 - one line per check, whatever broke
        print(f"FAIL message {what}: {e}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
