//! Validator identities and the stores that hold them, shared by `orchestrator` and `leased`.
//!
//! This crate owns every piece of key material the project touches: the secp256k1 key type,
//! its file formats, and the two store traits. It must never print, log or serialise a
//! private key except through the explicit, named export functions of [`key`] and
//! [`keyfile`], whose callers write to 0600 files or to a secret store.

pub mod azure;
pub mod config;
pub mod enode;
pub mod exit;
pub mod fsutil;
pub mod key;
pub mod keyfile;
pub mod keystore;
pub mod lease;
pub mod logging;
pub mod name;
pub mod net;
pub mod seal;
pub mod secret;
pub mod spec;

pub use key::{Address, PublicKey, ValidatorKey};
pub use name::Name;
