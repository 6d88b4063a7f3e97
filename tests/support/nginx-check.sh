#!/bin/sh
# Run the real `nginx -t` over the golden nginx files of each variant, in a throwaway prefix.
#
#   tests/support/nginx-check.sh [VARIANT_DIR...]     (default: every tests/golden/*/)
#
# The files under tests/golden are byte-identical to what the templates render (tests/golden.rs checks
# that), so this tests the templates. Each variant gets a fresh copy of Debian's nginx.conf with the
# variant's snippet and vhosts enabled, absolute paths moved into the prefix, and a self-signed
# certificate for every ssl_certificate it names. Nothing is started and nothing outside the prefix
# is written. Warnings count as failures.
#
# Environment:
#   NGINX_BIN        nginx binary (default: nginx in PATH). On a machine without nginx installed,
#                    `apt-get download nginx nginx-common` and `dpkg-deb -x` both into a directory
#                    work too: NGINX_BIN=DIR/usr/sbin/nginx NGINX_ETC=DIR/etc/nginx.
#                    (Not $NGINX: nginx itself reads that variable as a list of inherited sockets.)
#   NGINX_ETC        directory holding Debian's nginx.conf and mime.types (default: /etc/nginx).
#   WITH_DEFAULT_SITE=1  also enable Debian's stock sites-available/default, as on a fresh host.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
golden="$here/../golden"
NGINX_BIN=${NGINX_BIN:-nginx}
NGINX_ETC=${NGINX_ETC:-/etc/nginx}

command -v "$NGINX_BIN" >/dev/null 2>&1 || { echo "nginx-check: no nginx binary ($NGINX_BIN); set NGINX_BIN" >&2; exit 2; }
command -v openssl >/dev/null 2>&1 || { echo "nginx-check: openssl is required" >&2; exit 2; }
[ -f "$NGINX_ETC/nginx.conf" ] || { echo "nginx-check: $NGINX_ETC/nginx.conf not found; set NGINX_ETC" >&2; exit 2; }

if [ $# -eq 0 ]; then
    set -- "$golden"/*/
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

failed=0
for variant in "$@"; do
    variant=${variant%/}
    name=$(basename "$variant")
    p="$work/$name"
    mkdir -p "$p/etc/nginx/sites-enabled" "$p/etc/nginx/snippets" "$p/etc/nginx/conf.d" \
        "$p/etc/nginx/modules-enabled" "$p/log" "$p/live"

    # Debian's main config, pointed into the prefix.
    relocate="s#/etc/nginx/#$p/etc/nginx/#g; s#/var/log/nginx/#$p/log/#g; s#/run/nginx.pid#$p/nginx.pid#g; s#/etc/letsencrypt/live/#$p/live/#g"
    sed "$relocate" "$NGINX_ETC/nginx.conf" >"$p/etc/nginx/nginx.conf"
    cp "$NGINX_ETC/mime.types" "$p/etc/nginx/mime.types"
    # The compiled-in temp directories (/var/lib/nginx/*) are created even by -t.
    mkdir -p "$p/tmp"
    for t in client_body proxy fastcgi uwsgi scgi; do
        echo "${t}_temp_path $p/tmp/$t;"
    done >"$p/etc/nginx/conf.d/temp-paths.conf"
    if [ "${WITH_DEFAULT_SITE:-0}" = 1 ] && [ -f "$NGINX_ETC/sites-available/default" ]; then
        sed "$relocate" "$NGINX_ETC/sites-available/default" >"$p/etc/nginx/sites-enabled/default"
    fi

    # The variant's files, as the playbook installs them (sites-available → sites-enabled).
    for f in "$variant"/etc/nginx/snippets/*; do
        sed "$relocate" "$f" >"$p/etc/nginx/snippets/$(basename "$f")"
    done
    for f in "$variant"/etc/nginx/sites-available/*; do
        sed "$relocate" "$f" >"$p/etc/nginx/sites-enabled/$(basename "$f")"
    done

    # A dummy certificate wherever a vhost expects certbot's.
    for cert in $(sed -n 's/^ *ssl_certificate \(.*\);$/\1/p' "$p"/etc/nginx/sites-enabled/*); do
        dir=$(dirname "$cert")
        [ -f "$cert" ] && continue
        mkdir -p "$dir"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj "/CN=$(basename "$dir")" -keyout "$dir/privkey.pem" -out "$cert" 2>/dev/null
    done

    if out=$("$NGINX_BIN" -t -p "$p/" -c "$p/etc/nginx/nginx.conf" -e stderr 2>&1) \
        && ! printf '%s\n' "$out" | grep -q '\[warn\]'; then
        echo "ok   $name"
    else
        echo "FAIL $name"
        printf '%s\n' "$out" | sed 's/^/     /'
        failed=1
    fi
done
exit $failed
