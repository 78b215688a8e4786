//! Controllers: the in-house runtime ([`runtime`]) and the controllers built on it.
//!
//! Invariant: controllers talk to each other only through resources in the store, write only
//! status and the derived kinds they own, and never serve HTTP.

pub mod runtime;
