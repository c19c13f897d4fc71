//! TensorFlow packages made by TF itself (the venv's python:
//! `NEUROPODS_PYTHON`, else `python3` on `PATH`, as the core finds it), run from Rust:
//! a frozen GraphDef written the way the original Neuropod packaged them
//! (namespaced nodes, `node_name_mapping`), and a SavedModel with variables,
//! a string input and outputs of two dtypes.

use std::path::Path;
use std::process::Command;

use neuropods_core::backend::registry::{self, python_executable};
use neuropods_core::{Error, LoadOptions, Neuropod, Platform, Tensor, TensorMap};

const MAKE_PACKAGES: &str = r#"
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf

root = sys.argv[1]

def write(path, value):
    with open(path, "w") as f:
        json.dump(value, f)

graph_pkg = os.path.join(root, "graph")
os.makedirs(os.path.join(graph_pkg, "0", "data"))
g = tf.Graph()
with g.as_default():
    with tf.compat.v1.name_scope("some_namespace"):
        x = tf.compat.v1.placeholder(tf.float32, [None], name="in_x")
        y = tf.compat.v1.placeholder(tf.float32, [None], name="in_y")
        tf.add(x, y, name="out")
with open(os.path.join(graph_pkg, "0", "data", "model.pb"), "wb") as f:
    f.write(g.as_graph_def().SerializeToString())
write(os.path.join(graph_pkg, "0", "config.json"), {
    "node_name_mapping": {"x": "some_namespace/in_x:0", "y": "some_namespace/in_y", "out": "some_namespace/out:0"},
    "init_op_names": []})
write(os.path.join(graph_pkg, "config.json"), {
    "name": "addition", "platform": "tensorflow",
    "input_spec": [{"name": "x", "dtype": "float32", "shape": ["n"]}, {"name": "y", "dtype": "float32", "shape": ["n"]}],
    "output_spec": [{"name": "out", "dtype": "float32", "shape": ["n"]}]})

class Scaler(tf.Module):
    def __init__(self):
        self.w = tf.Variable([1.5, -2.0, 4.0])
    @tf.function(input_signature=[tf.TensorSpec([3], tf.float32), tf.TensorSpec([None], tf.string)])
    def __call__(self, a, s):
        return {"scaled": a * self.w, "lengths": tf.strings.length(s)}

saved_pkg = os.path.join(root, "saved")
os.makedirs(os.path.join(saved_pkg, "0", "data"))
module = Scaler()
tf.saved_model.save(module, os.path.join(saved_pkg, "0", "data", "savedmodel"), signatures=module.__call__)
write(os.path.join(saved_pkg, "config.json"), {
    "name": "scaler", "platform": "tensorflow",
    "input_spec": [{"name": "a", "dtype": "float32", "shape": [3]}, {"name": "s", "dtype": "string", "shape": [None]}],
    "output_spec": [{"name": "scaled", "dtype": "float32", "shape": [3]}, {"name": "lengths", "dtype": "int32", "shape": [None]}]})
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
    let vtable = unsafe { &*neuropods_tensorflow::neuropods_backend_entry() };
    registry::register(Platform::TensorFlow, vtable);
    Neuropod::load(path, &LoadOptions::default())
}

#[test]
fn tensorflow_packages_run_from_rust() {
    let dir = tempfile::tempdir().unwrap();
    make_packages(dir.path());

    let graph = load(&dir.path().join("graph")).unwrap();
    let mut inputs = TensorMap::new();
    inputs.insert(
        "x".into(),
        Tensor::from_vec(vec![3], vec![1f32, 2.0, 3.0]).unwrap(),
    );
    inputs.insert(
        "y".into(),
        Tensor::from_vec(vec![3], vec![10f32, 20.0, 30.0]).unwrap(),
    );
    let out = graph.infer(&inputs).unwrap();
    assert_eq!(out["out"].as_slice::<f32>().unwrap(), &[11.0, 22.0, 33.0]);

    let saved = load(&dir.path().join("saved")).unwrap();
    let mut inputs = TensorMap::new();
    inputs.insert(
        "a".into(),
        Tensor::from_vec(vec![3], vec![2f32, 2.0, 0.5]).unwrap(),
    );
    let strings = vec!["ab".to_string(), "".into(), "héllo".into()];
    inputs.insert("s".into(), Tensor::from_strings(vec![3], strings).unwrap());
    let out = saved.infer(&inputs).unwrap();
    assert_eq!(out["scaled"].as_slice::<f32>().unwrap(), &[3.0, -4.0, 2.0]);
    // tf.strings.length counts bytes by default.
    assert_eq!(out["lengths"].as_slice::<i32>().unwrap(), &[2, 0, 6]);

    // An input the graph needs (a placeholder), left out: the caller's
    // mistake, named before the run.
    let mut bad = TensorMap::new();
    bad.insert(
        "x".into(),
        Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap(),
    );
    match graph.infer(&bad) {
        Err(Error::InvalidInput(message)) => {
            assert!(message.starts_with("missing input 'y'"), "{message}");
        }
        other => panic!("expected an invalid input error, got {other:?}"),
    }
    // A graph error surfaces as a backend error naming TF's complaint: a
    // copy of the package whose spec lets y's length differ from x's.
    let loose = dir.path().join("loose");
    std::fs::create_dir_all(loose.join("0/data")).unwrap();
    for file in ["config.json", "0/config.json", "0/data/model.pb"] {
        std::fs::copy(dir.path().join("graph").join(file), loose.join(file)).unwrap();
    }
    let config = std::fs::read_to_string(loose.join("config.json")).unwrap();
    let config = config.replacen(
        r#""name": "y", "dtype": "float32", "shape": ["n"]"#,
        r#""name": "y", "dtype": "float32", "shape": [null]"#,
        1,
    );
    assert!(config.contains("[null]"), "{config}");
    std::fs::write(loose.join("config.json"), config).unwrap();
    bad.insert(
        "y".into(),
        Tensor::from_vec(vec![3], vec![1f32, 2.0, 3.0]).unwrap(),
    );
    match load(&loose).unwrap().infer(&bad) {
        Err(Error::Backend {
            platform, message, ..
        }) => {
            assert_eq!(platform, "tensorflow");
            assert!(message.contains("Incompatible shapes"), "{message}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[test]
fn a_mapping_to_a_missing_node_is_a_package_error() {
    let dir = tempfile::tempdir().unwrap();
    make_packages(dir.path());
    let config = dir.path().join("graph/0/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("some_namespace/out:0", "nowhere:0")).unwrap();
    let err = load(&dir.path().join("graph")).err().unwrap().to_string();
    assert!(err.contains("'out' maps to 'nowhere:0'"), "{err}");
}
