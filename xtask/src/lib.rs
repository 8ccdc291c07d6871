//! What xtask's commands and its tests share: the buyer's journey, run by
//! `cargo xtask demo` and by `xtask/tests/journey.rs`; the CMP image and the
//! runtime image, built by `cargo xtask image` and run by `xtask/tests/image.rs`.

pub mod image;
pub mod journey;
pub mod oci;
pub mod runtime_image;
