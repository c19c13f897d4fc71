//! Any bytes opened as a zip package are an error or a package extracted
//! inside its private folder, which is removed when the package is dropped;
//! nothing is ever written elsewhere.
#![no_main]
use libfuzzer_sys::fuzz_target;
use neuropods_core::package::{Package, ZipLimits};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The system temp dir, read before this target points TMPDIR elsewhere.
fn base() -> &'static PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(std::env::temp_dir)
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir_in(base()).expect("temp dir");
    let input = dir.path().join("package.zip");
    std::fs::write(&input, data).expect("write the input");
    // Extraction folders are made under TMPDIR: put them here, to see what
    // is left behind and whether anything lands beside them.
    let extract = dir.path().join("tmp");
    std::fs::create_dir(&extract).expect("extraction dir");
    std::env::set_var("TMPDIR", &extract);
    // Small limits keep a run fast; the checks are the same at any size.
    let limits = ZipLimits {
        max_total_bytes: 16 << 20,
        max_ratio: 1000,
    };
    if let Ok(package) = Package::open_with_limits(&input, limits) {
        let _ = package.backend_config();
        let _ = package.verify_manifest();
    }
    let left: Vec<_> = std::fs::read_dir(&extract).expect("read dir").collect();
    assert!(left.is_empty(), "extraction folder left behind: {left:?}");
    let beside: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert_eq!(
        beside.len(),
        2,
        "something was written outside the package folder: {beside:?}"
    );
});
