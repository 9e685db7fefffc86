#!/usr/bin/env bash
# Builds the Debian package `leased` (leased, leased-guard and orchestrator, the unit, the
# system user, the state directory, the example configuration, man pages and completions)
# and prints the .deb's path on stdout, last.
#
#   ops/package.sh            the bench profile: release settings with thin LTO. The test
#                             command runs it after the fleet benchmark, which has built
#                             every dependency in that profile, so only the binaries are
#                             linked here.
#   ops/package.sh --release  the release profile (fat LTO, a few minutes more): the package
#                             to ship.
#
# Steps: build leased, leased-guard and orchestrator in the profile; gen-assets
# (integration-tests) writes the man pages and completions from both command trees into
# target/assets/; then `cargo deb -p leased --no-build --profile P` packs them as
# leased/Cargo.toml's [package.metadata.deb] lists. cargo-deb comes from ops/install-test-deps.sh
# (.tools/cargo/bin); without it this fails and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=bench
case "${1:-}" in
"") ;;
--release) profile=release ;;
-h | --help)
    sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "package: unknown argument '$1' (usage: ops/package.sh [--release])" >&2
    exit 64
    ;;
esac

cargo_deb=.tools/cargo/bin/cargo-deb
if [[ ! -x "$cargo_deb" ]]; then
    echo "package: FAILED: $cargo_deb is missing: run ops/install-test-deps.sh (it installs the pinned cargo-deb)" >&2
    exit 1
fi

echo "package: building leased, leased-guard, orchestrator and gen-assets (profile $profile)" >&2
# One invocation with integration-tests selected, so that every dependency is built with
# the same features as `cargo bench -p integration-tests` built it (integration-tests has
# no dev-dependencies): after the fleet benchmark only these four binaries are linked.
cargo build --locked -q --profile "$profile" -p integration-tests -p leased -p orchestrator \
    --bin leased --bin leased-guard --bin orchestrator --bin gen-assets >&2
target_dir=$(cargo metadata --locked --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[[ -n "$target_dir" ]] || target_dir=target
# Cargo writes the built-in bench profile into release/, like release itself.
profile_dir=$profile
[[ "$profile" != bench ]] || profile_dir=release

echo "package: man pages and completions (gen-assets) into target/assets" >&2
# leased/Cargo.toml's assets name ../target/assets, whatever the cargo target directory.
"$target_dir/$profile_dir/gen-assets" target/assets >&2

echo "package: cargo deb" >&2
# --no-build: the binaries above are the ones packed (cargo-deb would build only leased's).
# cargo-deb looks in target/<profile>/, so it is given the directory's name.
deb=$(PATH="$PWD/.tools/cargo/bin:$PATH" "$cargo_deb" -p leased --no-build --profile "$profile_dir" \
    --locked --no-dbgsym --no-separate-debug-symbols -q)
deb=$(printf '%s\n' "$deb" | tail -n 1)
[[ -f "$deb" ]] || {
    echo "package: FAILED: cargo deb printed '$deb', which is not a file" >&2
    exit 1
}
printf '%s\n' "$deb"
