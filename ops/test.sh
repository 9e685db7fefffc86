#!/usr/bin/env bash
# The project's test command (README, and .ci/run calls it as is).
#
# Installs the pinned interop tools the tests use (eth-account from PyPI, ethers from npm)
# into .tools/ of this checkout, idempotently, then runs every test of the workspace. The
# interop tests fail, never skip, when a tool is missing. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> test dependencies (ops/install-test-deps.sh)"
ops/install-test-deps.sh

echo "==> cargo test --workspace"
exec cargo test --workspace --locked "$@"
