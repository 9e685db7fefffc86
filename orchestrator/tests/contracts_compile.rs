//! The committed contract artifacts are what the pinned compiler makes of the committed
//! source: recompiles `orchestrator/contracts/ValidatorGovernance.sol` with solc-js from
//! `.tools/node` (installed by `ops/install-test-deps.sh`) and compares every artifact byte
//! for byte. A missing tool fails the test; it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::tools;

const ARTIFACTS: [&str; 4] = [
    "ValidatorGovernance.init.hex",
    "ValidatorGovernance.runtime.hex",
    "ValidatorGovernance.abi.json",
    "ValidatorGovernance.storage.json",
];

fn contracts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts")
}

/// The exact solc version pinned in ops/test-deps/package.json.
fn pinned_solc() -> String {
    let path = tools::workspace_root().join("ops/test-deps/package.json");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read ops/test-deps/package.json"))
            .expect("ops/test-deps/package.json is JSON");
    manifest["dependencies"]["solc"]
        .as_str()
        .expect("ops/test-deps/package.json pins solc")
        .to_owned()
}

#[test]
fn committed_artifacts_are_what_the_pinned_solc_compiles() {
    // Panics, naming ops/install-test-deps.sh, unless every npm pin (solc among them) is
    // installed at its pinned version.
    let modules = tools::node_modules();
    let out = tempfile::tempdir().expect("create a temporary directory");
    let run = Command::new("node")
        .env("NODE_PATH", &modules)
        .arg(contracts_dir().join("compile.cjs"))
        .arg(out.path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start `node` ({e}): install Node.js, then run `ops/install-test-deps.sh`"
            )
        });
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "compile.cjs failed: {stderr}");
    assert!(
        stderr.contains(&format!("with solc {}+", pinned_solc())),
        "compiled with another solc than the pinned one: {stderr}"
    );

    let mut written: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let mut expected = ARTIFACTS.map(String::from).to_vec();
    expected.sort();
    assert_eq!(
        written, expected,
        "compile.cjs writes exactly the artifacts"
    );

    for name in ARTIFACTS {
        let fresh = std::fs::read(out.path().join(name)).unwrap();
        let committed = std::fs::read(contracts_dir().join(name))
            .unwrap_or_else(|e| panic!("committed artifact {name}: {e}"));
        assert!(
            fresh == committed,
            "{name} differs from a fresh compile: run \
             `NODE_PATH=.tools/node/node_modules node orchestrator/contracts/compile.cjs` \
             and commit the result"
        );
    }
}

/// The source's pragma names the same exact version, so nobody compiles it with another.
#[test]
fn source_pragma_is_the_pinned_solc() {
    let source = std::fs::read_to_string(contracts_dir().join("ValidatorGovernance.sol")).unwrap();
    let pragma = format!("pragma solidity {};", pinned_solc());
    assert!(
        source.lines().any(|l| l.trim() == pragma),
        "ValidatorGovernance.sol must say `{pragma}`"
    );
}
