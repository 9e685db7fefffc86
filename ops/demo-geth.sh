#!/usr/bin/env bash
# A real validator network on the embedded backends (dir: secrets, sqlite: leases):
# `orchestrator init` creates 3 validator identities and the Clique genesis with the
# governance contract; 4 `leased` daemons (vm-1 … vm-4) each supervise a geth 1.13.15 that
# seals with the identity its daemon leased (one daemon stands by); the daemon holding
# m0-v0 is killed with kill -9, and the standby's geth takes m0-v0 over, syncs, is
# unlocked and seals again. It prints the holders, the newest blocks with the identity and
# the VM that sealed each, and the take-over's figures.
#
# geth comes from ../shared/tools/geth/ beside the checkout (or $GETH), installed into
# .tools/bin/geth with its checksum checked. Everything runs on loopback in a temporary
# directory and stops on exit. About a minute.
#
# Usage: ops/demo-geth.sh   (from anywhere)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/ops/install-test-deps.sh" --geth
printf '\n\033[1m== building orchestrator, leased and the demo\033[0m\n'
cargo build -q --manifest-path "$root/Cargo.toml" -p integration-tests \
    --bin validator-network --bin orchestrator-host --bin leased-host
exec "$root/target/debug/validator-network"
