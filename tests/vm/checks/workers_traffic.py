#!/usr/bin/env python3
"""workers_traffic.py: one request of each kind the workers serve, through nginx over TLS (run INSIDE the
guest as root, standard library only, next to client.py whose helpers it uses): register and log in, create
a room, send a message, /sync (initial and incremental: the message must arrive), typing, upload a file and
download it again, and federation's /version on 8448. The scenario then reads the workers' journals to see
which process served what. Prints "PASS name" / "FAIL name: why" lines; exits 1 if any failed."""

import json
import secrets
import ssl
import sys
import urllib.parse
import urllib.request

sys.path.insert(0, "/root/checks")
import client  # noqa: E402

BASE = "https://matrix.example.test"
FED = "https://matrix.example.test:8448"
CA = "/root/pebble-roots.pem"


def raw(method, url, data, ctype, token):
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": ctype, "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=CA), timeout=30) as r:
        return r.status, r.read()


def main():
    client.trust_pebble_root(CA)
    http = client.Http(CA)
    st = {}

    def login():
        token, _ = client.registration_token(http)
        user, pw = "wk" + secrets.token_hex(4), secrets.token_urlsafe(16)
        client.register(http, BASE, user, pw, token)
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": pw}
        s, _, r = http.request("POST", f"{BASE}/_matrix/client/v3/login", body)
        client.expect(s == 200 and "access_token" in r, f"login: HTTP {s} {r}")
        st["t"] = r["access_token"]

    def sync_delivers_a_message():
        t = st["t"]
        s, _, r = http.request("POST", f"{BASE}/_matrix/client/v3/createRoom", {"name": "workers"}, token=t)
        client.expect(s == 200, f"createRoom: HTTP {s} {r}")
        st["room"] = room = r["room_id"]
        s, _, r = http.request("GET", f"{BASE}/_matrix/client/v3/sync?timeout=0", token=t)
        client.expect(s == 200 and "next_batch" in r, f"initial sync: HTTP {s} {r!r:.200}")
        since = r["next_batch"]
        text = "via workers " + secrets.token_hex(6)
        q = urllib.parse.quote(room)
        s, _, r = http.request("PUT", f"{BASE}/_matrix/client/v3/rooms/{q}/send/m.room.message/{secrets.token_hex(6)}", {"msgtype": "m.text", "body": text}, token=t)
        client.expect(s == 200 and "event_id" in r, f"send: HTTP {s} {r}")
        s, _, r = http.request("GET", f"{BASE}/_matrix/client/v3/sync?timeout=10000&since={urllib.parse.quote(since)}", token=t, timeout=40)
        timeline = r.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", []) if s == 200 else []
        client.expect(text in [e.get("content", {}).get("body") for e in timeline], f"incremental sync: HTTP {s}, not in {timeline!r:.300}")

    def typing():
        q = urllib.parse.quote(st["room"])
        me = urllib.parse.quote(http.request("GET", f"{BASE}/_matrix/client/v3/account/whoami", token=st["t"])[2]["user_id"])
        s, _, r = http.request("PUT", f"{BASE}/_matrix/client/v3/rooms/{q}/typing/{me}", {"typing": True, "timeout": 5000}, token=st["t"])
        client.expect(s == 200, f"typing: HTTP {s} {r}")

    def media_round_trip():
        data = secrets.token_bytes(2048)
        s, body = raw("POST", f"{BASE}/_matrix/media/v3/upload?filename=wk.bin", data, "application/octet-stream", st["t"])
        uri = json.loads(body).get("content_uri", "") if s == 200 else ""
        client.expect(uri.startswith("mxc://"), f"upload: HTTP {s} {body!r:.200}")
        server, media_id = uri[len("mxc://"):].split("/", 1)
        req = urllib.request.Request(f"{BASE}/_matrix/client/v1/media/download/{server}/{media_id}", headers={"Authorization": f"Bearer {st['t']}"})
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=CA), timeout=30) as r:
            got = r.read()
        client.expect(got == data, f"download: {len(got)} bytes, not the {len(data)} uploaded")

    def federation_version():
        s, _, r = http.request("GET", f"{FED}/_matrix/federation/v1/version")
        client.expect(s == 200 and r.get("server", {}).get("name") == "Synapse", f"HTTP {s} {r}")

    client.check("workers: register and log in", login)
    client.check("workers: /sync delivers a message sent meanwhile", sync_delivers_a_message)
    client.check("workers: typing notification", typing)
    client.check("workers: media upload and download", media_round_trip)
    client.check("workers: federation /version on 8448", federation_version)
    sys.exit(0 if all(client.results) else 1)


if __name__ == "__main__":
    main()
