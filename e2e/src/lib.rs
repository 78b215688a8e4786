//! End-to-end: `startd` driven as a process, on a data directory and a host network of
//! the test's own, against the real kernel (LXC, loop mounts, a bridge). The benchmarks
//! start `startd` through the same [`daemon`] launcher.
//!
//! - [`daemon`]: spawning `startd`, reading what it prints, stopping or killing it, and
//!   reading its footprint from `/proc`.
//! - [`dav`]: CalDAV requests to a Radicale server, and an event to store.
//! - [`rig`]: a host configuration no other test shares (bridge, subnet, container prefix,
//!   id range), the binaries under test, packing a package, and waiting on conditions.

pub mod daemon;
pub mod dav;
pub mod rig;
