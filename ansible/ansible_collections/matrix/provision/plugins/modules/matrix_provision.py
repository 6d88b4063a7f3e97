#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright 2026 matrix-provision authors
# SPDX-License-Identifier: Apache-2.0
"""Ansible module: converge a host with matrix-provision. Thin by design: the binary plans, applies,
orders, restarts and redacts; this only ships host.toml, runs `plan --json` (check mode) or
`apply --json`, and maps the JSON report onto changed / diff / failed."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: matrix_provision
short_description: Converge a Debian host to a Matrix homeserver with matrix-provision
description:
  - Writes I(host_toml) to I(dest) on the host, then runs C(matrix-provision apply --json) on it.
  - In check mode it writes nothing and runs C(matrix-provision plan --json) on a private temporary
    copy instead; C(changed) then means that apply would change something.
  - With C(--diff) every planned or made change is shown as the binary prints it; files that hold a
    secret appear only as "[diff redacted ...]" because the binary never puts secrets into its report.
  - All logic (checks, ordering, restarts, validation, redaction) stays in the binary.
version_added: "0.1.0"
options:
  host_toml:
    description: The contents of host.toml (e.g. from C(lookup('template', ...))).
    type: str
    required: true
  dest:
    description: Where the host keeps its host.toml (root-only, 0600) for apply and later manual runs.
    type: path
    default: /etc/matrix-provision/ansible-host.toml
  binary:
    description: The matrix-provision program on the host (the .deb installs it in /usr/sbin).
    type: path
    default: /usr/sbin/matrix-provision
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Needs root (C(become)).
  - host.toml holds no secrets; the secrets matrix-provision generates stay on the host.
author: matrix-provision authors
"""

EXAMPLES = r"""
- name: Converge the homeserver
  matrix.provision.matrix_provision:
    host_toml: "{{ lookup('template', 'host.toml.j2') }}"
"""

RETURN = r"""
summary:
  description: The binary's counts (in_sync, to_change, changed, failed, skipped, restarted).
  returned: when the binary produced a report
  type: dict
steps:
  description: Steps that would change, changed, failed or were skipped (id, status, summary, reason).
  returned: when the binary produced a report
  type: list
exit_code:
  description:
    - Exit status of matrix-provision (plan 0 converged, 2 changes pending; apply 0 ok; 1 error).
    - Not C(rc), which Ansible would take for a failure whenever it is not 0 (plan's 2 is not one).
  returned: always
  type: int
"""

import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

MARKERS = {"create": "+", "modify": "~", "after_deps": "?"}


def render_change(step):
    """One step as the binary's human plan shows it (a marker, the description, the diff indented)."""
    change = step.get("change") or {}
    summary = change.get("summary", "")
    if step["status"] == "failed":
        marker = "x"
    else:
        marker = MARKERS.get(change.get("kind"), ">")
    line = "%s %s" % (marker, step["description"])
    if summary and summary != step["description"]:
        line += ": " + summary
    if step.get("reason"):
        line += " (%s)" % step["reason"]
    lines = [line]
    detail = change.get("detail") or {}
    if detail.get("type") == "diff":
        lines += ["    " + l for l in detail["text"].splitlines()]
    elif detail.get("type") == "redacted":
        lines.append("    [diff redacted: holds a secret; %d lines changed]" % detail["lines_changed"])
    elif detail.get("type") == "items":
        lines += ["    - " + i for i in detail["items"]]
    return "\n".join(lines)


def write_private(path, text):
    """Write text to path atomically, 0600 root, so apply never reads a half-written file."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        # 0755: nginx serves Element's config.json from /etc/matrix-provision/element; host.toml itself is 0600.
        os.makedirs(directory, 0o755)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".host.toml.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.rename(tmp, path)
    except Exception:
        os.unlink(tmp)
        raise


def main():
    module = AnsibleModule(
        argument_spec=dict(
            host_toml=dict(type="str", required=True),
            dest=dict(type="path", default="/etc/matrix-provision/ansible-host.toml"),
            binary=dict(type="path", default="/usr/sbin/matrix-provision"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    text = p["host_toml"]
    if not text.endswith("\n"):
        text += "\n"
    old = None
    if os.path.exists(p["dest"]):
        with open(p["dest"]) as f:
            old = f.read()
    toml_changed = old != text
    toml_change = {
        "id": "host-toml",
        "description": "host.toml at %s" % p["dest"],
        "status": "planned" if module.check_mode else "changed",
        "change": {"kind": "create" if old is None else "modify", "summary": "write the inventory's host.toml"},
    }

    if not os.access(p["binary"], os.X_OK):
        msg = "%s is not installed (the role installs the matrix-provision .deb first)" % p["binary"]
        if module.check_mode:
            # The package task before us would install it; without it there is nothing that could plan.
            module.warn(msg + "; in check mode the homeserver's changes cannot be planned")
            module.exit_json(changed=True, exit_code=None, msg=msg)
        module.fail_json(msg=msg, exit_code=None)

    tmp = None
    if module.check_mode:
        fd, tmp = tempfile.mkstemp(prefix="matrix-provision-check.", suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        cmd = [p["binary"], "plan", "--json", tmp]
    else:
        if toml_changed:
            write_private(p["dest"], text)
        cmd = [p["binary"], "apply", "--json", p["dest"]]
    try:
        rc, out, err = module.run_command(cmd)
    finally:
        if tmp:
            os.unlink(tmp)

    try:
        doc = json.loads(out)
    except ValueError:
        module.fail_json(msg="%s printed no JSON report (exit %d): %s" % (cmd[1], rc, err.strip()), exit_code=rc,
                         stdout=out, stderr=err, changed=toml_changed and not module.check_mode)
    if "error" in doc:
        problems = ["%s" % e for e in doc.get("config_errors", [])]
        module.fail_json(msg="%s: %s" % (doc["error"], "; ".join(problems)), exit_code=rc, config_errors=problems,
                         changed=toml_changed and not module.check_mode)

    for w in doc.get("warnings", []):
        module.warn(w)
    shown = [s for s in doc["steps"] if s["status"] in ("planned", "changed", "failed", "skipped")]
    changes = [s for s in shown if s["status"] in ("planned", "changed")]
    if toml_changed:
        changes.insert(0, toml_change)
    result = dict(
        changed=bool(changes),
        exit_code=rc,
        summary=doc["summary"],
        steps=[
            dict(((k, s[k]) for k in ("id", "status", "reason") if k in s),
                 summary=(s.get("change") or {}).get("summary", ""))
            for s in shown
        ],
    )
    if module._diff and (changes or shown):
        listed = ([toml_change] if toml_changed else []) + shown
        result["diff"] = {"prepared": "\n".join(render_change(s) for s in listed) + "\n"}
    failed = [s for s in shown if s["status"] == "failed"]
    if rc == 1 or failed:
        module.fail_json(
            msg="%s failed: %s" % (cmd[1], "; ".join("%s: %s" % (s["id"], s.get("reason", "")) for s in failed)
                                   or err.strip() or "exit 1"),
            **result
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
