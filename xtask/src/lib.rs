//! What xtask's commands and its tests share: the buyer's journey, run by
//! `cargo xtask demo` and by `xtask/tests/journey.rs`.

pub mod journey;
