#!/usr/bin/env bash
# A local consortium member on the embedded backends (dir: secrets, sqlite: leases):
# `orchestrator init` creates 3 validator identities, 4 `leased` daemons (vm-1 … vm-4)
# take one each and leave one standby, `leased status` shows the holders, the holder of
# m0-v0 is killed with kill -9, and the standby takes m0-v0 over once its lease lapses.
#
# The "validator client" each daemon supervises is a shell loop that reads the key file it
# was handed and prints a line per second; a real deployment puts besu, nethermind or geth
# there. Everything lives in a temporary directory and every process is stopped on exit.
#
# Usage: ops/demo.sh   (from anywhere; builds the two binaries first)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building orchestrator and leased"
cargo build -q --manifest-path "$root/Cargo.toml" -p orchestrator -p leased
bin="$root/target/debug"

demo="$(mktemp -d "${TMPDIR:-/tmp}/leased-demo.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$demo"
}
trap cleanup EXIT INT TERM

say "orchestrator init: 3 identities into dir:secrets, lease records into sqlite:leases.db"
"$bin/orchestrator" init --member 0 --validators 3 \
    --admin 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed \
    --secrets "dir:$demo/secrets" --leases "sqlite:$demo/leases.db" --out "$demo/network"

say "starting 4 daemons for 3 identities (lease 15 s; logs in $demo/vm-N.log)"
for n in 1 2 3 4; do
    install -d -m 700 "$demo/run-$n"
    cat >"$demo/vm-$n.toml" <<EOF
node = "vm-$n"
runtime_dir = "$demo/run-$n"
[store]
leases = "sqlite:$demo/leases.db"
secrets = "dir:$demo/secrets"
[identity]
pool = "m0-"
[lease]
duration_secs = 15
[client]
format = "raw-hex"
command = ["sh", "-c", "test -s \"\$1\" || exit 65; while :; do echo \"vm-$n signing as \$2\"; sleep 1; done", "client", "{key_file}", "{address}"]
[http]
listen = "127.0.0.1:0"
EOF
    "$bin/leased" run --config "$demo/vm-$n.toml" >>"$demo/vm-$n.log" 2>&1 &
    pids+=("$!")
done

holder_of() { # prints vm-N holding $1, or nothing
    "$bin/leased" status --leases "sqlite:$demo/leases.db" | awk -v id="$1" '$1 == id && $3 == "leased" { print $4 }'
}
wait_for_holder() { # $1 identity, $2 a holder to exclude, $3 seconds
    local deadline=$((SECONDS + $3)) h
    while ((SECONDS < deadline)); do
        h="$(holder_of "$1")"
        if [[ -n "$h" && "$h" != "$2" ]]; then
            echo "$h"
            return 0
        fi
        sleep 0.2
    done
    return 1
}

for id in m0-v0 m0-v1 m0-v2; do
    wait_for_holder "$id" none 20 >/dev/null || { echo "demo: $id was never leased" >&2; exit 1; }
done
sleep 1
say "leased status"
"$bin/leased" status --leases "sqlite:$demo/leases.db"

victim="$(holder_of m0-v0)"
victim_pid="${pids[$((${victim#vm-} - 1))]}"
say "kill -9 $victim (the holder of m0-v0); its guard stops its client at once"
start=$SECONDS
kill -KILL "$victim_pid"
successor="$(wait_for_holder m0-v0 "$victim" 25)" || { echo "demo: nobody took m0-v0 over" >&2; exit 1; }
say "$successor took m0-v0 over after $((SECONDS - start)) s (the lease is 15 s)"
sleep 1
"$bin/leased" status --leases "sqlite:$demo/leases.db"
say "the last client lines of $successor"
tail -n 3 "$demo/$successor.log"
say "stopping: each daemon fences its client, releases its lease and exits 0"
