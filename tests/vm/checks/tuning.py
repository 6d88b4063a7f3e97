#!/usr/bin/env python3
"""Issue 17's tuning in effect on a converged guest, run INSIDE the guest as root (standard library only).

Not what the templates say (the golden files prove that) but what the running services do: PostgreSQL
runs with the settings of our conf.d file (none overridden elsewhere, none waiting for a restart), sized
from the guest's real memory (the smaller of MemTotal and its cgroup's memory.max); Synapse's connections
to PostgreSQL are on loopback without TLS; nginx keeps its connections to Synapse's upstream open after
the requests it proxied.

Prints one line per check: "PASS name" or "FAIL name: why"; exits 1 if any failed.
"""

import glob
import re
import ssl
import subprocess
import sys
import urllib.request

SITE = "/etc/nginx/sites-available/matrix-provision-synapse.conf"
SYNAPSE_HOST = "matrix.example.test"

results = []


def report(name, ok, why=""):
    results.append(ok)
    print(f"PASS {name}" if ok else f"FAIL {name}: {why}", flush=True)


def psql(sql):
    out = subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-F", "|", "-c", sql],
        capture_output=True, text=True, check=True, cwd="/",
    ).stdout
    return [line.split("|") for line in out.splitlines() if line]


def guest_ram_mb():
    """What the product must size from: min(MemTotal, the cgroup root's memory.max), in MB, and which."""
    with open("/proc/meminfo") as f:
        total_kb = int(re.search(r"MemTotal:\s+(\d+) kB", f.read()).group(1))
    ram, source = total_kb // 1024, "MemTotal"
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max" and int(limit) // (1024 * 1024) < ram:
            ram, source = int(limit) // (1024 * 1024), "its cgroup's memory.max"
    except OSError:
        pass
    return ram, source


def postgres():
    conf = sorted(glob.glob("/etc/postgresql/*/main/conf.d/matrix-provision.conf"),
                  key=lambda p: int(p.split("/")[3]))[-1]
    text = open(conf).read()
    ours = dict(re.findall(r"^(\w+) = (\S+)$", text, re.M))
    live = {r[0]: r[1:] for r in psql(
        "select name, setting, coalesce(unit, ''), coalesce(sourcefile, ''), pending_restart from pg_settings")}
    wrong = [f"{k} from {live.get(k, ['', '', 'missing'])[2] or 'default'}"
             for k in ours if live.get(k, ["", "", ""])[2] != conf]
    report(f"PostgreSQL runs with all {len(ours)} settings of {conf}", not wrong and len(ours) > 10,
           ", ".join(wrong) or f"only {len(ours)} settings")
    pending = [k for k in ours if live.get(k, ["", "", "", "f"])[3] == "t"]
    report("no PostgreSQL setting waits for a restart", not pending, ", ".join(pending))

    # The split of src/sizing.rs and the template's rule, applied to this guest's own size.
    ram, source = guest_ram_mb()
    m = re.search(r"(\d+) MB RAM and (\d+) CPU", text)
    sized = int(m.group(1)) if m else -1
    # sysinfo and /proc/meminfo round differently: within 1%.
    report(f"PostgreSQL is sized from the guest's {ram} MB (from {source}: the smaller of MemTotal and memory.max)",
           abs(sized - ram) <= ram // 100, f"the conf.d file says {sized} MB")
    os_mb = min(max(sized // 4, 512), 4096, sized)
    pg_mb = (sized - os_mb) * 2 // 5
    want_sb = max(min(pg_mb // 2, 8192), 128)
    setting, unit = live["shared_buffers"][0], live["shared_buffers"][1]
    got_sb = int(setting) * 8 // 1024 if unit == "8kB" else -1
    report(f"shared_buffers = PostgreSQL's share ({pg_mb} MB) / 2 = {want_sb} MB", got_sb == want_sb,
           f"live: {setting} x {unit}")


def synapse_connections():
    rows = psql("select a.client_addr, s.ssl from pg_stat_activity a join pg_stat_ssl s using (pid) "
                "where a.usename = 'synapse' and a.backend_type = 'client backend'")
    report(f"Synapse is connected to PostgreSQL ({len(rows)} connections), on loopback, none with TLS",
           rows and all(r[0] in ("127.0.0.1", "::1") and r[1] == "f" for r in rows), repr(rows))


def nginx_keepalive():
    site = open(SITE).read()
    m = re.search(r"upstream matrix_synapse \{[^}]*server ([\d.]+):(\d+);[^}]*keepalive (\d+);", site)
    report("nginx's upstream matrix_synapse keeps connections alive", m is not None, f"no keepalive in {SITE}")
    if not m:
        return
    port = m.group(2)
    # A few requests through nginx (certificate not checked: this is about the connection to Synapse).
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    for _ in range(5):
        with urllib.request.urlopen(f"https://{SYNAPSE_HOST}/_matrix/client/versions", context=ctx,
                                    timeout=10) as r:
            r.read()
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    idle = [line for line in out.splitlines() if '"nginx"' in line]
    report(f"nginx holds {len(idle)} idle connection(s) to Synapse on :{port} after proxying", len(idle) > 0,
           out.strip() or "none established")


def main():
    for check in (postgres, synapse_connections, nginx_keepalive):
        try:
            check()
        except Exception as e:  # one broken check must not hide the others
            report(check.__name__, False, f"{type(e).__name__}: {e}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
