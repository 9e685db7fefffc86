//! Test-only code shared by the integration tests: the conformance suites every backend
//! runs, and the helpers that find the external interop tools.
//!
//! Nothing here is linked into a shipped binary.

pub mod azurite;
pub mod chaos;
pub mod cluster;
pub mod etcd_lock;
pub mod fake_rpc;
pub mod fault_proxy;
pub mod geth;
pub mod kv_double;
pub mod lease_conformance;
pub mod memory_store;
pub mod overlap;
pub mod secret_conformance;
pub mod sim;
pub mod standin;
pub mod tls;
pub mod tools;

/// A binary of this crate (`standin-client`, `leased-host`, …), next to the test binary
/// that asks: cargo builds a package's binaries before its integration tests.
pub fn bin_path(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("test binaries live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test -p integration-tests`, which builds it",
        path.display()
    );
    path
}

/// An error and its causes, one after another (an HTTP client's error says little alone).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs `future` to completion on a thread and a runtime of its own, for synchronous
/// helpers (Azurite's, a JSON-RPC poll) that are called from synchronous tests and from
/// inside a test's runtime (where another runtime cannot block) alike.
pub fn on_own_runtime<T: Send>(future: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime of its own")
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
