// Installed as site-packages/neuropods_native/backends/<this library>, the
// TF C API libraries are in site-packages/tensorflow.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,$ORIGIN/../../tensorflow");
}
