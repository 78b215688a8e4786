//! Every side effect the container controller has on the host machine, each behind a
//! narrow async trait with a real implementation (the host's own tools) and a recording
//! fake for unit tests:
//!
//! - [`lxc::Lxc`]: unprivileged, id-mapped LXC containers under our own LXC path;
//! - [`mount::Mounter`]: squashfs images loop-mounted by offset, overlays, bind mounts,
//!   and listings of our mounts and loop devices;
//! - [`net::Network`]: the bridge containers attach to;
//! - [`idmap`] and [`net::AddressPlan`]: pure allocators of host id ranges and container
//!   addresses.
//!
//! Nothing here decides anything: callers (the controllers) own the policy.

pub mod cmd;
pub mod idmap;
pub mod lxc;
pub mod mount;
pub mod net;
