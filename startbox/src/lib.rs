//! The one StartOS binary as a library: [`daemon`] (`startd`) and [`cli`] (`start-cli`).
//! `main.rs` only picks the personality; everything testable lives here.

pub mod cli;
pub mod daemon;
pub mod host_setup;
pub mod logging;
pub mod logs;
pub mod serve;
