# shellcheck shell=bash
# Shared helpers for tests/vm: logging, phase timings, check bookkeeping, cleanup, the input cache.
# Sourced by tests/vm/run; everything here runs on the host as root.

VM_DIR=${VM_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
REPO_ROOT=${REPO_ROOT:-$(cd "$VM_DIR/../.." && pwd)}
CACHE=${MP_VM_CACHE:-${HOME:-/root}/.cache/matrix-provision/vm}
# Per-run scratch (overlays, logs, pid files). Kept on failure for inspection; removed on success.
RUN_DIR=${MP_VM_RUN_DIR:-/var/tmp/mp-vm-run.$$}
mkdir -p "$CACHE" "$RUN_DIR"

PASSED=0
FAILED=0
SKIPPED=0
FAILED_NAMES=()
declare -a PHASES=()
T_START=$(date +%s)

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }
fmt_ms() { printf '%d.%01ds' $(($1 / 1000)) $((($1 % 1000) / 100)); }

# phase NAME CMD... : run CMD, record and print its wall time. Returns CMD's status.
phase() {
  local name=$1 t0 rc=0
  shift
  t0=$(now_ms)
  "$@" || rc=$?
  local dt=$(($(now_ms) - t0))
  PHASES+=("$(printf '%-44s %8s%s' "$name" "$(fmt_ms $dt)" "$([ $rc -eq 0 ] || echo "  (exit $rc)")")")
  log "phase $name: $(fmt_ms $dt)$([ $rc -eq 0 ] || echo " (exit $rc)")"
  return $rc
}

# One line per check. Scenarios call pass/fail/skip; `check DESC CMD...` runs CMD and records the outcome.
# RELEASE_LABEL ("[debian13] ") tells the releases' lines apart when a run covers both.
RELEASE_LABEL=
pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s%s\n' "$RELEASE_LABEL" "$*"; }
fail() { FAILED=$((FAILED + 1)); FAILED_NAMES+=("$RELEASE_LABEL$*"); printf 'FAIL  %s%s\n' "$RELEASE_LABEL" "$*"; }
skip() { SKIPPED=$((SKIPPED + 1)); printf 'SKIPPED: %s%s\n' "$RELEASE_LABEL" "$*"; }
check() {
  local desc=$1
  shift
  if "$@"; then pass "$desc"; else fail "$desc"; return 1; fi
}

print_summary() {
  echo
  echo "Phase timings:"
  local p
  for p in "${PHASES[@]}"; do echo "  $p"; done
  echo "  $(printf '%-44s %8s' total "$(($(date +%s) - T_START)).0s")"
  if [ ${#FAILED_NAMES[@]} -gt 0 ]; then
    echo "Failed checks:"
    for p in "${FAILED_NAMES[@]}"; do echo "  $p"; done
    echo "Logs kept in $RUN_DIR"
  fi
  echo
  if [ "$SKIPPED" -gt 0 ]; then
    echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
  else
    echo "$PASSED passed, $FAILED failed"
  fi
}

# Cleanup stack: functions pushed here run in reverse order on exit, whatever the exit path.
declare -a CLEANUPS=()
on_exit() { CLEANUPS+=("$*"); }
run_cleanups() {
  local i
  for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${CLEANUPS[$i]}" >/dev/null 2>&1 || true
  done
  CLEANUPS=()
}

# kill_pid PID [GRACE_S]: TERM, wait, then KILL. Only ever for PIDs this harness started.
kill_pid() {
  local pid=$1 grace=${2:-10} i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# ---- input cache -------------------------------------------------------------------------------
# An artifact lives in $CACHE/NAME-KEY/ and is complete when NAME-KEY/.ok exists. KEY hashes the text
# of the builder function plus every input given, so editing a builder or a package list rebuilds it.

cache_key() {
  local f
  {
    for f in "$@"; do
      if [ -d "$f" ]; then
        (cd "$f" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
      elif [ -f "$f" ]; then
        sha256sum <"$f"
      elif declare -F "$f" >/dev/null; then
        declare -f "$f"
      else
        printf '%s\n' "$f"
      fi
    done
  } | sha256sum | cut -c1-16
}

# cached NAME KEY BUILDER [ARGS...] : prints the artifact dir; runs BUILDER OUTDIR ARGS... when it is missing.
# A failed build leaves no .ok, so the next run starts it again from scratch.
cached() {
  local name=$1 key=$2 builder=$3 dir="$CACHE/$1-$2" lockfd
  if [ -f "$dir/.ok" ]; then
    echo "$dir"
    return 0
  fi
  # Two runs on one machine: the second waits for the first's build instead of clobbering it.
  exec {lockfd}>"$CACHE/.lock-$name"
  flock "$lockfd"
  if [ -f "$dir/.ok" ]; then
    exec {lockfd}>&-
    echo "$dir"
    return 0
  fi
  log "building $name ($key)"
  rm -rf "$dir" "$dir.tmp"
  mkdir -p "$dir.tmp"
  # A fresh bash: called from a condition (`if`, `||`), a function runs with `set -e` silently off, and
  # subshells inherit that. A half-built artifact must fail here, not be cached.
  if ! MP_VM_RUN_DIR=$RUN_DIR bash -euo pipefail -c 'source "$1/lib/common.sh"; source "$1/lib/inputs.sh"; shift; "$@"' \
    _ "$VM_DIR" "$builder" "$dir.tmp" "${@:4}" >"$CACHE/$name-$key.log" 2>&1; then
    log "building $name failed; last lines of $CACHE/$name-$key.log:"
    tail -n 30 "$CACHE/$name-$key.log" >&2
    exec {lockfd}>&-
    return 1
  fi
  mv "$dir.tmp" "$dir"
  touch "$dir/.ok"
  # Older builds of the same artifact only take space, unless a running guest still has them mounted.
  local old
  for old in "$CACHE/$name"-*; do
    [ "$old" = "$dir" ] || [ "$old" = "$CACHE/$name-$key.log" ] || grep -qF "$old" /proc/mounts || rm -rf "$old"
  done
  exec {lockfd}>&-
  echo "$dir"
}
