// Records the Python version this backend is compiled for (pyo3 builds
// against one interpreter's ABI), so that an embedded interpreter of
// another version is refused before it starts.
fn main() {
    let version = pyo3_build_config::get().version();
    println!(
        "cargo:rustc-env=NEUROPODS_PYTHON_BUILT_FOR={}.{}",
        version.major, version.minor
    );
}
