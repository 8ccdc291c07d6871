//! Writes the CMP CustomResourceDefinitions as YAML, one file per kind, into
//! `crds/` and `charts/cmp/crds/` (or the directories given), or checks that
//! the files there are up to date.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Generate the CMP CRD YAML files")]
struct Args {
    /// Only check that the files are up to date; exit 1 if any differs.
    #[arg(long)]
    check: bool,
    /// Directories to write into, relative to the workspace root.
    #[arg(default_values = ["crds", "charts/cmp/crds"])]
    dirs: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = manifest_dir().join("../..");
    let files = cmp_crds::crd_files().context("rendering the CRDs as YAML")?;
    let mut stale = Vec::new();
    for dir in &args.dirs {
        let dir = root.join(dir);
        for (name, yaml) in &files {
            let path = dir.join(name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == *yaml {
                continue;
            }
            if args.check {
                stale.push(path.display().to_string());
            } else {
                std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        bail!("out of date: {}; run `cargo run -p cmp-crdgen`", stale.join(", "));
    }
    Ok(())
}

/// This package's directory, as cargo gives it to the running program (a
/// path compiled in may name another checkout: cargo reuses artefacts across
/// checkouts that share a target directory).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
