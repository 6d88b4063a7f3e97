#!/usr/bin/env python3
"""bench/load-client.py: the Matrix load client of bench/load (issues 13 and 17). Runs inside the guest, so
every request stays on the guest's loopback; the matrix-nio library comes from PYTHONPATH (bench/load puts
a cached `pip install --target` for the guest's Python there).

Phases (every one bounded in count and time):
  setup    K sender users and S /sync users, registered through Synapse's shared-secret admin API on the
           loopback listener (--admin-url), their rate limits lifted with the admin API's per-user override
           (the same on every variant: a database row, not configuration); R rooms, senders spread over them,
           every /sync user in every room.
  send     for --duration seconds (at most --max-messages messages), --concurrency sends in flight, the
           senders taking turns; meanwhile every /sync user long-polls /sync (timeout 30 s). Each message
           carries the client's monotonic clock at send start, so a /sync user seeing it gives the delivery
           latency (same process, same clock).
  drain    up to --drain seconds for the /sync users to see every acknowledged message.
  rooms    (--create-rooms M) one user creates M rooms (--concurrency at a time), then two initial syncs
           (no `since`) of that user: the first and the second.
While it runs, a sampler reads /proc every second: RSS (peak of VmRSS, and VmHWM) and CPU time of every
Synapse process, and PSS summed over PostgreSQL's and Redis's processes (shared buffers counted once).
Prints one JSON document (--out FILE as well). Exit 0 when the run completed (errors are counted, not
fatal), 1 when setup failed.
"""

import argparse
import asyncio
import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
import ssl
import sys
import threading
import time

import aiohttp
from nio import AsyncClient, AsyncClientConfig, RoomSendResponse, SyncResponse
from nio.responses import ErrorResponse, JoinResponse, RoomCreateResponse

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Incremental syncs return at most `limit` events per room (then "limited": the rest is skipped): room for
# everything that can arrive between two syncs, so a message not seen was not delivered.
SYNC_FILTER = {"room": {"timeline": {"limit": 1000}}}
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def registration_shared_secret():
    """What Synapse reads: a *_path file (the product writes one) or an inline value in its config."""
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
                path, inline = (v, inline) if m.group(1) else (path, v)
    if path:
        return open(path).read().strip()
    if inline:
        return inline
    raise RuntimeError("no registration_shared_secret(_path) in /etc/matrix-synapse")


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return round((xs[lo] + (xs[hi] - xs[lo]) * (k - lo)) * 1000, 2)  # ms


def lat_summary(xs):
    return {"n": len(xs), "p50_ms": pct(xs, 50), "p95_ms": pct(xs, 95), "p99_ms": pct(xs, 99), "max_ms": pct(xs, 100)}


# ---- process sampler -----------------------------------------------------------------------------------


def proc_groups():
    """pid -> (group, label) for the processes the benchmark watches."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        args = [c.decode(errors="replace") for c in cmd if c]
        if int(pid) == os.getpid():
            out[int(pid)] = ("client", "client")  # the load client's own cost, on the same CPUs
        elif comm == "postgres" or comm.startswith("postgres"):
            out[int(pid)] = ("postgresql", "postgresql")
        elif comm == "redis-server":
            out[int(pid)] = ("redis", "redis")
        elif any(a.startswith("synapse.app.") for a in args):
            app = next(a for a in args if a.startswith("synapse.app."))
            conf = [a for a in args if a.endswith(".yaml") and "/workers/" in a]
            label = os.path.basename(conf[0])[:-5] if conf else app.rsplit(".", 1)[1]
            out[int(pid)] = ("synapse", label)
    return out


def read_status(pid):
    s = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            s[k] = int(v.split()[0]) * 1024
    return s


def read_pss(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def read_cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK  # utime + stime


class Sampler(threading.Thread):
    def __init__(self, interval=1.0):
        super().__init__(daemon=True)
        self.interval = interval
        self.stop = threading.Event()
        self.synapse = {}  # label -> {pid, peak_rss, hwm}
        self.group_peak_pss = {}
        self.cpu = {}  # pid -> (group, label, first, last)
        self.lock = threading.Lock()
        self.marks = {}

    def sample(self):
        pss = {}
        for pid, (group, label) in proc_groups().items():
            try:
                st = read_status(pid)
                cpu = read_cpu(pid)
            except (OSError, IndexError, ValueError):
                continue
            with self.lock:
                c = self.cpu.get(pid)
                self.cpu[pid] = (group, label, c[2] if c else cpu, cpu)
            if group == "synapse":
                e = self.synapse.setdefault(label, {"pid": pid, "peak_rss_mb": 0, "hwm_mb": 0})
                e["pid"] = pid
                e["peak_rss_mb"] = max(e["peak_rss_mb"], round(st.get("VmRSS", 0) / 2**20, 1))
                e["hwm_mb"] = max(e["hwm_mb"], round(st.get("VmHWM", 0) / 2**20, 1))
            else:
                pss[group] = pss.get(group, 0) + read_pss(pid)
        for g, v in pss.items():
            self.group_peak_pss[g] = max(self.group_peak_pss.get(g, 0), round(v / 2**20, 1))

    def cpu_by_group(self):
        with self.lock:
            out = {}
            for group, _, first, last in self.cpu.values():
                out[group] = out.get(group, 0) + (last - first)
            return out

    def mark(self, name):
        self.sample()
        self.marks[name] = self.cpu_by_group()

    def run(self):
        while not self.stop.wait(self.interval):
            try:
                self.sample()
            except Exception as e:  # a process ending mid-read must not end the sampler
                log("sampler:", e)

    def result(self):
        return {
            "synapse_processes": self.synapse,
            "synapse_peak_rss_mb_total": round(sum(e["peak_rss_mb"] for e in self.synapse.values()), 1),
            "postgresql_peak_pss_mb": self.group_peak_pss.get("postgresql"),
            "redis_peak_pss_mb": self.group_peak_pss.get("redis"),
        }


# ---- Matrix ----------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, a):
        self.a = a
        self.errors = {}
        self.sent = {}  # event_id -> (room, t0, t_ack)
        self.send_lat = []
        self.deliv_lat = []
        self.seen = set()  # (syncer, event_id)
        self.sending = False
        self.stop_sync = asyncio.Event()
        self.run_id = secrets.token_hex(3)
        self.ssl = False if a.insecure else None

    def err(self, where, what):
        k = f"{where}: {what}"
        self.errors[k] = self.errors.get(k, 0) + 1

    async def admin_register(self, http, name, admin=False):
        url = f"{self.a.admin_url}/_synapse/admin/v1/register"
        for attempt in range(20):
            async with http.get(url) as r:
                nonce = (await r.json())["nonce"]
            pw = secrets.token_urlsafe(12)
            mac = hmac.new(self.secret, digestmod=hashlib.sha1)
            mac.update(b"\x00".join([nonce.encode(), name.encode(), pw.encode(), b"admin" if admin else b"notadmin"]))
            body = {"nonce": nonce, "username": name, "password": pw, "admin": admin, "mac": mac.hexdigest()}
            async with http.post(url, json=body) as r:
                j = await r.json()
                if r.status == 200:
                    return j
                if r.status == 429:
                    await asyncio.sleep(j.get("retry_after_ms", 1000) / 1000)
                    continue
                raise RuntimeError(f"register {name}: HTTP {r.status} {j}")
        raise RuntimeError(f"register {name}: still rate limited")

    async def lift_ratelimit(self, http, admin_tok, user_id):
        url = f"{self.a.admin_url}/_synapse/admin/v1/users/{user_id}/override_ratelimit"
        async with http.post(url, json={"messages_per_second": 0, "burst_count": 0},
                             headers={"Authorization": f"Bearer {admin_tok}"}) as r:
            if r.status != 200:
                raise RuntimeError(f"override_ratelimit {user_id}: HTTP {r.status} {await r.text()}")

    def client(self, reg, retry):
        # Setup calls ride out 429s and timeouts; measured calls count them as errors instead (no retries).
        cfg = AsyncClientConfig(
            max_limit_exceeded=None if retry else 0,
            max_timeouts=5 if retry else 0,
            request_timeout=self.a.request_timeout,
            store_sync_tokens=False,
            encryption_enabled=False,
        )
        c = AsyncClient(self.a.url, reg["user_id"], device_id=reg["device_id"], config=cfg, ssl=self.ssl)
        c.restore_login(reg["user_id"], reg["device_id"], reg["access_token"])
        return c

    async def setup(self):
        a = self.a
        self.secret = registration_shared_secret().encode()
        async with aiohttp.ClientSession() as http:
            adm = await self.admin_register(http, f"bench{self.run_id}admin", admin=True)
            sem = asyncio.Semaphore(8)

            async def user(name):
                async with sem:
                    r = await self.admin_register(http, name)
                    await self.lift_ratelimit(http, adm["access_token"], r["user_id"])
                    return r

            t0 = time.monotonic()
            regs = await asyncio.gather(*[user(f"bench{self.run_id}s{i}") for i in range(a.users)],
                                        *[user(f"bench{self.run_id}r{i}") for i in range(a.syncers)])
            self.setup_register_s = time.monotonic() - t0
        self.senders = [self.client(r, retry=True) for r in regs[: a.users]]
        self.syncers = [self.client(r, retry=True) for r in regs[a.users:]]
        owner = self.senders[0]
        self.rooms = []
        for i in range(a.rooms):
            r = await owner.room_create(name=f"bench {self.run_id} {i}", preset=_public())
            if not isinstance(r, RoomCreateResponse):
                raise RuntimeError(f"room_create: {r}")
            self.rooms.append(r.room_id)
        self.bench_rooms = set(self.rooms)
        self.room_of = {id(c): self.rooms[i % a.rooms] for i, c in enumerate(self.senders)}
        joins = [(c, self.room_of[id(c)]) for c in self.senders[1:]] + [(c, r) for c in self.syncers for r in self.rooms]
        jsem = asyncio.Semaphore(8)

        async def join(c, room):
            async with jsem:
                r = await c.join(room)
                if not isinstance(r, JoinResponse):
                    raise RuntimeError(f"join {c.user_id} {room}: {r}")

        await asyncio.gather(*[join(c, r) for c, r in joins])
        # Measured calls: no retries from here on.
        for c in self.senders + self.syncers:
            c.config = dataclasses.replace(c.config, max_limit_exceeded=0, max_timeouts=0)

    async def sync_loop(self, idx, c):
        r = await c.sync(timeout=0, full_state=True)
        if not isinstance(r, SyncResponse):
            raise RuntimeError(f"initial sync {c.user_id}: {r}")
        since = r.next_batch
        self.synced.add(idx)
        while not self.stop_sync.is_set():
            try:
                r = await c.sync(timeout=self.a.sync_timeout * 1000, since=since, sync_filter=SYNC_FILTER)
            except Exception as e:
                if self.stop_sync.is_set():
                    break
                self.err("sync", type(e).__name__)
                await asyncio.sleep(0.5)
                continue
            now = time.monotonic()
            if not isinstance(r, SyncResponse):
                self.err("sync", getattr(r, "status_code", None) or type(r).__name__)
                await asyncio.sleep(0.5)
                continue
            since = r.next_batch
            for room_id, room in r.rooms.join.items():
                # (A room joined since the last sync always comes limited: only the benchmark's rooms count.)
                if room.timeline.limited and room_id in self.bench_rooms:
                    self.err("sync", "limited timeline (events skipped)")
                for ev in room.timeline.events:
                    t0 = ev.source.get("content", {}).get("bench_t0")
                    if t0 is not None and ev.source.get("content", {}).get("bench_run") == self.run_id:
                        key = (idx, ev.event_id)
                        if key not in self.seen:
                            self.seen.add(key)
                            self.deliv_lat.append(now - t0 / 1e6)

    async def send_worker(self, deadline):
        a = self.a
        while time.monotonic() < deadline and self.n_started < a.max_messages:
            self.n_started += 1
            c = self.senders[self.turn % len(self.senders)]
            self.turn += 1
            room = self.room_of[id(c)]
            t0 = time.monotonic()
            # Integer microseconds: event content may not hold floats (canonical JSON).
            content = {"msgtype": "m.text", "body": f"load {self.n_started}", "bench_t0": int(t0 * 1e6),
                       "bench_run": self.run_id}
            try:
                r = await c.room_send(room, "m.room.message", content)
            except Exception as e:
                self.err("send", type(e).__name__)
                continue
            t1 = time.monotonic()
            if isinstance(r, RoomSendResponse):
                self.send_lat.append(t1 - t0)
                self.sent[r.event_id] = (room, t0, t1)
            else:
                self.err("send", getattr(r, "status_code", None) or type(r).__name__)

    async def rooms_phase(self, n):
        c = self.syncers[0] if self.syncers else self.senders[0]
        lat = []
        sem = asyncio.Semaphore(self.a.concurrency)

        async def one(i):
            async with sem:
                t0 = time.monotonic()
                try:
                    r = await c.room_create(name=f"extra {self.run_id} {i}")
                except Exception as e:
                    self.err("room_create", type(e).__name__)
                    return
                if isinstance(r, RoomCreateResponse):
                    lat.append(time.monotonic() - t0)
                else:
                    self.err("room_create", getattr(r, "status_code", None) or type(r).__name__)

        t0 = time.monotonic()
        await asyncio.gather(*[one(i) for i in range(n)])
        wall = time.monotonic() - t0
        syncs = []
        for _ in range(2):
            t = time.monotonic()
            r = await c.sync(timeout=0, full_state=True)
            ok = isinstance(r, SyncResponse)
            syncs.append(round(time.monotonic() - t, 3) if ok else None)
            if not ok:
                self.err("initial_sync", getattr(r, "status_code", None) or type(r).__name__)
        return {"created": len(lat), "wall_s": round(wall, 2), "per_s": round(len(lat) / wall, 2) if wall else None,
                "latency": lat_summary(lat), "initial_sync_s": syncs, "rooms_of_user": len(self.rooms) + n}

    async def run(self):
        a = self.a
        sampler = Sampler()
        sampler.sample()
        sampler.start()
        t_setup = time.monotonic()
        await self.setup()
        setup_s = time.monotonic() - t_setup
        log(f"setup: {a.users} senders, {a.syncers} /sync users, {a.rooms} rooms in {setup_s:.1f}s")
        self.synced = set()
        syncs = [asyncio.create_task(self.sync_loop(i, c)) for i, c in enumerate(self.syncers)]
        for _ in range(600):
            if len(self.synced) == len(self.syncers) or any(t.done() for t in syncs):
                break
            await asyncio.sleep(0.1)
        for t in syncs:
            if t.done():
                t.result()  # raises the setup error
        await asyncio.sleep(1)  # every long-poll is waiting in Synapse before the first send
        sampler.mark("send_start")
        self.n_started = 0
        self.turn = 0
        t0 = time.monotonic()
        await asyncio.gather(*[self.send_worker(t0 + a.duration) for _ in range(a.concurrency)])
        send_wall = time.monotonic() - t0
        sampler.mark("send_end")
        expected = len(self.sent) * len(self.syncers)
        t_drain = time.monotonic()
        while len(self.seen) < expected and time.monotonic() - t_drain < a.drain:
            await asyncio.sleep(0.2)
        undelivered = expected - len(self.seen)
        rooms = await self.rooms_phase(a.create_rooms) if a.create_rooms else None
        self.stop_sync.set()
        for c in self.senders + self.syncers:
            await c.close()  # ends the long-polls' sessions
        for t in syncs:
            t.cancel()
        sampler.stop.set()
        sampler.sample()
        cpu0, cpu1 = sampler.marks["send_start"], sampler.marks["send_end"]
        n = len(self.sent)
        cpu = {g: round(cpu1.get(g, 0) - cpu0.get(g, 0), 2) for g in cpu1}
        return {
            "params": vars(a),
            "setup_s": round(setup_s, 2),
            "messages": n,
            "send_wall_s": round(send_wall, 2),
            "msg_per_s": round(n / send_wall, 2) if send_wall else None,
            "send_latency": lat_summary(self.send_lat),
            "sync_delivery_latency": lat_summary(self.deliv_lat),
            "undelivered": undelivered,
            "errors": self.errors,
            "error_count": sum(self.errors.values()),
            # CPU seconds the watched processes spent during the send phase, and per message: a cost that a
            # busy shared machine disturbs far less than throughput.
            "cpu_s_send_phase": cpu,
            "cpu_ms_per_msg": {g: round(v * 1000 / n, 2) for g, v in cpu.items()} if n else {},
            "rooms_phase": rooms,
            "memory": sampler.result(),
        }


def _public():
    from nio.api import RoomPreset

    return RoomPreset.public_chat


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="client-server base URL the load goes to")
    p.add_argument("--admin-url", default="http://127.0.0.1:8008", help="Synapse's loopback listener (admin API)")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS (the guest's test CA)")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--syncers", type=int, default=5)
    p.add_argument("--rooms", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--max-messages", type=int, default=100000)
    p.add_argument("--drain", type=float, default=15)
    p.add_argument("--create-rooms", type=int, default=0)
    p.add_argument("--sync-timeout", type=int, default=30)
    p.add_argument("--request-timeout", type=float, default=90)
    p.add_argument("--out")
    a = p.parse_args()
    for k in ("users", "concurrency", "rooms"):
        if getattr(a, k) < 1:
            p.error(f"--{k} must be at least 1")
    if a.duration <= 0 or a.duration > 3600:
        p.error("--duration must be in (0, 3600] seconds")
    try:
        res = asyncio.run(Bench(a).run())
    except Exception as e:
        log(f"load client failed: {type(e).__name__}: {e}")
        return 1
    doc = json.dumps(res, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(doc)
    print(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
