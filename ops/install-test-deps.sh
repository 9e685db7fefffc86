#!/usr/bin/env bash
# Installs the third-party tools the integration tests run, at the versions pinned in
# ops/test-deps/, into .tools/ of this checkout (ignored by git):
#
#   .tools/venv   Python virtual environment from ops/test-deps/requirements.txt (PyPI)
#   .tools/node   node_modules from ops/test-deps/package.json + package-lock.json (npm)
#   .tools/deb    Debian packages from ops/test-deps/debian-packages.txt, unpacked (apt, no root)
#   .tools/cargo/bin/cargo-deb  cargo-deb $CARGO_DEB_VERSION (crates.io, `cargo install --locked`),
#                 which builds the Debian package (ops/package.sh)
#   .tools/bin/geth  geth 1.13.15, the last geth that seals Clique blocks, for the geth
#                 network tests: from ../shared/tools/geth/ beside the checkout (checked
#                 against GETH_SHA256 below) or from $GETH, a path to a geth 1.13 binary.
#                 Without either it says how to get geth and goes on; the geth tests then
#                 skip, each with one line.
#
# Idempotent: each part keeps a stamp of the pin files it was installed from and is
# skipped when the stamp still matches, so a second run takes well under a second. A
# changed pin file rebuilds that part from scratch. Safe for CI (CI=true, no stdin).
#
# Adding a tool is a one-line change: a pinned line in ops/test-deps/requirements.in or
# an exact version in ops/test-deps/package.json, then `ops/install-test-deps.sh --relock`
# to regenerate the lock files (requirements.txt with hashes, package-lock.json), and
# commit all of them.
#
# Usage: ops/install-test-deps.sh [--relock | --geth]
#   --geth   geth only (for ops/demo-geth.sh)
set -euo pipefail

# Bump to force every checkout to reinstall when the install steps below change.
readonly INSTALL_RECIPE=1
# pip-tools compiles requirements.in into requirements.txt; only --relock uses it.
readonly PIP_TOOLS_PIN='pip-tools==7.6.2'
readonly MIN_PYTHON='3.10' # eth-account 0.14 requires it
# No registry these machines reach has a geth that still seals Clique (v1.14 only follows
# it), so the binary travels beside the checkout with its source; this is the sha256 of
# the gunzipped binary, as ../shared/tools/geth/README.md gives it.
readonly GETH_VERSION='1.13.15'
readonly GETH_SHA256='f05b4abe40888fe598e2b8771b5407b8f3664bf9972e945c9991c52bd1f10621'
# Builds the .deb (ops/package.sh); its --profile and --no-build let the package reuse the
# binaries the fleet benchmark's profile already built.
readonly CARGO_DEB_VERSION='3.8.0'

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pins="$root/ops/test-deps"
tools="$root/.tools"
venv="$tools/venv"
node_prefix="$tools/node"
deb_root="$tools/deb"
geth_archive="$root/../shared/tools/geth/geth-$GETH_VERSION-linux-amd64.gz"

say() { printf 'test-deps: %s\n' "$*"; }
die() {
    printf 'test-deps: FAILED: %s\n' "$*" >&2
    exit 1
}
need() {
    command -v "$1" >/dev/null 2>&1 || die "\`$1\` is not on PATH. $2"
}

sha256_of_stdin() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum | cut -d' ' -f1
    else
        shasum -a 256 | cut -d' ' -f1
    fi
}

# A stamp names the recipe, the interpreter and the exact pin files a part was built from.
stamp_key() {
    local runtime="$1"
    shift
    {
        printf 'recipe %s\nruntime %s\n' "$INSTALL_RECIPE" "$runtime"
        cat "$@"
    } | sha256_of_stdin
}

stamp_matches() {
    local stamp="$1" key="$2"
    [[ -f "$stamp" && "$(<"$stamp")" == "$key" ]]
}

# Sets python_build (the interpreter's full version) for the stamp.
check_python() {
    need python3 "Install Python >= $MIN_PYTHON with venv support (Debian: apt-get install python3 python3-venv)."
    local info major minor
    info="$(python3 -c 'import sys; print(*sys.version_info[:2]); print(sys.version)' 2>&1)" ||
        die "\`python3\` is on PATH but does not run: $info"
    read -r major minor <<<"$info"
    python_build="$(tail -n +2 <<<"$info")"
    if ((major < ${MIN_PYTHON%.*} || (major == ${MIN_PYTHON%.*} && minor < ${MIN_PYTHON#*.}))); then
        die "python3 is $major.$minor; the pinned PyPI tools need Python >= $MIN_PYTHON."
    fi
}

check_node() {
    need node "Install Node.js with npm (Debian: apt-get install nodejs npm)."
    need npm "Install npm (Debian: apt-get install npm)."
}

install_python_tools() {
    check_python
    local req="$pins/requirements.txt"
    [[ -f "$req" ]] || die "missing ops/test-deps/requirements.txt (run \`ops/install-test-deps.sh --relock\`)."
    # A pin added to requirements.in but not yet compiled would otherwise go unnoticed.
    local pin name
    while read -r pin; do
        name="${pin%%==*}"
        # pip-compile writes names normalised: lower case, `_` and `.` as `-`.
        grep -qiF -- "${name//[_.]/-}==${pin#*==} " "$req" ||
            die "ops/test-deps/requirements.in pins $pin but requirements.txt does not: run \`ops/install-test-deps.sh --relock\`."
    done < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$pins/requirements.in" | grep -v '^$')
    local key stamp="$venv/.test-deps-stamp"
    key="$(stamp_key "$python_build" "$req")"
    if [[ -x "$venv/bin/python" ]] && stamp_matches "$stamp" "$key"; then
        say "python tools up to date in .tools/venv"
        return
    fi

    say "creating .tools/venv with Python ${python_build%% *}"
    rm -rf "$venv"
    python3 -m venv "$venv" </dev/null ||
        die "\`python3 -m venv\` failed (Debian: apt-get install python3-venv)."

    say "installing ops/test-deps/requirements.txt from PyPI"
    # Hash-checking mode: every package, dependencies included, must match a pinned hash.
    "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check \
        --require-hashes -r "$req" </dev/null ||
        die "pip could not install ops/test-deps/requirements.txt (see pip's message above): is PyPI reachable, and does every pin exist for Python ${python_build%% *}?"
    "$venv/bin/python" -m pip check --disable-pip-version-check >/dev/null ||
        die "installed PyPI packages have conflicting requirements; run \`ops/install-test-deps.sh --relock\`."

    printf '%s\n' "$key" >"$stamp"
    say "python tools installed: $(grep -E '^[A-Za-z0-9_.-]+==' "$pins/requirements.in" | paste -sd' ' -)"
}

install_node_tools() {
    check_node
    local file
    for file in package.json package-lock.json; do
        [[ -f "$pins/$file" ]] || die "missing ops/test-deps/$file (run \`ops/install-test-deps.sh --relock\`)."
    done
    local key stamp="$node_prefix/.test-deps-stamp"
    key="$(stamp_key "node $(node --version)" "$pins/package.json" "$pins/package-lock.json")"
    if [[ -d "$node_prefix/node_modules" ]] && stamp_matches "$stamp" "$key"; then
        say "node tools up to date in .tools/node"
        return
    fi

    say "installing ops/test-deps/package-lock.json from npm into .tools/node (node $(node --version))"
    rm -rf "$node_prefix"
    mkdir -p "$node_prefix"
    cp "$pins/package.json" "$pins/package-lock.json" "$node_prefix/"
    # `npm ci` installs exactly the lock file and fails if it disagrees with package.json.
    # No install scripts: these are libraries and CLIs that need none.
    npm ci --prefix "$node_prefix" --ignore-scripts --no-audit --no-fund \
        --loglevel=error </dev/null >/dev/null ||
        die "\`npm ci\` could not install ops/test-deps/package-lock.json (see npm's message above): is the npm registry reachable, and does the lock file match package.json?"

    printf '%s\n' "$key" >"$stamp"
    say "node tools installed: $(node -e '
        const deps = require(process.argv[1]).dependencies || {};
        console.log(Object.entries(deps).map(([n, v]) => n + "@" + v).join(" "));
    ' "$pins/package.json")"
}

# Fetches the pinned distribution packages with `apt-get download` and unpacks them with
# `dpkg-deb -x`: no root, no maintainer scripts, nothing outside .tools/deb. Records what
# it unpacked in .tools/deb/.installed (NAME=VERSION lines, read by tests/src/tools.rs).
install_deb_tools() {
    local list="$pins/debian-packages.txt"
    [[ -f "$list" ]] || die "missing ops/test-deps/debian-packages.txt."
    need apt-get "The Debian packages in ops/test-deps/debian-packages.txt need a Debian or Ubuntu host (apt)."
    need dpkg-deb "Install dpkg (it comes with apt)."
    local arch key stamp="$deb_root/.test-deps-stamp"
    arch="$(dpkg --print-architecture)" || die "\`dpkg --print-architecture\` failed."
    key="$(stamp_key "dpkg $arch" "$list")"
    if [[ -f "$deb_root/.installed" ]] && stamp_matches "$stamp" "$key"; then
        say "debian packages up to date in .tools/deb"
        return
    fi

    local pinned
    pinned="$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$list" | grep -v '^$')" || true
    say "unpacking ops/test-deps/debian-packages.txt into .tools/deb ($arch)"
    rm -rf "$deb_root"
    mkdir -p "$deb_root/.download"
    local pin deb
    local refreshed=0
    for pin in $pinned; do
        [[ "$pin" == *=* ]] || die "ops/test-deps/debian-packages.txt: '$pin' is not NAME=VERSION."
        until (cd "$deb_root/.download" && apt-get download --quiet "$pin" </dev/null >/dev/null); do
            # A fresh machine may have no package index yet; root can fetch it once.
            if ((refreshed == 0)) && [[ "$(id -u)" == 0 ]]; then
                refreshed=1
                say "apt-get download $pin failed; refreshing the package index (apt-get update)"
                apt-get update --quiet --quiet </dev/null >/dev/null ||
                    die "\`apt-get update\` failed (see apt's message above)."
                continue
            fi
            die "\`apt-get download $pin\` failed (see apt's message above): is the package index current (\`apt-get update\`), and does this distribution ship $pin?"
        done
    done
    for deb in "$deb_root"/.download/*.deb; do
        [[ -f "$deb" ]] || die "apt-get downloaded nothing for ops/test-deps/debian-packages.txt."
        dpkg-deb -x "$deb" "$deb_root" || die "\`dpkg-deb -x $(basename "$deb")\` failed."
        dpkg-deb -f "$deb" Package Version | awk '{ v[NR] = $2 } END { print v[1] "=" v[2] }' \
            >>"$deb_root/.installed" || die "cannot read the control fields of $(basename "$deb")."
    done
    rm -rf "$deb_root/.download"
    for pin in $pinned; do
        grep -qxF -- "$pin" "$deb_root/.installed" ||
            die "apt-get download gave $(grep -F -- "${pin%%=*}=" "$deb_root/.installed" || echo nothing) for the pin $pin."
    done

    printf '%s\n' "$key" >"$stamp"
    say "debian packages unpacked: $(paste -sd' ' - <"$deb_root/.installed")"
}

# Installs geth into .tools/bin/geth. The archive beside the checkout must gunzip to the
# pinned checksum; a binary named by $GETH (built by hand, say) cannot be held to it, so it
# must at least say it is geth $GETH_VERSION. Copied, not linked, so that the tests run
# what was checked. Nothing to install is not an error: the geth tests skip.
install_geth() {
    local target="$tools/bin/geth"
    if [[ -n "${GETH:-}" ]]; then
        [[ -x "$GETH" ]] || die "\$GETH is '$GETH', which is not an executable file."
        local version
        version="$("$GETH" version </dev/null 2>/dev/null | sed -n 's/^Version: //p')" ||
            die "\`$GETH version\` failed."
        [[ "$version" == "$GETH_VERSION"* ]] ||
            die "\$GETH is geth '${version:-unknown}'; the geth tests need $GETH_VERSION (v1.14 and later no longer seal Clique)."
        if [[ -x "$target" ]] && cmp -s "$GETH" "$target"; then
            say "geth up to date in .tools/bin (from \$GETH)"
            return
        fi
        mkdir -p "$tools/bin"
        cp "$GETH" "$target.tmp" && chmod 0755 "$target.tmp" && mv -f "$target.tmp" "$target" ||
            die "cannot copy \$GETH to .tools/bin/geth."
        say "geth $version installed from \$GETH (not checksum-pinned)"
        return
    fi
    if [[ -x "$target" && "$(sha256_of_stdin <"$target")" == "$GETH_SHA256" ]]; then
        say "geth up to date in .tools/bin"
        return
    fi
    if [[ ! -f "$geth_archive" ]]; then
        say "geth not installed, so the geth network tests will skip: put geth-$GETH_VERSION-linux-amd64.gz in ../shared/tools/geth/ beside the checkout, or set GETH to a geth $GETH_VERSION binary, and run ops/install-test-deps.sh again."
        return
    fi
    need gunzip "Install gzip."
    mkdir -p "$tools/bin"
    gunzip -c "$geth_archive" >"$target.tmp" || die "cannot gunzip $geth_archive."
    local sum
    sum="$(sha256_of_stdin <"$target.tmp")"
    if [[ "$sum" != "$GETH_SHA256" ]]; then
        rm -f "$target.tmp"
        die "$geth_archive gunzips to sha256 $sum, not the pinned $GETH_SHA256."
    fi
    chmod 0755 "$target.tmp" && mv -f "$target.tmp" "$target" || die "cannot install .tools/bin/geth."
    say "geth $GETH_VERSION installed in .tools/bin (sha256 checked)"
}

# Installs cargo-deb into .tools/cargo/bin with its own lock file (`--locked`); a few
# minutes once, then skipped while it reports the pinned version.
install_cargo_deb() {
    local bin="$tools/cargo/bin/cargo-deb"
    if [[ -x "$bin" && "$("$bin" --version 2>/dev/null)" == "cargo-deb $CARGO_DEB_VERSION" ]]; then
        say "cargo-deb up to date in .tools/cargo"
        return
    fi
    need cargo "Install Rust (rustup.rs); cargo-deb is built from crates.io."
    say "installing cargo-deb $CARGO_DEB_VERSION into .tools/cargo (cargo install --locked)"
    cargo install --quiet --locked --force --version "$CARGO_DEB_VERSION" --root "$tools/cargo" \
        cargo-deb </dev/null ||
        die "\`cargo install cargo-deb --version $CARGO_DEB_VERSION\` failed (see cargo's message above): is crates.io reachable?"
    say "cargo-deb installed: $("$bin" --version)"
}

# Regenerates the lock files from requirements.in and package.json. Resolves against the
# registries, so the result can change from day to day: review the diff before committing.
relock() {
    check_python
    check_node
    local piptools="$tools/pip-tools"
    if [[ ! -x "$piptools/bin/pip-compile" ]] ||
        ! "$piptools/bin/python" -m pip show pip-tools 2>/dev/null | grep -qx "Version: ${PIP_TOOLS_PIN#*==}"; then
        say "installing $PIP_TOOLS_PIN into .tools/pip-tools"
        rm -rf "$piptools"
        python3 -m venv "$piptools" </dev/null || die "\`python3 -m venv\` failed."
        "$piptools/bin/python" -m pip install --quiet --no-input --disable-pip-version-check \
            "$PIP_TOOLS_PIN" </dev/null || die "pip could not install $PIP_TOOLS_PIN from PyPI."
    fi

    say "compiling ops/test-deps/requirements.in -> requirements.txt (with hashes)"
    (
        cd "$pins"
        CUSTOM_COMPILE_COMMAND="ops/install-test-deps.sh --relock" \
            "$piptools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe \
            --strip-extras --no-emit-find-links --no-emit-index-url \
            --output-file requirements.txt requirements.in </dev/null
    ) || die "pip-compile could not resolve ops/test-deps/requirements.in."

    say "resolving ops/test-deps/package.json -> package-lock.json"
    # No registry URLs in the lock file: `npm ci` fetches from whatever registry is
    # configured, and the integrity hashes still pin the exact tarballs.
    npm install --prefix "$pins" --package-lock-only --ignore-scripts --no-audit --no-fund \
        --omit-lockfile-registry-resolved --loglevel=error </dev/null >/dev/null ||
        die "npm could not resolve ops/test-deps/package.json."
}

main() {
    case "${1:-}" in
    "") ;;
    --relock) ;;
    --geth) ;;
    -h | --help)
        sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        return
        ;;
    *) die "unknown argument '$1' (usage: ops/install-test-deps.sh [--relock | --geth])" ;;
    esac

    mkdir -p "$tools"
    # One installer at a time per checkout; a second waits instead of racing the first.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$tools/.install.lock"
        flock 9
    fi

    if [[ "${1:-}" == --geth ]]; then
        install_geth
        return
    fi
    if [[ "${1:-}" == --relock ]]; then
        relock
    fi
    install_python_tools
    install_node_tools
    install_deb_tools
    install_cargo_deb
    install_geth
}

main "$@"
