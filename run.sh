#!/usr/bin/env bash
# Set up everything bigmixed needs on a fresh Debian machine, then run one job.
#   bash run.sh demo          fit the seeds' hdp-style example (8525 patients, 407 doctors)
#   bash run.sh test [ARGS]   run the test suite (ARGS go to pytest; e.g. -m slow)
set -euo pipefail
cd "$(dirname "$0")"

need_root() { if [ "$(id -u)" -ne 0 ]; then sudo "$@"; else "$@"; fi; }

ensure_system_packages() {
    # scikit-sparse compiles against CHOLMOD's headers (Debian: SuiteSparse 5.12). CHOLMOD's
    # supernodal factorization calls BLAS: Debian's default libblas is the slow reference one,
    # OpenBLAS replaces it through update-alternatives (6x faster dense fill-in blocks).
    local missing=()
    [ -f /usr/include/suitesparse/cholmod.h ] || missing+=(libsuitesparse-dev)
    dpkg -s libopenblas0-pthread >/dev/null 2>&1 || missing+=(libopenblas0-pthread)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "[run.sh] installing ${missing[*]}" >&2
        need_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive need_root apt-get install -y -qq "${missing[@]}" >&2
    fi
}

ensure_venv() {
    local stamp=.venv/.bigmixed-installed
    local want
    want=$(sha1sum pyproject.toml | cut -d' ' -f1)
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "[run.sh] installing bigmixed and its dependencies into .venv" >&2
        .venv/bin/python -m pip install -q --upgrade pip >&2
        .venv/bin/python -m pip install -q -e '.[test]' >&2
        echo "$want" > "$stamp"
    fi
}

cmd=${1:-}
shift || true
# One on-disk cache of compiled Numba kernels for the demo and the tests.
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.numba_cache}"
case "$cmd" in
    demo)
        ensure_system_packages
        ensure_venv
        exec .venv/bin/python -m bigmixed.demo "$@"
        ;;
    test)
        ensure_system_packages
        ensure_venv
        set +e
        .venv/bin/python -m pytest "$@"
        rc=$?
        set -e
        # pytest exit code 5 = no tests collected (e.g. a -k filter that matches nothing).
        if [ "$rc" -eq 5 ]; then
            echo "[run.sh] pytest collected no tests" >&2
            rc=0
        fi
        exit "$rc"
        ;;
    *)
        echo "usage: bash run.sh demo | bash run.sh test [pytest args]" >&2
        exit 2
        ;;
esac
