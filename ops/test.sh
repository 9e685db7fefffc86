#!/usr/bin/env bash
# The project's test command (README, and .ci/run calls it as is).
#
# Installs the pinned interop tools the tests use (eth-account, jsonschema and
# azure-keyvault-secrets from PyPI; ethers, solc, @ethereumjs/client and Azurite from npm;
# libfaketime from the distribution's packages; geth 1.13.15 from ../shared/tools/geth/ or
# $GETH) into .tools/ of this checkout, idempotently, then runs every test of the workspace. The
# tests that need Azurite start it themselves on loopback, in memory, and stop it when they
# end. The interop tests fail, never skip, when a tool is missing; the geth tests alone
# skip without geth, one line each, except under CI. Extra arguments go to cargo test.
#
# Then the chaos run (issue 11) on both stores side by side, twice for 3 minutes: with the
# fixed seed 1 (the seed that found re-created lease records signed beside their old
# holders) and with a random seed, printed first so that a failure can be replayed. It
# reuses the binaries cargo test built; its reports land in target/chaos/.
#
# Last, the fleet benchmark in its quick mode (issue 15): it prints one table of take-over,
# hand-over, herd, store-load and footprint figures on sqlite: and Azurite beside etcd's
# lock. It fails only on an overlap of two signers; figures that miss a target are marked.
#
# Then the Debian package: built in the benchmark's profile, its contents, modes and
# maintainer scripts checked, and lintian (from .tools/deb) with no errors.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> test dependencies (ops/install-test-deps.sh)"
ops/install-test-deps.sh

echo "==> cargo test --workspace"
cargo test --workspace --locked "$@"

chaos() {
    cargo run --locked -q -p integration-tests --bin chaos -- \
        --store sqlite,blob --minutes 3 --seed "$1" --out "target/chaos/seed-$1"
}

echo "==> chaos run, fixed seed 1 (3 minutes)"
chaos 1

seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
echo "==> chaos run, random seed $seed (3 minutes; replay with --seed $seed)"
chaos "$seed"

echo "==> fleet benchmark, quick (cargo bench -p integration-tests --bench fleet -- --quick)"
cargo bench --locked -p integration-tests --bench fleet -- --quick

# After the benchmark, which built every dependency in the bench profile: only leased,
# orchestrator and gen-assets are linked here.
echo "==> Debian package (ops/package.sh; ops/check-package.sh: dpkg-deb --info/--contents, lintian)"
deb=$(ops/package.sh)
ops/check-package.sh "$deb"
