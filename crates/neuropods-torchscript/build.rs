// Compiles the small C++ part of the backend (cpp/*.cpp) against the
// libtorch that torch-sys found, and gives the shared library an rpath into
// an installed wheel's site-packages/torch/lib.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=cpp/forward.cpp");
    println!("cargo:rerun-if-changed=cpp/libtorch_info.cpp");
    println!("cargo:rerun-if-changed=cpp/shared_allocator.cpp");
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
        .file("cpp/forward.cpp")
        .file("cpp/libtorch_info.cpp")
        .file("cpp/shared_allocator.cpp")
        .compile("neuropods_torchscript_forward");
    // Installed as site-packages/neuropods_native/backends/<this library>,
    // libtorch is at site-packages/torch/lib.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,$ORIGIN/../../torch/lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
}
