//! The `leased` library: the pieces of the per-VM lease daemon that the binary wires
//! together.
//!
//! [`machine`] decides (pure: no I/O, no clock); [`config`] reads and validates
//! `leased run --config FILE`; [`daemon`] carries the machine's actions out against the
//! stores and the [`guard`], the separate process that stops the client at the fence
//! deadline even when the daemon cannot; [`http`] and [`telemetry`] show what it does;
//! [`oncall`] is `leased status` and `leased break`; [`check_config`] is
//! `leased check-config`.

pub mod check_config;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod data_api;
pub mod engine_signer;
pub mod guard;
pub mod http;
pub use shared::logging;
pub mod machine;
pub mod notify;
pub mod oncall;
pub mod telemetry;
#[cfg(test)]
mod test_rpc;
