//! Every kind's `spec` and `status`. User kinds hold desired state written by people;
//! derived kinds are written by exactly one controller each and owned by a user object.

mod backup;
mod common;
mod derived;
mod domain;
mod gateway;
mod package;
mod secret;
mod server;

pub use backup::*;
pub use common::*;
pub use derived::*;
pub use domain::*;
pub use gateway::*;
pub use package::*;
pub use secret::*;
pub use server::*;
