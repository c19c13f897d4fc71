// Calls a TorchScript module's `forward` the way Neuropods needs and tch
// cannot: inputs matched to arguments by name (or packed into the one Dict
// argument, typed as the schema declares it), under InferenceMode, and every
// output reported with its name (dict key, namedtuple field) or position.
#include <torch/csrc/jit/runtime/jit_exception.h>
#include <torch/script.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

extern "C" {

// One input: a tensor (an at::Tensor*, as tch's C_tensor) or a list of strings.
struct npt_input {
  const char* name;
  size_t name_len;
  const at::Tensor* tensor;
  const char* const* strings;
  const size_t* string_lens;
  size_t nstrings;
};

// Receives an output tensor; the receiver owns the new at::Tensor.
typedef void (*npt_emit_tensor)(void* ctx, const char* name, size_t name_len, int64_t position,
                                at::Tensor* tensor);
// Receives an output list of strings, valid during the call only.
typedef void (*npt_emit_strings)(void* ctx, const char* name, size_t name_len, int64_t position,
                                 const char* const* strings, const size_t* lens, size_t count);

static char* npt_error(const std::string& message) {
  char* out = static_cast<char*>(std::malloc(message.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, message.c_str(), message.size() + 1);
  }
  return out;
}

// libtorch's TorchScript interpreter writes this line, then the model's
// TorchScript stack (its code, with the packager's source paths), then
// "<class>: <message>", the exception's own line.
static const char kInterpreterHeader[] = "The following operation failed in the TorchScript interpreter.";

// The failure of forward as two texts: the exception's own line, for a
// client, returned; and all of libtorch's text, for logs, in `*detail`
// (left NULL when the two are the same). A `raise` in TorchScript comes as
// a JITException, which keeps its class and message apart; an op's failure
// comes as the interpreter's RuntimeError.
static char* npt_failure(const std::string& text, std::string own_line, char** detail) {
  if (own_line.empty() && text.rfind(kInterpreterHeader, 0) == 0) {
    const auto at = text.rfind("\nRuntimeError: ");
    if (at != std::string::npos) {
      own_line = text.substr(at + 1);
    }
  }
  while (!own_line.empty() && (own_line.back() == '\n' || own_line.back() == ' ')) {
    own_line.pop_back();
  }
  if (own_line.empty() || own_line == text) {
    return npt_error(text);
  }
  *detail = npt_error(text);
  return npt_error(own_line);
}

static c10::IValue to_ivalue(const npt_input& in) {
  if (in.tensor != nullptr) {
    return c10::IValue(*in.tensor);
  }
  c10::List<std::string> list;
  list.reserve(in.nstrings);
  for (size_t i = 0; i < in.nstrings; ++i) {
    list.push_back(std::string(in.strings[i], in.string_lens[i]));
  }
  return c10::IValue(list);
}

// Reports one output value; returns an error message or "".
static std::string emit(const c10::IValue& value, const std::string& name, int64_t position,
                        void* ctx, npt_emit_tensor on_tensor, npt_emit_strings on_strings) {
  if (value.isTensor()) {
    on_tensor(ctx, name.data(), name.size(), position, new at::Tensor(value.toTensor()));
    return "";
  }
  if (value.isList()) {
    std::vector<std::string> strings;
    for (const auto& item : value.toListRef()) {
      if (!item.isString()) {
        return "output '" + name + "' is a list of " + item.tagKind() +
               ", expected a tensor or a list of strings";
      }
      strings.push_back(item.toStringRef());
    }
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (const auto& s : strings) {
      ptrs.push_back(s.data());
      lens.push_back(s.size());
    }
    on_strings(ctx, name.data(), name.size(), position, ptrs.data(), lens.data(), strings.size());
    return "";
  }
  return "output '" + name + "' (position " + std::to_string(position) + ") is a " +
         value.tagKind() + ", expected a tensor or a list of strings";
}

// Why a call by name cannot be made, or "": an input forward has no
// argument of, or an argument without a default that no input fills (then
// `*missing` is set: the caller's mistake). Checked before the call, since
// libtorch's own message for these is a schema dump with C++ frames.
static std::string check_arguments(const std::vector<c10::Argument>& arguments,
                                   const torch::jit::Kwargs& kwargs, int* missing) {
  std::string names;
  // arguments[0] is self.
  for (size_t a = 1; a < arguments.size(); ++a) {
    names += (a > 1 ? ", " : "") + arguments[a].name();
  }
  for (const auto& given : kwargs) {
    bool taken = false;
    for (size_t a = 1; a < arguments.size(); ++a) {
      taken = taken || arguments[a].name() == given.first;
    }
    if (!taken) {
      return "input '" + given.first + "' is not an argument of the model's forward (its arguments: " +
             names + ")";
    }
  }
  for (size_t a = 1; a < arguments.size(); ++a) {
    if (!arguments[a].default_value() && kwargs.find(arguments[a].name()) == kwargs.end()) {
      *missing = 1;
      return "missing input '" + arguments[a].name() + "': the model's forward requires it (its arguments: " +
             names + ")";
    }
  }
  return "";
}

// Runs forward; returns NULL on success or an error message to free with
// npt_free_error, and sets `*missing_input` when the message is about an
// input the caller left out. libtorch's errors come without their C++
// backtrace (frames, library paths, load addresses): a message to show;
// the interpreter's TorchScript stack goes to `*detail` (see npt_failure),
// also to free with npt_free_error.
char* npt_forward(void* module, const npt_input* inputs, size_t count, void* ctx,
                  npt_emit_tensor on_tensor, npt_emit_strings on_strings, int* missing_input,
                  char** detail) {
  try {
    c10::InferenceMode guard;
    auto* m = static_cast<torch::jit::Module*>(module);
    torch::jit::Method forward = m->get_method("forward");
    const auto& arguments = forward.function().getSchema().arguments();
    std::vector<c10::IValue> stack;
    torch::jit::Kwargs kwargs;
    // arguments[0] is self.
    if (arguments.size() == 2 && arguments[1].type()->kind() == c10::TypeKind::DictType) {
      auto dict_type = arguments[1].type()->expect<c10::DictType>();
      c10::impl::GenericDict dict(dict_type->getKeyType(), dict_type->getValueType());
      for (size_t i = 0; i < count; ++i) {
        dict.insert(std::string(inputs[i].name, inputs[i].name_len), to_ivalue(inputs[i]));
      }
      stack.emplace_back(std::move(dict));
    } else {
      for (size_t i = 0; i < count; ++i) {
        kwargs.emplace(std::string(inputs[i].name, inputs[i].name_len), to_ivalue(inputs[i]));
      }
      std::string problem = check_arguments(arguments, kwargs, missing_input);
      if (!problem.empty()) return npt_error(problem);
    }
    c10::IValue out = forward(std::move(stack), kwargs);

    std::string problem;
    if (out.isGenericDict()) {
      for (const auto& entry : out.toGenericDict()) {
        if (!entry.key().isString()) {
          return npt_error("forward returned a dict with non-string keys");
        }
        problem = emit(entry.value(), entry.key().toStringRef(), -1, ctx, on_tensor, on_strings);
        if (!problem.empty()) return npt_error(problem);
      }
    } else if (out.isTuple()) {
      const auto& elements = out.toTupleRef().elements();
      auto tuple_type = out.type()->cast<c10::TupleType>();
      const bool named = tuple_type && tuple_type->schema();
      for (size_t i = 0; i < elements.size(); ++i) {
        std::string name = named ? tuple_type->schema()->arguments().at(i).name() : "";
        problem = emit(elements[i], name, static_cast<int64_t>(i), ctx, on_tensor, on_strings);
        if (!problem.empty()) return npt_error(problem);
      }
    } else {
      problem = emit(out, "", 0, ctx, on_tensor, on_strings);
      if (!problem.empty()) return npt_error(problem);
    }
    return nullptr;
  } catch (const torch::jit::JITException& e) {
    std::string own_line;
    if (auto message = e.getOriginalMsg()) {
      own_line = e.getPythonClassName().value_or("RuntimeError") + ": " + *message;
    }
    return npt_failure(e.what(), own_line, detail);
  } catch (const c10::Error& e) {
    return npt_failure(e.what_without_backtrace(), "", detail);
  } catch (const std::exception& e) {
    return npt_failure(e.what(), "", detail);
  } catch (...) {
    return npt_error("unknown C++ exception in forward");
  }
}

// A CPU tensor over `data` (no copy) whose storage holds `owner` until
// libtorch frees it: a module that keeps the tensor (an attribute, a cache)
// keeps the memory alive. `owner` is released exactly once on every path:
// the maker's context holds it from the first statement (released if making
// the tensor fails), then the storage's DataPtr does. A context with a plain
// deleter function costs no allocation of its own, unlike from_blob's
// std::function deleter. Returns NULL and sets `*error` on failure.
at::Tensor* npt_from_blob(void* data, const int64_t* dims, size_t rank, int8_t scalar_type,
                          void* owner, void (*release)(void*), char** error) {
  try {
    at::Tensor tensor = at::for_blob(data, at::IntArrayRef(dims, rank))
                            .context(owner, release)
                            .options(at::TensorOptions().dtype(static_cast<at::ScalarType>(scalar_type)))
                            .make_tensor();
    return new at::Tensor(std::move(tensor));
  } catch (const c10::Error& e) {
    *error = npt_error(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *error = npt_error(e.what());
  } catch (...) {
    *error = npt_error("unknown C++ exception wrapping an input tensor");
  }
  return nullptr;
}

void npt_free_error(char* message) { std::free(message); }

}  // extern "C"
