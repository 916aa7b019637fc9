#!/usr/bin/env bash
# Build and test the whole workspace: what CI runs (.ci/run calls this).
#
# Works on a fresh Debian 12 machine that has only the Rust toolchain:
# system packages the tests need are installed with apt-get when missing.
# Every step runs even when an earlier one failed (except the tests, which
# need the build), so one run shows every problem; the script exits
# non-zero when any step failed.
#
#   scripts/test.sh            build, test, clippy, rustfmt
#   CARGO_TEST_ARGS='-- name'  extra arguments for the test runner
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# System packages, as "command-that-must-exist package...". Install happens
# only when the command is missing. Adding a dependency is one line, e.g.:
#   "protoc protobuf-compiler libprotobuf-dev"   # etcd-client's build
#   "etcd etcd-server etcd-client"               # etcd store tests
SYSTEM_PACKAGES=(
)

log() { printf '\n==> %s\n' "$*"; }

install_system_packages() {
    local missing=() entry cmd
    for entry in "${SYSTEM_PACKAGES[@]}"; do
        read -r cmd pkgs <<<"$entry"
        if ! command -v "$cmd" >/dev/null 2>&1; then
            # shellcheck disable=SC2206
            missing+=($pkgs)
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing system packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" </dev/null
}

need_cargo_tool() {
    if ! cargo "$1" --version >/dev/null 2>&1; then
        echo "error: 'cargo $1' is not installed; run: rustup component add $2" >&2
        return 1
    fi
}

failed=()
step() {
    local name="$1"
    shift
    log "$name: $*"
    local start=$SECONDS
    if "$@"; then
        echo "--- $name: ok ($((SECONDS - start))s)"
    else
        echo "--- $name: FAILED ($((SECONDS - start))s)"
        failed+=("$name")
        return 1
    fi
}

if ! install_system_packages; then
    echo "error: installing system packages failed" >&2
    exit 1
fi

if step build cargo build --workspace --bins; then
    if cargo nextest --version >/dev/null 2>&1; then
        # shellcheck disable=SC2086
        step tests cargo nextest run --workspace --no-fail-fast ${CARGO_TEST_ARGS:-}
        # nextest does not run doc tests.
        step doctests cargo test --workspace --doc
    else
        echo "(cargo-nextest not found: using cargo test)"
        # shellcheck disable=SC2086
        step tests cargo test --workspace --no-fail-fast ${CARGO_TEST_ARGS:-}
    fi
else
    echo "--- tests: skipped (the build failed)"
    failed+=("tests (skipped)")
fi

clippy() { need_cargo_tool clippy clippy && cargo clippy --workspace --all-targets -- -D warnings; }
rustfmt_check() { need_cargo_tool fmt rustfmt && cargo fmt --all --check; }
step clippy clippy
step rustfmt rustfmt_check

echo
if [ ${#failed[@]} -ne 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all checks passed: build, tests, clippy, rustfmt"
