#!/bin/sh
# Load the golden Synapse conf.d fragments of each variant with Synapse's own config parser.
#
#   tests/support/synapse-check.sh [VARIANT_DIR...]     (default: every tests/golden/*/)
#
# Each variant gets a homeserver.yaml generated the way the Debian package builds it (debian/
# build_virtualenv: generate_config without secrets, server_name and report_stats left to debconf's
# conf.d files), the variant's conf.d fragments and dummy secret files. Then it creates the signing
# key as the Debian unit does and runs `python -m synapse.config`; both exit 1 on any invalid or
# conflicting option or unreadable *_path file. Nothing outside a temporary directory is written.
#
# Environment:
#   SYNAPSE_PYTHON   python with Synapse importable (default: the Debian package's
#                    /opt/venvs/matrix-synapse/bin/python). Without the package:
#                    python3 -m venv DIR && DIR/bin/pip install matrix-synapse; SYNAPSE_PYTHON=DIR/bin/python
set -eu

here=$(cd "$(dirname "$0")" && pwd)
golden="$here/../golden"
py=${SYNAPSE_PYTHON:-/opt/venvs/matrix-synapse/bin/python}

"$py" -c 'import synapse' 2>/dev/null || { echo "synapse-check: cannot import synapse with $py; set SYNAPSE_PYTHON" >&2; exit 2; }

if [ $# -eq 0 ]; then
    set -- "$golden"/*/
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

failed=0
for variant in "$@"; do
    variant=${variant%/}
    name=$(basename "$variant")
    r="$work/$name"
    mkdir -p "$r/etc/conf.d" "$r/data" "$r/secrets"

    "$py" -m synapse._scripts.generate_config --config-dir="$r/etc" --data-dir="$r/data" \
        | sed -e 's/^server_name:/#&/' >"$r/etc/homeserver.yaml"
    "$py" -m synapse._scripts.generate_log_config --output-file="$r/etc/log.yaml"
    echo "server_name: 'check.invalid'" >"$r/etc/conf.d/server_name.yaml"
    echo "report_stats: false" >"$r/etc/conf.d/report_stats.yaml"

    for f in "$variant"/etc/matrix-synapse/conf.d/*.yaml; do
        sed "s#/etc/matrix-synapse/secrets/#$r/secrets/#" "$f" >"$r/etc/conf.d/$(basename "$f")"
    done
    for s in registration_shared_secret macaroon_secret_key form_secret turn_shared_secret; do
        echo "dummy-$s" >"$r/secrets/$s"
    done

    # As the Debian unit's ExecStartPre: creates the signing key (and loads the whole config).
    if out=$("$py" -m synapse.app.homeserver --config-path="$r/etc/homeserver.yaml" \
        --config-path="$r/etc/conf.d/" --generate-keys 2>&1) \
        && out=$("$py" -m synapse.config -c "$r/etc/homeserver.yaml" -c "$r/etc/conf.d/" 2>&1); then
        echo "ok   $name"
    else
        echo "FAIL $name"
        printf '%s\n' "$out" | tail -n 5 | sed 's/^/     /'
        failed=1
    fi
done
exit $failed
