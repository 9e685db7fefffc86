#!/usr/bin/env bash
# The project's test command (README, and .ci/run calls it as is).
#
# Installs the pinned interop tools the tests use (eth-account, jsonschema and
# azure-keyvault-secrets from PyPI; ethers, solc, @ethereumjs/client and Azurite from npm;
# libfaketime from the distribution's packages) into .tools/ of this checkout, idempotently, then runs every test of the workspace. The
# tests that need Azurite start it themselves on loopback, in memory, and stop it when they
# end. The interop tests fail, never skip, when a tool is missing. Extra arguments go to
# cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> test dependencies (ops/install-test-deps.sh)"
ops/install-test-deps.sh

echo "==> cargo test --workspace"
exec cargo test --workspace --locked "$@"
