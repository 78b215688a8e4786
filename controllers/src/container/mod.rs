//! The container controller: one LXC container per package, running `start-container`.

pub mod plan;
