//! The C++ guard around dlopen, with a real library whose static initialiser
//! throws (compiled here with the system's C++ compiler): opening it is an
//! error naming the library and the exception, not an abort.
//!
//! Without libtest's harness (`harness = false`): after such a throw glibc
//! keeps its loader lock held by the opening thread (see
//! `backend::library`), so dlopen from any other thread blocks, and so does
//! `exit` from another thread (`_dl_fini` takes that lock). libtest runs
//! each test on a thread of its own and exits from the main one: it would
//! hang after the test passed. Here the main thread opens, checks and exits.

use std::path::Path;
use std::process::Command;

use neuropods_core::backend::library::{open, Scope};

const THROWING_LIBRARY: &str = r#"
#include <stdexcept>
#include <string>
// Not inlined, like libtorch's registerLibrary called from TORCH_LIBRARY's
// static object.
[[gnu::noinline]] void register_namespace(const std::string& ns) {
  throw std::runtime_error("namespace " + ns + " is already registered");
}
struct Registration {
  explicit Registration(const char* ns) { register_namespace(ns); }
};
static Registration registration("guard_test");
extern "C" int never_reached() { return 1; }
"#;

fn compile(dir: &Path) -> std::path::PathBuf {
    let source = dir.join("throwing.cpp");
    let library = dir.join("libthrowing_init.so");
    std::fs::write(&source, THROWING_LIBRARY).unwrap();
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let status = Command::new(&compiler)
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&library)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(status.success(), "{compiler} failed");
    library
}

fn main() {
    an_initialiser_that_throws_is_an_error();
    println!("test an_initialiser_that_throws_is_an_error ... ok");
}

fn an_initialiser_that_throws_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let library = compile(dir.path());
    let Err(err) = open(&library, Scope::Global) else {
        panic!("opening a library whose initialiser throws must fail");
    };
    assert!(err.contains("libthrowing_init.so"), "{err}");
    assert!(err.contains("initialiser threw a C++ exception"), "{err}");
    assert!(
        err.contains("namespace guard_test is already registered"),
        "{err}"
    );
    assert!(err.contains("restart the process"), "{err}");
    // This thread goes on, and can still open libraries.
    assert!(open(Path::new("libm.so.6"), Scope::Local).is_ok());
}
