#!/usr/bin/env python3
"""Data that must survive: run INSIDE the guest as root (standard library only).

  message.py write STATE   register a user (shared-secret registration), create a room, send a message,
                           and keep user, password, room and text in STATE
  message.py read STATE    log in as that user and find that message in the room's history

Talks to Synapse on loopback (the upgrade scenario checks the data, not nginx). Prints "PASS name" or
"FAIL name: why"; exits 1 on a failure.
"""

import hashlib
import hmac
import json
import secrets
import sys
import time
import urllib.parse

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


def write(http, state):
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
    with open(state, "w") as f:
        json.dump({"user": user, "pw": pw, "room": room, "text": text}, f)
    return f"{user} sent a message to {room}"


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
    return f"{s['user']} logs in and reads the old message"


def main():
    what, state = sys.argv[1], sys.argv[2]
    http = Http(None)
    try:
        wait_for_synapse(http)
        detail = write(http, state) if what == "write" else read(http, state)
        print(f"PASS message {what}: {detail}", flush=True)
    except Exception as e:  # noqa: BLE001 - one line per check, whatever broke
        print(f"FAIL message {what}: {e}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
