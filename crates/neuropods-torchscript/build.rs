// Compiles the small C++ part of the backend (cpp/*.cpp) against the
// libtorch that torch-sys found, and gives the shared library an rpath into
// an installed wheel's site-packages/torch/lib.
use std::path::PathBuf;

const CPP_FILES: [&str; 3] = ["forward.cpp", "libtorch_info.cpp", "shared_allocator.cpp"];

fn main() {
    // This script also builds the per-torch-version crates in torch-*/,
    // whose manifests sit one folder below the sources.
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let cpp = [manifest_dir.join("cpp"), manifest_dir.join("../cpp")]
        .into_iter()
        .find(|d| d.is_dir())
        .expect("cpp/ beside or above the manifest");
    for file in CPP_FILES {
        println!("cargo:rerun-if-changed={}", cpp.join(file).display());
    }
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys reports DEP_TCH_LIBTORCH_LIB"),
    );
    let root = lib
        .parent()
        .expect("libtorch lib folder has a parent")
        .to_path_buf();
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .files(CPP_FILES.iter().map(|f| cpp.join(f)))
        .compile("neuropods_torchscript_forward");
    // Installed as site-packages/neuropods_native/backends/<this library>,
    // libtorch is at site-packages/torch/lib.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,$ORIGIN/../../torch/lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
}
