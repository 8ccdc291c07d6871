//! promtool, Prometheus's rule checker and rule unit-test runner, built once
//! from Go modules into the cache by `xtask/go/promtool.sh`.

use std::path::PathBuf;

use crate::Error;

/// The `promtool` binary, building it first when it is missing (a few minutes on 2 cores, once).
pub fn binary() -> Result<PathBuf, Error> {
    Ok(crate::control_plane::run_install_script("xtask/go/promtool.sh", &[])?.join("promtool"))
}
