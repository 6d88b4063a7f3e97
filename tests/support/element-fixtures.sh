#!/usr/bin/env bash
# element-fixtures.sh OUTDIR [PORT]
#
# Builds fake Element Web releases, signed with a throwaway GPG key, and a static copy of the
# GitHub releases API that serves them. Used by `cargo test` (tests/element.rs, which serves
# OUTDIR/www itself) and by the VM harness, which serves it with
#     python3 -m http.server --bind 127.0.0.1 --directory OUTDIR/www PORT
# and points host.toml at it:
#     [sources]
#     element_releases_url = "http://127.0.0.1:PORT/releases"
#     element_signing_key  = "OUTDIR/keyring.gpg"        (or keyring.asc: armored works too)
# PORT (default 8000) only goes into the download URLs inside the JSON; nothing listens here.
# Needs: bash, gpg (gnupg), gpgconf, GNU tar, gzip. Nothing is sent anywhere.
#
# Layout of OUTDIR:
#   gnupg/            GNUPGHOME holding the test signing key (secret part: never trust it anywhere)
#   gnupg-rogue/      a second key that is NOT in the keyring (signs the "wrongkey" release)
#   keyring.gpg       binary public keyring with only the test key (for gpgv)
#   keyring.asc       the same, ASCII-armored
#   fingerprint       the test key's fingerprint
#   fixtures.env      RELEASES_URL=, KEYRING=, FINGERPRINT=, LATEST=, FIRST= (shell syntax)
#   www/                                     document root
#     releases/latest                        JSON of v1.1.0 (GET {url}/latest)
#     releases/tags/<tag>                    JSON of every release below (GET {url}/tags/<tag>)
#     download/<tag>/element-<tag>.tar.gz    tarball; top dir element-<tag>/ holds index.html
#     download/<tag>/element-<tag>.tar.gz.asc  (containing the tag), config.sample.json, version
#
# Releases (JSON: {"tag_name": TAG, "assets": [{"name", "browser_download_url"}, ...]}):
#   v0.9.0 v1.0.0 v1.1.0     good; v1.1.0 is "latest". The VM suite updates v1.0.0 -> v1.1.0.
#   v1.2.0-tampered          tarball changed after signing            -> BAD signature
#   v1.2.0-wrongkey          signed by gnupg-rogue's key              -> key not in keyring
#   v1.2.0-unsigned          no .asc asset in the JSON                -> refused, unsigned
#   v1.2.0-sigmissing        .asc asset listed but not on the server  -> HTTP 404
#   v1.2.0-corrupt           signed, but not gzip at all              -> corrupt tarball
#   v1.2.0-truncated         signed, a good tarball cut in half       -> truncated tarball
#   v1.2.0-traversal         signed, has element-<tag>/../escaped.txt -> path traversal
#   v1.2.0-symlink           signed, has element-<tag>/etc -> /etc    -> link out of the release
# A tag not listed (e.g. v9.9.9) has no tags/ file: GET answers 404.
set -euo pipefail

out=${1:?usage: element-fixtures.sh OUTDIR [PORT]}
port=${2:-8000}
mkdir -p "$out"
out=$(cd "$out" && pwd)
base="http://127.0.0.1:$port"
www="$out/www"
stage="$out/stage"
rm -rf "$www" "$stage" "$out/gnupg" "$out/gnupg-rogue"
mkdir -p "$www/releases/tags" "$www/download" "$stage"

# gpg starts an agent per GNUPGHOME; stop ours whatever happens.
stop_agents() {
    for h in "$out/gnupg" "$out/gnupg-rogue"; do
        [ -d "$h" ] && GNUPGHOME="$h" gpgconf --kill all >/dev/null 2>&1 || true
    done
}
trap stop_agents EXIT

new_key() { # GNUPGHOME NAME -> prints fingerprint
    mkdir -m 700 "$1"
    GNUPGHOME="$1" gpg --batch --quiet --passphrase '' \
        --quick-gen-key "$2 <element-test@example.invalid>" ed25519 sign never 2>/dev/null
    GNUPGHOME="$1" gpg --batch --with-colons --list-secret-keys 2>/dev/null | awk -F: '/^fpr:/ {print $10; exit}'
}
fpr=$(new_key "$out/gnupg" "matrix-provision test release key")
rogue=$(new_key "$out/gnupg-rogue" "rogue key")
GNUPGHOME="$out/gnupg" gpg --batch --export "$fpr" >"$out/keyring.gpg" 2>/dev/null
GNUPGHOME="$out/gnupg" gpg --batch --armor --export "$fpr" >"$out/keyring.asc" 2>/dev/null
echo "$fpr" >"$out/fingerprint"

sign() { # HOME FPR FILE
    GNUPGHOME="$1" gpg --batch --quiet --yes --local-user "$2" --armor --detach-sign \
        --output "$3.asc" "$3"
}

# A release directory stage/element-TAG/ as Element ships it (minus the 30 MB of JavaScript).
make_tree() { # TAG
    local d="$stage/element-$1"
    mkdir -p "$d/bundles"
    printf '<!doctype html><html><head><title>Element</title></head><body>fake Element %s</body></html>\n' "$1" >"$d/index.html"
    printf '{"default_server_config":{"m.homeserver":{"base_url":"https://matrix.example.org"}},"brand":"Element %s"}\n' "$1" >"$d/config.sample.json"
    echo "$1" >"$d/version"
    echo "console.log('element $1');" >"$d/bundles/app.js"
}

tarball() { # TAG -> path of download/TAG/element-TAG.tar.gz (created from stage)
    local dir="$www/download/$1"
    mkdir -p "$dir"
    tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$dir/element-$1.tar.gz" "element-$1"
    echo "$dir/element-$1.tar.gz"
}

json() { # TAG WITH_SIG(yes|no) -> release JSON on stdout
    local url="$base/download/$1/element-$1.tar.gz" sig=""
    if [ "$2" = yes ]; then
        sig=$(printf ',\n    {"name": "element-%s.tar.gz.asc", "browser_download_url": "%s.asc"}' "$1" "$url")
    fi
    printf '{\n  "tag_name": "%s",\n  "name": "%s",\n  "assets": [\n    {"name": "element-%s.tar.gz", "browser_download_url": "%s"}%s\n  ]\n}\n' \
        "$1" "$1" "$1" "$url" "$sig"
}

publish() { # TAG WITH_SIG
    json "$1" "$2" >"$www/releases/tags/$1"
}

for tag in v0.9.0 v1.0.0 v1.1.0; do
    make_tree "$tag"
    sign "$out/gnupg" "$fpr" "$(tarball "$tag")"
    publish "$tag" yes
done
cp "$www/releases/tags/v1.1.0" "$www/releases/latest"

t=v1.2.0-tampered; make_tree $t; f=$(tarball $t); sign "$out/gnupg" "$fpr" "$f"
printf 'tampered' | dd of="$f" bs=1 seek=100 conv=notrunc status=none
publish $t yes

t=v1.2.0-wrongkey; make_tree $t; sign "$out/gnupg-rogue" "$rogue" "$(tarball $t)"; publish $t yes

t=v1.2.0-unsigned; make_tree $t; tarball $t >/dev/null; publish $t no

t=v1.2.0-sigmissing; make_tree $t; tarball $t >/dev/null; publish $t yes

t=v1.2.0-corrupt; mkdir -p "$www/download/$t"; f="$www/download/$t/element-$t.tar.gz"
head -c 4096 /dev/urandom >"$f"; sign "$out/gnupg" "$fpr" "$f"; publish $t yes

t=v1.2.0-truncated; make_tree $t
head -c 65536 /dev/urandom >"$stage/element-$t/bundles/big.bin" # incompressible: cut lands mid-data
f=$(tarball $t); size=$(stat -c %s "$f"); truncate -s $((size / 2)) "$f"
sign "$out/gnupg" "$fpr" "$f"; publish $t yes

t=v1.2.0-traversal; make_tree $t; echo escaped >"$stage/escaped.txt"
mkdir -p "$www/download/$t"; f="$www/download/$t/element-$t.tar.gz"
# -P keeps the `..` in the member name, as a malicious archive would.
tar -C "$stage" -P --owner=0 --group=0 -czf "$f" "element-$t/index.html" "element-$t/../escaped.txt" 2>/dev/null
sign "$out/gnupg" "$fpr" "$f"; publish $t yes

t=v1.2.0-symlink; make_tree $t; ln -s /etc "$stage/element-$t/etc"
sign "$out/gnupg" "$fpr" "$(tarball $t)"; publish $t yes

rm -rf "$stage"
cat >"$out/fixtures.env" <<EOF
RELEASES_URL=$base/releases
KEYRING=$out/keyring.gpg
FINGERPRINT=$fpr
FIRST=v1.0.0
LATEST=v1.1.0
EOF
