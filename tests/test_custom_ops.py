"""Custom op libraries: a real TORCH_LIBRARY op compiled here with
torch.utils.cpp_extension (once per session: the compile takes a minute),
packaged with its model.

The process that scripts such a model has the op library loaded, so the
packager's self-test opens the package's copy of a library whose operator
namespace is already registered: libtorch throws from that library's
initialiser, which used to abort the process ("Rust cannot catch foreign
exceptions"). A library with the same contents is now not opened twice; a
different library registering the same namespace is a PackageError naming
it, raised before it is opened, or, when its symbol table is stripped, by
the C++ guard around dlopen (tested in a child process: glibc keeps its
loader lock after such a throw, see docs/reliability.md)."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import neuropods_native
from helpers import load, script
from neuropods.packagers import create_torchscript_neuropod

NAMESPACE = "neuropods_test_ops"

OP_SOURCE = """
#include <ATen/ATen.h>
#include <torch/library.h>

at::Tensor add_offset(const at::Tensor& x) { return x + OFFSET; }

TORCH_LIBRARY(neuropods_test_ops, m) { m.def("add_offset(Tensor x) -> Tensor", add_offset); }
"""

BUILD_SCRIPT = """
import sys
from torch.utils import cpp_extension
name, source, offset, build_dir = sys.argv[1:]
cpp_extension.load(name=name, sources=[source], extra_cflags=[f"-DOFFSET={offset}"],
                   is_python_module=False, build_directory=build_dir)
"""

SPEC_IN = [{"name": "x", "dtype": "float32", "shape": ("n",)}]
SPEC_OUT = [{"name": "out", "dtype": "float32", "shape": ("n",)}]
X = np.arange(4, dtype=np.float32)


def _build_env():
    import ninja

    env = dict(os.environ)
    # cpp_extension runs `ninja` from PATH; the pip package puts it beside the venv's python.
    env["PATH"] = ninja.BIN_DIR + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="session")
def op_libraries(tmp_path_factory):
    """{"v1": library adding 3, "v2": another library registering the same
    namespace (adding 4), "v2_stripped": v2 without its symbol table}.
    Compiled in child processes, which load them there (cpp_extension
    loads what it builds) instead of in this one."""
    root = tmp_path_factory.mktemp("custom_ops")
    source = root / "ops.cpp"
    source.write_text(OP_SOURCE)
    builds = {}
    for key, offset in (("v1", 3), ("v2", 4)):
        build_dir = root / key
        build_dir.mkdir()
        name = f"lib{NAMESPACE}_{key}"
        builds[key] = (
            subprocess.Popen(
                [sys.executable, "-c", BUILD_SCRIPT, name, str(source), str(offset), str(build_dir)],
                env=_build_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            ),
            build_dir / f"{name}.so",
        )
    libraries = {}
    for key, (process, library) in builds.items():
        output, _ = process.communicate(timeout=900)
        assert process.returncode == 0 and library.is_file(), output
        libraries[key] = str(library)
    stripped = root / f"lib{NAMESPACE}_v2_stripped.so"
    subprocess.run(["strip", "--strip-all", "-o", str(stripped), libraries["v2"]], check=True)
    libraries["v2_stripped"] = str(stripped)
    return libraries


@pytest.fixture(scope="session")
def scripted_op_model(op_libraries):
    """A scripted module calling the op; scripting needs the op registered,
    so this process loads v1, as any process that scripts such a model does."""
    torch.ops.load_library(op_libraries["v1"])

    class AddOffset(torch.nn.Module):
        def forward(self, x):
            return {"out": torch.ops.neuropods_test_ops.add_offset(x)}

    return script(AddOffset())


def _package(path, module, op_library, **kwargs):
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        create_torchscript_neuropod(
            path, "add_offset", module=module, input_spec=SPEC_IN, output_spec=SPEC_OUT,
            custom_ops=[op_library], **kwargs,
        )
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("as_zip", [False, True])
def test_self_test_runs_in_the_process_that_scripted_the_model(tmp_path, op_libraries, scripted_op_model, as_zip):
    """The case that aborted: the package's copy of v1 is recognised by its
    contents and not opened again; the self-test runs the op."""
    path = _package(
        tmp_path / ("pkg.zip" if as_zip else "pkg"), scripted_op_model, op_libraries["v1"],
        package_as_zip=as_zip, test_input_data={"x": X}, test_expected_out={"out": X + 3},
    )
    # Loading it again (a zip: a fresh extraction folder, another copy) works too.
    with load(path) as model:
        np.testing.assert_array_equal(model.infer({"x": X})["out"], X + 3)


@pytest.mark.slow
def test_the_package_runs_in_a_fresh_process(tmp_path, op_libraries, scripted_op_model):
    """A process without the op: the package's own library is opened and its op runs."""
    path = _package(tmp_path / "pkg", scripted_op_model, op_libraries["v1"])
    code = f"""
        import sys
        import numpy as np
        from neuropods.loader import load_neuropod
        with load_neuropod({path!r}) as model:
            out = model.infer({{"x": np.arange(4, dtype=np.float32)}})["out"]
        print(out.tolist())
        assert "torch" not in sys.modules
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str((X + 3).tolist())


@pytest.mark.slow
def test_another_library_with_a_taken_namespace_is_a_package_error(tmp_path, op_libraries, scripted_op_model):
    """v2 registers the namespace v1 holds in this process: refused before it
    is opened (its symbol table names the namespace; the dispatcher says it is
    taken), so this process stays healthy."""
    path = _package(tmp_path / "pkg", scripted_op_model, op_libraries["v2"])
    with pytest.raises(neuropods_native.PackageError) as info:
        load(path)
    message = str(info.value)
    assert f"custom op lib{NAMESPACE}_v2.so" in message, message
    assert f"`{NAMESPACE}`" in message and "already registered" in message, message
    # The process goes on: v1's package still loads and runs.
    v1 = _package(tmp_path / "v1", scripted_op_model, op_libraries["v1"])
    with load(v1) as model:
        np.testing.assert_array_equal(model.infer({"x": X})["out"], X + 3)


@pytest.mark.slow
def test_an_initialiser_that_throws_is_an_error_not_an_abort(tmp_path, op_libraries, scripted_op_model):
    """A stripped v2 cannot be checked before opening: its initialiser throws
    libtorch's error inside dlopen, and the C++ guard turns it into a
    PackageError naming the library. In a child process, because glibc then
    keeps its loader lock (the error says so)."""
    path = _package(tmp_path / "pkg", scripted_op_model, op_libraries["v2_stripped"])
    code = f"""
        import torch
        import neuropods_native
        from neuropods.loader import load_neuropod
        torch.ops.load_library({op_libraries["v1"]!r})
        try:
            load_neuropod({path!r})
        except neuropods_native.PackageError as e:
            print(type(e).__name__, e)
        else:
            print("loaded")
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("PackageError"), out
    assert f"custom op lib{NAMESPACE}_v2_stripped.so" in out, out
    assert "initialiser threw a C++ exception" in out, out
    assert f"Only a single TORCH_LIBRARY can be used to register the namespace {NAMESPACE}" in out, out
    assert "frame #" not in out, out


# A TensorFlow op library, compiled here against the tensorflow wheel's
# headers (about 12 s): out = x + 1.
TF_OP_SOURCE = r"""
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

REGISTER_OP("NeuropodsTestAddOne")
    .Input("x: float")
    .Output("y: float")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

class NeuropodsTestAddOne : public tensorflow::OpKernel {
 public:
  explicit NeuropodsTestAddOne(tensorflow::OpKernelConstruction* context) : OpKernel(context) {}
  void Compute(tensorflow::OpKernelContext* context) override {
    const tensorflow::Tensor& input = context->input(0);
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, input.shape(), &output));
    auto in = input.flat<float>();
    auto out = output->flat<float>();
    for (int64_t i = 0; i < in.size(); ++i) out(i) = in(i) + 1.0f;
  }
};

REGISTER_KERNEL_BUILDER(Name("NeuropodsTestAddOne").Device(tensorflow::DEVICE_CPU), NeuropodsTestAddOne);
"""

# Makes the package in a process of its own (tf.load_op_library registers
# the op there, not in the test process): a frozen graph using the op.
TF_PACKAGE_SCRIPT = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
from neuropods.packagers import create_tensorflow_neuropod
library, path = sys.argv[1:]
ops = tf.load_op_library(library)
graph = tf.Graph()
with graph.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
    tf.identity(ops.neuropods_test_add_one(x), name="out")
spec_in = [{"name": "x", "dtype": "float32", "shape": ("n",)}]
spec_out = [{"name": "out", "dtype": "float32", "shape": ("n",)}]
create_tensorflow_neuropod(
    neuropod_path=path, model_name="add_one", input_spec=spec_in, output_spec=spec_out,
    node_name_mapping={"x": "x:0", "out": "out:0"}, graph_def=graph.as_graph_def(),
    custom_ops=[library], package_as_zip=False,
)
"""


@pytest.fixture(scope="session")
def tf_op_package(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tf_op")
    (folder / "add_one.cc").write_text(TF_OP_SOURCE)
    flags = subprocess.run(
        [sys.executable, "-c", "import tensorflow as tf; print(' '.join(tf.sysconfig.get_compile_flags() "
         "+ tf.sysconfig.get_link_flags()))"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout.split()
    library = folder / "libneuropods_test_add_one.so"
    subprocess.run(["g++", "-shared", "-fPIC", "-O1", "-w", str(folder / "add_one.cc"), "-o", str(library), *flags],
                   check=True, timeout=600)
    package = folder / "add_one"
    made = subprocess.run([sys.executable, "-c", TF_PACKAGE_SCRIPT, str(library), str(package)],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    return str(package)


@pytest.mark.slow
@pytest.mark.parametrize("use_ope", [False, True], ids=["fresh_process", "ope_worker"])
def test_a_tensorflow_op_library_in_the_package_is_loaded_with_it(tf_op_package, use_ope):
    """The backend opens the package's op library (TF_LoadLibrary) before
    reading the graph: in a process where TensorFlow never saw the op, and
    in a worker. Before, custom_ops was ignored and the graph's op was
    unknown."""
    code = f"""
        import sys
        import numpy as np
        from neuropods.loader import load_neuropod
        with load_neuropod({tf_op_package!r}, use_ope={use_ope}) as model:
            print(model.infer({{"x": np.arange(4, dtype=np.float32)}})["out"].tolist())
        assert "tensorflow" not in sys.modules
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str((X + 1).tolist())


@pytest.mark.slow
def test_a_tensorflow_op_library_that_does_not_load_is_a_package_error(tf_op_package, tmp_path):
    package = shutil.copytree(tf_op_package, tmp_path / "broken")
    library = next((package / "0" / "ops").iterdir())
    library.write_bytes(b"not a shared library")
    with pytest.raises(neuropods_native.PackageError, match=f"custom op {library.name}: .*{library.name}"):
        load(package)
