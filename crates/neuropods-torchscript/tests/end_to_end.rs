//! A Rust program running a TorchScript package that torch made: the
//! package is written by the Python packager (the venv's python, with torch
//! and neuropods installed: `NEUROPODS_PYTHON`, else `python3` on `PATH`,
//! as the core finds it), together with torch's own output for the same input.

use std::path::Path;
use std::process::Command;

use neuropods_core::backend::registry::{self, python_executable};
use neuropods_core::{LoadOptions, Neuropod, Platform, Tensor, TensorMap};

const MAKE_PACKAGE: &str = r#"
import json, sys, warnings
import numpy as np, torch
from neuropods.packagers import create_torchscript_neuropod

warnings.simplefilter("ignore", DeprecationWarning)
torch.manual_seed(0)
mlp = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = mlp
    def forward(self, x):
        return {"y": self.mlp(x)}

x = np.arange(6, dtype=np.float32).reshape(2, 3) / 6
with torch.no_grad():
    expected = mlp(torch.from_numpy(x)).numpy()
create_torchscript_neuropod(
    neuropod_path=sys.argv[1] + "/mlp", model_name="mlp",
    module=torch.jit.script(Model()),
    input_spec=[{"name": "x", "dtype": "float32", "shape": ("batch", 3)}],
    output_spec=[{"name": "y", "dtype": "float32", "shape": ("batch", 2)}],
)
class InPlace(torch.nn.Module):
    def forward(self, x):
        x.mul_(2)
        return {"y": x + 1}

create_torchscript_neuropod(
    neuropod_path=sys.argv[1] + "/inplace", model_name="inplace",
    module=torch.jit.script(InPlace()),
    input_spec=[{"name": "x", "dtype": "float32", "shape": (None,)}],
    output_spec=[{"name": "y", "dtype": "float32", "shape": (None,)}],
)
json.dump({"x": x.ravel().tolist(), "y": expected.ravel().tolist()}, open(sys.argv[1] + "/expected.json", "w"))
"#;

fn make_package(dir: &Path) -> (Vec<f32>, Vec<f32>) {
    // torch.jit.script reads the module's source, so the script is a file.
    let script = dir.join("make_package.py");
    std::fs::write(&script, MAKE_PACKAGE).unwrap();
    let status = Command::new(python_executable())
        .arg(&script)
        .arg(dir)
        .status()
        .expect("run python");
    assert!(
        status.success(),
        "making the package with {} failed",
        python_executable().display()
    );
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |key: &str| -> Vec<f32> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_f64().unwrap() as f32)
            .collect()
    };
    (floats("x"), floats("y"))
}

#[test]
fn mlp_made_by_torch_runs_from_rust_like_in_torch() {
    // SAFETY: the entry point returns a pointer to a static vtable.
    let vtable = unsafe { &*neuropods_torchscript::neuropods_backend_entry() };
    registry::register(Platform::TorchScript, vtable);

    let dir = tempfile::tempdir().unwrap();
    let (x, expected) = make_package(dir.path());
    let model = Neuropod::load(dir.path().join("mlp"), &LoadOptions::default()).unwrap();
    assert_eq!(
        (model.name(), model.platform()),
        ("mlp", Platform::TorchScript)
    );

    let mut inputs = TensorMap::new();
    inputs.insert("x".into(), Tensor::from_vec(vec![2, 3], x).unwrap());
    let outputs = model.infer(&inputs).unwrap();
    let y = &outputs["y"];
    assert_eq!(y.shape(), &[2, 2]);
    for (got, want) in y.as_slice::<f32>().unwrap().iter().zip(&expected) {
        assert!((got - want).abs() < 1e-5, "got {got}, torch gave {want}");
    }

    // A wrong inner dim is refused before libtorch sees it.
    let mut bad = TensorMap::new();
    bad.insert(
        "x".into(),
        Tensor::from_vec(vec![2, 4], vec![0f32; 8]).unwrap(),
    );
    let err = model.infer(&bad).unwrap_err().to_string();
    assert!(
        err.contains("input 'x': dim 1 expected size 3, got 4"),
        "{err}"
    );

    // The same model in a worker process (the neuropods-worker cargo built
    // beside this test): the same outputs, the same errors.
    let options = LoadOptions {
        use_ope: true,
        ..LoadOptions::default()
    };
    let remote = Neuropod::load(dir.path().join("mlp"), &options).unwrap();
    let worker = remote.worker_pid().expect("a worker process");
    assert_ne!(worker, std::process::id());
    let remote_outputs = remote.infer(&inputs).unwrap();
    assert_eq!(
        remote_outputs["y"].as_slice::<f32>().unwrap(),
        y.as_slice::<f32>().unwrap()
    );
    assert_eq!(remote.infer(&bad).unwrap_err().to_string(), err);
    drop(remote);
    // Outputs are views of shared memory that outlive the model.
    assert_eq!(remote_outputs["y"].shape(), &[2, 2]);
}

#[test]
fn a_model_working_in_place_never_writes_frozen_inputs() {
    // SAFETY: the entry point returns a pointer to a static vtable.
    let vtable = unsafe { &*neuropods_torchscript::neuropods_backend_entry() };
    registry::register(Platform::TorchScript, vtable);
    let dir = tempfile::tempdir().unwrap();
    make_package(dir.path());
    let mut inputs = TensorMap::new();
    inputs.insert(
        "x".into(),
        Tensor::from_vec(vec![3], vec![0f32, 1.0, 2.0]).unwrap(),
    );
    for use_ope in [false, true] {
        let options = LoadOptions {
            use_ope,
            ..LoadOptions::default()
        };
        let model = Neuropod::load(dir.path().join("inplace"), &options).unwrap();
        let outputs = model.infer(&inputs).unwrap();
        assert_eq!(outputs["y"].as_slice::<f32>().unwrap(), &[1.0, 3.0, 5.0]);
        // A `Tensor` from Rust memory is frozen: libtorch worked on a copy.
        assert_eq!(
            inputs["x"].as_slice::<f32>().unwrap(),
            &[0.0, 1.0, 2.0],
            "use_ope={use_ope}"
        );
    }
}
