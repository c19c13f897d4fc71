// Compiles the C++ guard around dlopen (cpp/dlopen_guard.cpp): only C++ can
// catch a C++ exception thrown by a library's initialiser.
fn main() {
    println!("cargo:rerun-if-changed=cpp/dlopen_guard.cpp");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .flag("-std=c++17")
        .file("cpp/dlopen_guard.cpp")
        .compile("neuropods_dlopen_guard");
}
