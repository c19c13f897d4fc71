// dlopen with a catch around it: opening a library runs its initialisers
// (C++ static constructors), and one that throws (e.g. a custom op library
// registering an operator namespace libtorch already has) must become an
// error, not a C++ exception unwinding into Rust, which aborts the process.
//
// <dlfcn.h> is deliberately not included: glibc declares dlopen nothrow
// (__THROWNL, i.e. noexcept in C++), so the compiler would leave the call out
// of the try block's unwind table and a throw from an initialiser would call
// std::terminate instead of reaching the catch. Declared here as what it
// really is: a C function through which an exception may propagate.
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

extern "C" void* dlopen(const char* file, int mode);
extern "C" char* dlerror(void);

static char* copy_message(const std::string& message) {
  char* out = static_cast<char*>(std::malloc(message.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, message.c_str(), message.size() + 1);
  }
  return out;
}

extern "C" {

// Opens `path` with `mode`. On failure returns NULL and sets *error to a
// message to free with neuropods_dlopen_free_error, and *threw to 1 when an
// initialiser threw (0 when the loader itself refused the file).
void* neuropods_guarded_dlopen(const char* path, int mode, char** error, int* threw) {
  *error = nullptr;
  *threw = 0;
  try {
    void* handle = dlopen(path, mode);
    if (handle == nullptr) {
      const char* reason = dlerror();
      *error = copy_message(reason != nullptr ? reason : "dlopen failed");
    }
    return handle;
  } catch (const std::exception& e) {
    *threw = 1;
    *error = copy_message(e.what());
  } catch (...) {
    *threw = 1;
    *error = copy_message("an exception of unknown type");
  }
  return nullptr;
}

void neuropods_dlopen_free_error(char* error) { std::free(error); }

}  // extern "C"
