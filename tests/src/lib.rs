//! Test-only code shared by the integration tests: the conformance suites every backend
//! runs, and the helpers that find the external interop tools.
//!
//! Nothing here is linked into a shipped binary.

pub mod lease_conformance;
pub mod overlap;
pub mod secret_conformance;
pub mod tools;
