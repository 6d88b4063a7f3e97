#!/usr/bin/env python3
"""gixy on this host's nginx tree: every finding of medium or higher severity fails, except the few below,
each explained. Runs inside the guest with gixy-ng unpacked on PYTHONPATH. Prints PASS/FAIL/NOTE lines.

  gixy_judge.py [/etc/nginx/nginx.conf]
"""
import json
import subprocess
import sys

# (plugin, where, what the pseudo-config starts with, why it stays). All live in Debian's nginx.conf, a
# conffile we leave untouched.
EXPLAINED = [
    ("weak_ssl_tls", "/etc/nginx/nginx.conf", "ssl_protocols TLSv1 TLSv1.1",
     "Debian's http-level default; every server block (ours and the default server) sets ssl_protocols "
     "TLSv1.2 TLSv1.3 through the TLS snippet, so it applies nowhere (judges.py proves TLS 1.1 refused)"),
    ("worker_rlimit_nofile_vs_connections", "/etc/nginx/nginx.conf", "",
     "performance, not exposure: Debian's worker_connections 768; our nginx drop-in raises LimitNOFILE, "
     "which the workers inherit"),
    ("try_files_is_evil_too", "", "",
     "performance advice (open_file_cache), not a security finding; a file cache would also serve an "
     "old Element release for a while after element-update switches `current`"),
]


def explained(issue):
    for plugin, where, config, why in EXPLAINED:
        if issue["plugin"] == plugin and issue.get("file", "").endswith(where) \
                and issue.get("config", "").strip().startswith(config):
            return why
    return None


def main():
    conf = sys.argv[1] if len(sys.argv) > 1 else "/etc/nginx/nginx.conf"
    r = subprocess.run([sys.executable, "-m", "gixy", "-ll", "-f", "json", conf], capture_output=True, text=True)
    try:
        issues = json.loads(r.stdout or "[]")
    except json.JSONDecodeError:
        print(f"FAIL gixy ran: exit {r.returncode}: {(r.stdout + r.stderr)[-400:]}")
        return 1
    bad = 0
    for issue in issues:
        if issue["severity"] not in ("MEDIUM", "HIGH"):
            continue
        why = explained(issue)
        what = f"[{issue['plugin']}] {issue['severity']} {issue.get('file', '')}: {issue.get('reason', '')}"
        if why:
            print(f"NOTE explained: {what} -- {why}")
        else:
            bad += 1
            print(f"FAIL gixy: {what} | {issue.get('config', '').strip()[:300]!r}")
    if not bad:
        print(f"PASS gixy: no unexplained finding of medium or higher severity ({len(issues)} reported)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
