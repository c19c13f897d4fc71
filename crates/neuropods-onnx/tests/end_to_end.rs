//! ONNX packages made by the `onnx` package (the venv's python:
//! `NEUROPODS_PYTHON`, else `python3` on `PATH`, as the core finds it), run
//! from Rust on the ONNX Runtime that `NEUROPODS_ONNXRUNTIME_DIR` names (as
//! scripts/test.sh sets it): a graph with a symbolic batch dim, one with
//! strings, bool and float16 outputs, an input lent unaligned, and specs
//! that disagree with a graph.

use std::path::Path;
use std::process::Command;

use neuropods_core::backend::registry::{self, python_executable};
use neuropods_core::{Buffer, DType, Error, LoadOptions, Neuropod, Platform, Tensor, TensorMap};

const MAKE_PACKAGES: &str = r#"
import json, os, sys
import numpy as np
from onnx import TensorProto, helper, numpy_helper, save

root = sys.argv[1]

def package(name, graph, config):
    os.makedirs(os.path.join(root, name, "0", "data"))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, os.path.join(root, name, "0", "data", "model.onnx"))
    with open(os.path.join(root, name, "config.json"), "w") as f:
        json.dump(dict(config, name=name, platform="onnx"), f)

def spec(name, dtype, shape):
    return {"name": name, "dtype": dtype, "shape": shape}

w = numpy_helper.from_array(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32), "w")
package("affine", helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["out"])],
    "affine",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
     helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])],
    [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 2])], [w]),
    {"input_spec": [spec("x", "float32", ["batch", 3]), spec("b", "float32", [2])],
     "output_spec": [spec("out", "float32", ["batch", 2])]})

package("mixed", helper.make_graph(
    [helper.make_node("Identity", ["s"], ["same"]),
     helper.make_node("Cast", ["h"], ["wide"], to=TensorProto.FLOAT),
     helper.make_node("Not", ["flag"], ["negated"])],
    "mixed",
    [helper.make_tensor_value_info("s", TensorProto.STRING, ["n"]),
     helper.make_tensor_value_info("h", TensorProto.FLOAT16, [2]),
     helper.make_tensor_value_info("flag", TensorProto.BOOL, [3])],
    [helper.make_tensor_value_info("same", TensorProto.STRING, ["n"]),
     helper.make_tensor_value_info("wide", TensorProto.FLOAT, [2]),
     helper.make_tensor_value_info("negated", TensorProto.BOOL, [3])]),
    {"input_spec": [spec("s", "string", ["n"]), spec("h", "float16", [2]), spec("flag", "bool", [3])],
     "output_spec": [spec("same", "string", ["n"]), spec("wide", "float32", [2]), spec("negated", "bool", [3])]})

package("echo", helper.make_graph(
    [helper.make_node("Identity", ["x"], ["same"])], "echo",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
    [helper.make_tensor_value_info("same", TensorProto.FLOAT, ["n"])]),
    {"input_spec": [spec("x", "float32", ["n"])], "output_spec": [spec("same", "float32", ["n"])]})

def add_graph():
    return helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["sum"])], "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [4])])

add = {"input_spec": [spec("x", "float32", [4]), spec("y", "float32", [4])],
       "output_spec": [spec("sum", "float32", [4])]}
package("wrong_output_name", add_graph(), dict(add, output_spec=[spec("total", "float32", [4])]))
package("wrong_dtype", add_graph(), dict(add, input_spec=[spec("x", "float64", [4]), spec("y", "float32", [4])]))
package("wrong_size", add_graph(), dict(add, input_spec=[spec("x", "float32", [5]), spec("y", "float32", [4])]))
package("unfed_input", add_graph(), dict(add, input_spec=[spec("x", "float32", [4])]))
"#;

fn make_packages(dir: &Path) {
    let script = dir.join("make_packages.py");
    std::fs::write(&script, MAKE_PACKAGES).unwrap();
    let status = Command::new(python_executable())
        .arg(&script)
        .arg(dir)
        .status()
        .expect("run python");
    assert!(
        status.success(),
        "making the packages with {} failed",
        python_executable().display()
    );
}

fn load(path: &Path) -> neuropods_core::Result<Neuropod> {
    // SAFETY: the entry point returns a pointer to a static vtable.
    let vtable = unsafe { &*neuropods_onnx::neuropods_backend_entry() };
    registry::register(Platform::Onnx, vtable);
    Neuropod::load(path, &LoadOptions::default())
}

#[test]
fn onnx_packages_run_and_wrong_specs_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    make_packages(dir.path());

    let affine = load(&dir.path().join("affine")).unwrap();
    for batch in [1usize, 3] {
        let x: Vec<f32> = (0..batch * 3).map(|i| i as f32).collect();
        let mut inputs = TensorMap::new();
        inputs.insert(
            "x".into(),
            Tensor::from_vec(vec![batch, 3], x.clone()).unwrap(),
        );
        inputs.insert(
            "b".into(),
            Tensor::from_vec(vec![2], vec![0.5f32, -1.0]).unwrap(),
        );
        let out = affine.infer(&inputs).unwrap();
        let got = out["out"].as_slice::<f32>().unwrap();
        let want: Vec<f32> = (0..batch)
            .flat_map(|r| {
                let row = &x[r * 3..r * 3 + 3];
                [
                    row[0] + 3.0 * row[1] + 5.0 * row[2] + 0.5,
                    2.0 * row[0] + 4.0 * row[1] + 6.0 * row[2] - 1.0,
                ]
            })
            .collect();
        assert_eq!(out["out"].shape(), &[batch, 2]);
        assert_eq!(got, want.as_slice());
    }

    let mixed = load(&dir.path().join("mixed")).unwrap();
    let mut inputs = TensorMap::new();
    let words = vec!["héllo".to_string(), String::new(), "onnx".into()];
    inputs.insert(
        "s".into(),
        Tensor::from_strings(vec![3], words.clone()).unwrap(),
    );
    let halves = vec![half::f16::from_f32(1.5), half::f16::from_f32(-0.25)];
    inputs.insert("h".into(), Tensor::from_vec(vec![2], halves).unwrap());
    inputs.insert(
        "flag".into(),
        Tensor::from_vec(vec![3], vec![true, false, true]).unwrap(),
    );
    let out = mixed.infer(&inputs).unwrap();
    assert_eq!(out["same"].strings().unwrap(), words.as_slice());
    assert_eq!(out["wide"].as_slice::<f32>().unwrap(), &[1.5, -0.25]);
    assert_eq!(
        out["negated"].as_slice::<bool>().unwrap(),
        &[false, true, false]
    );

    for (package, fragments) in [
        (
            "wrong_output_name",
            &["output 'total' is not in the ONNX graph", "sum"][..],
        ),
        (
            "wrong_dtype",
            &["input 'x' is float64 in the spec", "Float32"][..],
        ),
        ("wrong_size", &["input 'x' has shape [5]", "[4]"][..]),
        ("unfed_input", &["input 'y' has no spec"][..]),
    ] {
        let Err(err) = load(&dir.path().join(package)) else {
            panic!("{package} loaded");
        };
        assert!(
            matches!(err, Error::InvalidPackage { .. }),
            "{package}: {err:?}"
        );
        let message = err.to_string();
        for fragment in fragments {
            assert!(message.contains(fragment), "{package}: {message}");
        }
    }
}

#[test]
fn an_unaligned_input_is_fed_through_an_aligned_copy() {
    let dir = tempfile::tempdir().unwrap();
    make_packages(dir.path());
    let echo = load(&dir.path().join("echo")).unwrap();
    // Four floats starting one byte into an allocation: unaligned for f32.
    let values = [1.5f32, -2.0, 3.25, 1e-3];
    let mut bytes = vec![0u8];
    bytes.extend(values.iter().flat_map(|v| v.to_ne_bytes()));
    let unaligned = Buffer::from_vec(bytes).slice(1..17).unwrap();
    assert!(!unaligned.is_aligned_to(4));
    let mut inputs = TensorMap::new();
    inputs.insert(
        "x".into(),
        Tensor::from_buffer(DType::Float32, vec![4], unaligned).unwrap(),
    );
    let out = echo.infer(&inputs).unwrap();
    drop(inputs);
    assert_eq!(out["same"].as_slice::<f32>().unwrap(), &values);
}
