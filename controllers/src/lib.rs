//! Controllers: the in-house runtime ([`runtime`]) and the controllers built on it.
//!
//! - [`gc`]: deletes dependents whose owners (by uid) are all gone.
//! - [`validity`]: `Valid` on every object; `Reconciling` and `Ready` summaries on user
//!   objects, fed by the conditions other controllers write; `Ready` follows the kind's own
//!   controller (`crds::condition::Readiness`).
//! - [`container`]: package containers; so far [`container::plan`], what one runs
//!   (`start-container`'s configuration and action command lines) planned from the manifest.
//! - [`action`]: runs `ActionRun`s in their package's container, at most once each.
//! - [`registry`]: scans `Registry` directories and lists the packages they offer.
//! - [`effects`]: the per-container socket through which a package's processes change
//!   the package's own objects.
//! - [`package`]: installs `Package` archives, derives what runs them and reports on it.
//!
//! Invariant: controllers talk to each other only through resources in the store, write only
//! status and the derived kinds they own, and never serve HTTP.

pub mod action;
pub mod archives;
pub mod container;
pub mod effects;
pub mod file_watch;
pub mod gc;
pub mod layout;
pub mod package;
pub mod registry;
pub mod runtime;
pub mod validity;
