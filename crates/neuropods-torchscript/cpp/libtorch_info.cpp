// What the backend asks libtorch about itself, in C++ because the answers
// are a header macro and the dispatcher: the version of the headers the
// backend was compiled against, and whether an operator namespace is taken.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/headeronly/version.h>

extern "C" {

// The libtorch version this backend was compiled against, e.g. "2.13.0".
const char* npt_built_torch_version() { return TORCH_VERSION; }

// Whether a TORCH_LIBRARY block has registered namespace `ns` in this
// process: 1 yes, 0 no, -1 unknown. Asks the dispatcher the way a library's
// initialiser would (registerLibrary throws for a taken namespace); when it
// is free, the probe's handle gives it back at once.
int npt_operator_namespace_taken(const char* ns) {
  try {
    auto probe = c10::Dispatcher::singleton().registerLibrary(
        ns, "neuropods: probe before opening a custom op library");
    return 0;
  } catch (const c10::Error&) {
    return 1;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
