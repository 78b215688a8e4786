//! `start-container`, the supervisor that runs as PID 1 inside every package container:
//! its configuration ([`config`]), the supervision logic ([`supervisor`]) and the real
//! process, probe, log and status implementations it runs on.

pub mod config;
pub mod control;
pub mod effects_cli;
pub mod exec_in;
pub mod logs;
pub mod real;
pub mod reaper;
pub mod status;
pub mod supervisor;
