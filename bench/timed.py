#!/usr/bin/env python3
"""Runs INSIDE a fresh guest for bench/fresh-install: one install, timed, then the first message.

    timed.py OUT.json LOG -- CMD...

Runs CMD (the install: `matrix-provision apply --json ...` or bench/manual-install.sh) with its stdout in
LOG and its stderr in LOG.err, sampling the high-water RSS of CMD's own process (VmHWM: the provisioner, not the apt or
Python children it starts). Then runs the client check `room-send-read` (register, log in, create a room,
send a message and read it back, all through nginx over TLS): the time to first message runs from CMD's
start to that check passing. Writes {"install_s", "first_message_s", "install_rc", "client_rc",
"peak_rss_mb"} to OUT.json. Standard library only.
"""

import json
import subprocess
import sys
import time


def hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    out, log = sys.argv[1], sys.argv[2]
    cmd = sys.argv[sys.argv.index("--") + 1 :]
    t0 = time.monotonic()
    with open(log, "wb") as f, open(log + ".err", "wb") as err:
        p = subprocess.Popen(cmd, stdout=f, stderr=err, stdin=subprocess.DEVNULL)
        peak = 0
        # VmHWM only grows, so the last sample before exit is the peak to within the sampling interval.
        while p.poll() is None:
            peak = max(peak, hwm_kb(p.pid))
            time.sleep(0.05)
    t1 = time.monotonic()
    client = subprocess.run(
        ["python3", "/root/checks/client.py", "--only", "room-send-read"], capture_output=True, text=True
    )
    t2 = time.monotonic()
    ok = client.returncode == 0 and "PASS room-send-read" in client.stdout
    doc = {
        "install_s": round(t1 - t0, 2),
        "first_message_s": round(t2 - t0, 2) if ok else None,
        "install_rc": p.returncode,
        "client_rc": client.returncode,
        "client_out": client.stdout[-2000:],
        "peak_rss_mb": round(peak / 1024, 1),
    }
    with open(out, "w") as f:
        json.dump(doc, f)
    print(json.dumps(doc))
    return 0 if p.returncode == 0 and ok else 1


if __name__ == "__main__":
    sys.exit(main())
