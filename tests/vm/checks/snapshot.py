#!/usr/bin/env python3
"""snapshot.py ROOT...: one line per file, symlink and directory under the roots (owner, mode, content hash),
sorted, so two snapshots taken before and after a command can be diffed to see exactly what it changed.
Runs inside the guest."""

import hashlib
import os
import stat
import sys

# Change on their own, whatever the product does.
VOLATILE = ("/etc/machine-id", "/etc/ld.so.cache", "/etc/adjtime")


def entry(path):
    st = os.lstat(path)
    meta = f"{st.st_uid}:{st.st_gid} {stat.S_IMODE(st.st_mode):o}"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} link {meta} -> {os.readlink(path)}"
    if stat.S_ISDIR(st.st_mode):
        return f"{path} dir {meta}"
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return f"{path} file {meta} {h.hexdigest()}"
    return f"{path} other {meta}"


def main():
    lines = []
    for root in sys.argv[1:]:
        if not os.path.lexists(root):
            continue
        lines.append(entry(root))
        for d, dirs, files in os.walk(root):
            for n in dirs + files:
                p = os.path.join(d, n)
                if p not in VOLATILE:
                    lines.append(entry(p))
    print("\n".join(sorted(lines)))


if __name__ == "__main__":
    main()
