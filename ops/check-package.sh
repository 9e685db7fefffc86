#!/usr/bin/env bash
# Checks the Debian package that ops/package.sh built: `dpkg-deb --info` and `--contents`
# against what the package must hold (files, modes, owners, maintainer scripts), then
# lintian from .tools/deb (ops/install-test-deps.sh unpacks it there, no root). Fails on
# any missing file, wrong mode or owner, and on any lintian error; lintian's warnings are
# printed, not fatal. Overrides, each with its reason, are in ops/debian/lintian-overrides.
#
# Usage: ops/check-package.sh PATH.deb
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    printf 'check-package: FAILED: %s\n' "$*" >&2
    exit 1
}
say() { printf 'check-package: %s\n' "$*"; }

[[ $# -eq 1 ]] || fail "usage: ops/check-package.sh PATH.deb"
deb=$1
[[ -f "$deb" ]] || fail "$deb is not a file"
command -v dpkg-deb >/dev/null 2>&1 || fail "dpkg-deb is not on PATH (Debian: apt-get install dpkg)"

info=$(dpkg-deb --info "$deb") || fail "dpkg-deb --info $deb failed"
contents=$(dpkg-deb --contents "$deb") || fail "dpkg-deb --contents $deb failed"
problems=()

field() { dpkg-deb --field "$deb" "$1"; }
[[ "$(field Package)" == leased ]] || problems+=("Package is '$(field Package)', not leased")
[[ "$(field Depends)" == *libc6* ]] || problems+=("Depends '$(field Depends)' does not name libc6")
[[ -n "$(field Description)" ]] || problems+=("no Description")

# MODE OWNER PATH: each must be in the package exactly so. Units go to lib/ or usr/lib/
# depending on the cargo-deb version; the pattern allows both.
expected=(
    '-rwxr-xr-x root/root ./usr/bin/leased'
    '-rwxr-xr-x root/root ./usr/bin/leased-guard'
    '-rwxr-xr-x root/root ./usr/bin/orchestrator'
    '-rw-r--r-- root/root ./(usr/)?lib/systemd/system/leased.service'
    '-rw-r--r-- root/root ./usr/lib/sysusers.d/leased.conf'
    '-rw-r--r-- root/root ./usr/lib/tmpfiles.d/leased.conf'
    '-rw-r--r-- root/root ./etc/leased/leased.toml.example'
    '-rw-r--r-- root/root ./usr/share/doc/leased/copyright'
    '-rw-r--r-- root/root ./usr/share/doc/leased/changelog.Debian.gz'
    '-rw-r--r-- root/root ./usr/share/bash-completion/completions/leased'
    '-rw-r--r-- root/root ./usr/share/bash-completion/completions/orchestrator'
    '-rw-r--r-- root/root ./usr/share/zsh/vendor-completions/_leased'
    '-rw-r--r-- root/root ./usr/share/zsh/vendor-completions/_orchestrator'
    '-rw-r--r-- root/root ./usr/share/fish/vendor_completions.d/leased.fish'
    '-rw-r--r-- root/root ./usr/share/fish/vendor_completions.d/orchestrator.fish'
)
for page in leased leased-run leased-status leased-break leased-check-config \
    orchestrator orchestrator-init orchestrator-join orchestrator-key orchestrator-key-generate \
    orchestrator-key-inspect orchestrator-governance orchestrator-bootnodes; do
    expected+=("-rw-r--r-- root/root ./usr/share/man/man1/$page.1.gz")
done
# dpkg-deb --contents: MODE OWNER SIZE DATE TIME PATH. cargo-deb writes numeric owners,
# which dpkg-deb prints as 0/0: that is root/root.
listing=$(awk '{ owner = ($2 == "0/0") ? "root/root" : $2; print $1, owner, $6 }' <<<"$contents")
for want in "${expected[@]}"; do
    read -r mode owner path <<<"$want"
    grep -Eq -e "^$mode $owner ${path//./\\.}\$" <<<"$listing" ||
        problems+=("not in the package as $mode $owner: $path")
done
# Nothing else may be setuid, setgid, world-writable or owned by anyone but root.
while read -r mode owner path; do
    [[ "$owner" == root/root ]] || problems+=("$path is owned by $owner")
    [[ "$mode" != *[sS]* ]] || problems+=("$path is setuid or setgid ($mode)")
    [[ "${mode:8:1}" != w || "${mode:0:1}" == l ]] || problems+=("$path is world-writable ($mode)")
done <<<"$listing"
grep -q 'man1/leased-guard' <<<"$listing" && problems+=("a man page for the hidden leased guard")

# The maintainer scripts: create the user and the directory, enable the unit, start nothing
# on a first install (there is no configuration yet), restart a running daemon on upgrade.
control=$(mktemp -d)
trap 'rm -rf "$control"' EXIT
dpkg-deb --control "$deb" "$control/DEBIAN" || fail "dpkg-deb --control $deb failed"
postinst=$(cat "$control/DEBIAN/postinst" 2>/dev/null) || problems+=("no postinst")
grep -q 'systemd-sysusers' <<<"$postinst" || problems+=("postinst does not run systemd-sysusers")
grep -q 'systemd-tmpfiles' <<<"$postinst" || problems+=("postinst does not run systemd-tmpfiles")
grep -q 'deb-systemd-helper.* enable' <<<"$postinst" || problems+=("postinst does not enable leased.service")
grep -Eq 'deb-systemd-invoke[^|]* start' <<<"$postinst" && problems+=("postinst starts leased.service on install")
grep -q 'try-restart' <<<"$postinst" || problems+=("postinst does not restart a running leased on upgrade")
grep -qx '/etc/leased/leased.toml.example' "$control/DEBIAN/conffiles" 2>/dev/null ||
    problems+=("/etc/leased/leased.toml.example is not a conffile")

if ((${#problems[@]} > 0)); then
    printf '%s\n' "$info" >&2
    printf 'check-package: %s\n' "${problems[@]}" >&2
    fail "$deb: ${#problems[@]} problem(s) above"
fi
say "$deb: $(wc -l <<<"$listing") entries, modes, owners and maintainer scripts as expected"

# lintian, from the packages ops/install-test-deps.sh unpacked into .tools/deb.
deb_root=$PWD/.tools/deb
[[ -x "$deb_root/usr/bin/lintian" ]] ||
    fail "lintian is not installed in .tools/deb: run ops/install-test-deps.sh (it unpacks lintian from ops/test-deps/debian-packages.txt)"
perl5=$(find "$deb_root/usr/lib" -mindepth 3 -maxdepth 3 -path '*/perl5/*' -type d | paste -sd: -)
libs=$(find "$deb_root/usr/lib" -mindepth 1 -maxdepth 1 -type d -name '*-linux-gnu*' | paste -sd: -)
set +e
lintian_out=$(PERL5LIB="$deb_root/usr/share/perl5:$perl5" \
    LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    PATH="$deb_root/usr/bin:$PATH" \
    "$deb_root/usr/bin/lintian" --fail-on error --display-level '>=warning' "$deb" 2>&1)
status=$?
set -e
printf '%s\n' "$lintian_out" | grep -v '^running with root privileges' || true
errors=$(grep -c '^E: ' <<<"$lintian_out" || true)
warnings=$(grep -c '^W: ' <<<"$lintian_out" || true)
if ((status != 0 || errors > 0)); then
    fail "lintian: $errors error(s), $warnings warning(s) (exit $status)"
fi
say "lintian: 0 errors, $warnings warning(s)"
