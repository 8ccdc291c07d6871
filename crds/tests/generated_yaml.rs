//! The committed CRD YAML (crds/ and the Helm chart's crds/) is what the code generates.

#[test]
fn committed_crd_yaml_matches_the_code() {
    let root = manifest_dir().join("..");
    let files = cmp_crds::crd_files().expect("CRDs render as YAML");
    assert_eq!(files.len(), 5, "one file per kind");
    for dir in ["crds", "charts/cmp/crds"] {
        for (name, yaml) in &files {
            let path = root.join(dir).join(name);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `cargo run -p cmp-crdgen`", path.display()));
            assert!(
                committed == *yaml,
                "{} differs from what the code generates; run `cargo run -p cmp-crdgen` and commit the result",
                path.display()
            );
        }
    }
}

/// This package's directory, as cargo gives it to the running program (a
/// path compiled in may name another checkout: cargo reuses artefacts across
/// checkouts that share a target directory).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
