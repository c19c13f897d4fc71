//! A python-platform package run from Rust: the registry opens libpython
//! and this backend's library, which starts an embedded interpreter. The
//! interpreter is `NEUROPODS_PYTHON` (scripts/test.sh points it at the venv,
//! whose numpy the model uses), else `python3` on PATH.

use std::path::Path;

use neuropods_core::{Error, LoadOptions, Neuropod, Tensor, TensorMap};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A package as the packager lays it out: code with a relative import, a
/// data file read by the entrypoint, and requirements.
fn make_package(root: &Path, requirements: &str) {
    write(
        &root.join("config.json"),
        r#"{"name": "scaler", "platform": "python",
            "input_spec": [{"name": "x", "dtype": "float32", "shape": ["n"]},
                           {"name": "words", "dtype": "string", "shape": ["n"]}],
            "output_spec": [{"name": "scaled", "dtype": "float64", "shape": ["n"]},
                            {"name": "shout", "dtype": "string", "shape": ["n"]}]}"#,
    );
    write(
        &root.join("0/config.json"),
        r#"{"entrypoint_package": "scaler.main", "entrypoint": "get_model"}"#,
    );
    write(&root.join("0/requirements.lock"), requirements);
    write(&root.join("0/data/factor.txt"), "2.5\n");
    write(&root.join("0/code/scaler/__init__.py"), "");
    write(
        &root.join("0/code/scaler/ops.py"),
        "import numpy as np\n\ndef scale(x, f):\n    return x.astype(np.float64) * f\n",
    );
    write(
        &root.join("0/code/scaler/main.py"),
        r#"import os
import numpy as np
from .ops import scale

def get_model(data_root):
    factor = float(open(os.path.join(data_root, "factor.txt")).read())
    def model(x, words):
        return {"scaled": scale(x, factor), "shout": np.char.upper(words)}
    return model
"#,
    );
}

#[test]
fn a_python_package_runs_in_an_embedded_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    make_package(dir.path(), "numpy\n");
    let model = Neuropod::load(dir.path(), &LoadOptions::default()).unwrap();
    let mut inputs = TensorMap::new();
    inputs.insert(
        "x".into(),
        Tensor::from_vec(vec![3], vec![1.0f32, -2.0, 4.0]).unwrap(),
    );
    inputs.insert(
        "words".into(),
        Tensor::from_strings(vec![3], vec!["a".into(), "bé".into(), "".into()]).unwrap(),
    );
    // Twice, from two threads: the interpreter is shared.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let out = model.infer(&inputs).unwrap();
                assert_eq!(out["scaled"].as_slice::<f64>().unwrap(), &[2.5, -5.0, 10.0]);
                let shout = out["shout"].strings().unwrap();
                assert_eq!(shout, &["A".to_string(), "BÉ".into(), "".into()]);
            });
        }
    });
    // Outputs outlive the model.
    let out = model.infer(&inputs).unwrap();
    drop(model);
    assert_eq!(out["scaled"].as_slice::<f64>().unwrap()[2], 10.0);
}

#[test]
fn unmet_requirements_are_listed_in_one_error() {
    let dir = tempfile::tempdir().unwrap();
    make_package(
        dir.path(),
        "numpy==0.0.1\nno-such-package-neuropods==1.0\n# a comment\nnumpy\n",
    );
    let err = Neuropod::load(dir.path(), &LoadOptions::default())
        .err()
        .expect("requirements are not met");
    let Error::RequirementsNotMet(message) = &err else {
        panic!("{err}");
    };
    assert!(message.contains("numpy==0.0.1 (installed: "), "{message}");
    assert!(
        message.contains("no-such-package-neuropods==1.0 (not installed)"),
        "{message}"
    );
}

#[test]
fn requirements_use_pep_440_specifiers_and_refuse_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    make_package(
        dir.path(),
        "numpy>=1,!=0.0.1\nno-such-package-neuropods; python_version < \"3\"\n",
    );
    Neuropod::load(dir.path(), &LoadOptions::default()).expect("requirements are met");
    let dir = tempfile::tempdir().unwrap();
    make_package(dir.path(), "numpy\nnumpy>=>1\n");
    let err = Neuropod::load(dir.path(), &LoadOptions::default())
        .err()
        .expect("a malformed line");
    let message = err.to_string();
    assert!(
        message.contains("0/requirements.lock: line 2: 'numpy>=>1'"),
        "{message}"
    );
}
