//! The whole load/infer path through the backend C ABI, with a backend
//! written here and registered in-process (no framework needed): packages
//! on disk (folder and zip), spec checks around the call, outputs handed
//! over without copies, errors and panics crossing the boundary as errors.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use neuropods_core::backend::abi::BackendVTable;
use neuropods_core::backend::plugin::{self, Backend, BackendModel, LoadContext};
use neuropods_core::backend::{registry, BackendOptions};
use neuropods_core::{
    Buffer, DType, Error, ForeignBuffer, LoadOptions, ModelConfig, Neuropod, Platform, Result,
    Tensor, TensorData, TensorMap,
};

/// Inputs the test model was asked to keep (x[0] == -4), as a model with a
/// cache or a history would.
static KEPT: Mutex<Vec<Tensor>> = Mutex::new(Vec::new());

/// Whether each `x` the test model got was lent memory, by its first value.
static SAW_LENT: Mutex<Vec<(f32, bool)>> = Mutex::new(Vec::new());

/// The config and options each load got, by package root.
static LOADED_WITH: Mutex<Vec<(PathBuf, ModelConfig, BackendOptions)>> = Mutex::new(Vec::new());

/// The test backend's own 0/config.json.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct TestBackendConfig {
    greeting: Option<String>,
}

/// Doubles `x`, upper-cases `s`; fails or panics on request.
struct TestBackend;

struct TestModel;

impl BackendModel for TestModel {
    fn infer(&self, inputs: &TensorMap) -> Result<TensorMap> {
        let mut out = TensorMap::new();
        if let Some(x) = inputs.get("x") {
            let lent = matches!(x.data(), TensorData::Foreign(_));
            // Lent memory is read through a copy.
            let frozen = x.to_frozen();
            let values = frozen.as_slice::<f32>()?;
            if let Some(&first) = values.first() {
                SAW_LENT.lock().unwrap().push((first, lent));
            }
            if values.first() == Some(&-1.0) {
                return Err(Error::backend(
                    "x[0] = -1 is not allowed",
                    "the test model's stack",
                ));
            }
            if values.first() == Some(&-2.0) {
                panic!("test backend panics on -2");
            }
            if values.first() == Some(&-4.0) {
                KEPT.lock().unwrap().push(x.clone());
            }
            if values.first() == Some(&-3.0) {
                // Breaks the output spec on purpose (int32 instead of float32).
                out.insert("out".into(), Tensor::from_vec(vec![1], vec![1i32])?);
                return Ok(out);
            }
            let doubled = values.iter().map(|v| v * 2.0).collect();
            out.insert("out".into(), Tensor::from_vec(x.shape().to_vec(), doubled)?);
        }
        if let Some(s) = inputs.get("s") {
            let upper = s
                .strings()
                .unwrap_or_default()
                .iter()
                .map(|v| v.to_uppercase())
                .collect();
            out.insert(
                "s_upper".into(),
                Tensor::from_strings(s.shape().to_vec(), upper)?,
            );
        }
        Ok(out)
    }
}

impl Backend for TestBackend {
    fn load(ctx: &LoadContext) -> Result<Box<dyn BackendModel>> {
        LOADED_WITH.lock().unwrap().push((
            ctx.package_root.clone(),
            ctx.config.clone(),
            ctx.options.clone(),
        ));
        let _: Option<TestBackendConfig> = ctx.parse_backend_config()?;
        if ctx.options.visible_gpu.is_some() {
            ctx.warn("test backend has no GPU; running on CPU");
        }
        if !ctx.package_root.join("0/data/weights.txt").is_file() {
            return Err(Error::InvalidPackage {
                path: ctx.package_root.clone(),
                reason: "missing 0/data/weights.txt".into(),
            });
        }
        Ok(Box::new(TestModel))
    }
}

static VTABLE: BackendVTable = plugin::vtable::<TestBackend>();

const CONFIG: &str = r#"{
  "name": "doubler", "platform": "python",
  "input_spec": [{"name": "x", "dtype": "float32", "shape": ["n"]},
                 {"name": "s", "dtype": "string", "shape": [null]}],
  "output_spec": [{"name": "out", "dtype": "float32", "shape": ["n"]},
                  {"name": "s_upper", "dtype": "string", "shape": [null]}]
}"#;

fn write_package(dir: &Path) {
    fs::create_dir_all(dir.join("0/data")).unwrap();
    fs::write(dir.join("config.json"), CONFIG).unwrap();
    fs::write(dir.join("0/data/weights.txt"), "2.0").unwrap();
}

fn load(path: &Path) -> Result<Neuropod> {
    registry::register(Platform::Python, &VTABLE);
    Neuropod::load(path, &LoadOptions::default())
}

fn x(values: &[f32]) -> TensorMap {
    let mut m = TensorMap::new();
    m.insert(
        "x".into(),
        Tensor::from_vec(vec![values.len()], values.to_vec()).unwrap(),
    );
    m
}

#[test]
fn folder_package_runs_through_the_abi() {
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path());
    let model = load(dir.path()).unwrap();
    assert_eq!(
        (model.name(), model.platform()),
        ("doubler", Platform::Python)
    );
    let mut inputs = x(&[1.0, 2.5]);
    inputs.insert(
        "s".into(),
        Tensor::from_strings(vec![2], vec!["ab".into(), "ü".into()]).unwrap(),
    );
    let out = model.infer(&inputs).unwrap();
    assert_eq!(out["out"].as_slice::<f32>().unwrap(), &[2.0, 5.0]);
    assert_eq!(
        out["s_upper"].strings().unwrap(),
        &["AB".to_string(), "Ü".to_string()]
    );
}

#[test]
fn outputs_outlive_the_model() {
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path());
    let model = load(dir.path()).unwrap();
    let out = model.infer(&x(&[3.0])).unwrap();
    drop(model);
    assert_eq!(out["out"].as_slice::<f32>().unwrap(), &[6.0]);
}

#[test]
fn specs_are_checked_before_and_after_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path());
    let model = load(dir.path()).unwrap();
    let mut bad = TensorMap::new();
    bad.insert("x".into(), Tensor::from_vec(vec![1], vec![1i64]).unwrap());
    let err = model.infer(&bad).unwrap_err();
    assert!(
        err.to_string()
            .contains("input 'x': expected dtype float32, got int64"),
        "{err}"
    );
    let err = model.infer(&x(&[-3.0])).unwrap_err();
    assert!(
        err.to_string()
            .contains("output 'out': expected dtype float32, got int32"),
        "{err}"
    );
}

#[test]
fn backend_errors_and_panics_become_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path());
    let model = load(dir.path()).unwrap();
    match model.infer(&x(&[-1.0])) {
        Err(Error::Backend {
            platform,
            message,
            detail,
        }) => {
            // The platform is the core's; the message and the detail
            // (for logs only) cross the ABI as the backend wrote them.
            assert_eq!(platform, "python");
            assert_eq!(message, "x[0] = -1 is not allowed");
            assert_eq!(detail, "the test model's stack");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    match model.infer(&x(&[-2.0])) {
        Err(Error::Internal(message)) => assert!(message.contains("panics on -2"), "{message}"),
        other => panic!("expected an internal error, got {other:?}"),
    }
    // The model still works after a panic inside it.
    assert_eq!(
        model.infer(&x(&[1.0])).unwrap()["out"]
            .as_slice::<f32>()
            .unwrap(),
        &[2.0]
    );
}

#[test]
fn load_errors_and_warnings_cross_the_boundary() {
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path());
    registry::register(Platform::Python, &VTABLE);
    let mut options = LoadOptions::default();
    options.backend.visible_gpu = Some(0);
    let model = Neuropod::load(dir.path(), &options).unwrap();
    assert_eq!(
        model.load_warnings(),
        &["test backend has no GPU; running on CPU".to_string()]
    );
    fs::remove_file(dir.path().join("0/data/weights.txt")).unwrap();
    let err = load(dir.path()).err().unwrap();
    assert!(matches!(err, Error::InvalidPackage { .. }));
    assert!(
        err.to_string().contains("missing 0/data/weights.txt"),
        "{err}"
    );
}

#[test]
fn config_and_options_reach_the_backend_as_the_core_parsed_them() {
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path());
    let mut config: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
    config["platform_version_semver"] = "^1.2".into();
    config["input_tensor_device"] = serde_json::json!({"s": "CPU", "x": "GPU"});
    config["custom_ops"] = serde_json::json!(["libone.so", "libtwo.so"]);
    config["output_spec"][0]["shape"] = serde_json::json!(["n", 3, null]);
    fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    registry::register(Platform::Python, &VTABLE);
    for backend in [
        BackendOptions::default(),
        BackendOptions {
            visible_gpu: Some(1),
            intra_op_threads: Some(3),
            inter_op_threads: Some(0),
        },
    ] {
        let options = LoadOptions {
            backend: backend.clone(),
            ..Default::default()
        };
        let model = Neuropod::load(dir.path(), &options).unwrap();
        let seen = LOADED_WITH
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(root, _, _)| root == dir.path())
            .map(|(_, config, options)| (config.clone(), options.clone()))
            .unwrap();
        assert_eq!(seen, (model.config().clone(), backend));
    }
}

#[test]
fn backend_config_errors_cross_as_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path());
    for (text, field, reason) in [
        (
            r#"{"greeting": 3}"#,
            "greeting",
            "expected a string, got a number",
        ),
        (
            r#"{"colour": "red"}"#,
            "colour",
            "unknown field (known: greeting)",
        ),
        ("{", "<document>", "not valid JSON"),
    ] {
        fs::write(dir.path().join("0/config.json"), text).unwrap();
        match load(dir.path()) {
            Err(Error::InvalidConfig {
                file,
                field: got_field,
                reason: got_reason,
            }) => {
                assert_eq!(
                    (file.as_str(), got_field.as_str()),
                    ("0/config.json", field)
                );
                assert!(got_reason.starts_with(reason), "{text}: {got_reason}");
            }
            other => panic!("{text}: expected a config error, got {:?}", other.map(drop)),
        }
    }
    fs::write(dir.path().join("0/config.json"), r#"{"greeting": "hi"}"#).unwrap();
    load(dir.path()).unwrap();
}

#[test]
fn missing_package_is_package_not_found() {
    let err = load(Path::new("/no/such/package")).err().unwrap();
    assert!(matches!(err, Error::PackageNotFound { .. }), "{err}");
}

fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(fs::File::create(path).unwrap());
    for (name, data) in entries {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn zip_packages_load_and_clean_up() {
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("model.zip");
    write_zip(
        &zip_path,
        &[
            ("config.json", CONFIG.as_bytes()),
            ("0/data/weights.txt", b"2.0"),
        ],
    );
    let model = load(&zip_path).unwrap();
    let extracted = model.package_root().to_path_buf();
    assert!(extracted.starts_with(std::env::temp_dir()));
    assert!(extracted.join("0/data/weights.txt").is_file());
    let out = model.infer(&x(&[4.0])).unwrap();
    assert_eq!(out["out"].as_slice::<f32>().unwrap(), &[8.0]);
    drop(model);
    assert!(
        !extracted.exists(),
        "{} was not removed",
        extracted.display()
    );
}

#[test]
fn zip_entries_escaping_the_folder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for evil in ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"] {
        let zip_path = dir.path().join("evil.zip");
        write_zip(
            &zip_path,
            &[("config.json", CONFIG.as_bytes()), (evil, b"x")],
        );
        let err = load(&zip_path).err().unwrap();
        assert!(
            err.to_string().contains("escapes the package folder"),
            "{evil}: {err}"
        );
        assert!(!dir.path().join("evil.txt").exists());
    }
}

#[test]
fn symlinks_out_of_a_folder_package_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write_package(dir.path());
    std::os::unix::fs::symlink(outside.path(), dir.path().join("0/data/leak")).unwrap();
    let err = load(dir.path()).err().unwrap();
    assert!(
        err.to_string().contains("points outside the package"),
        "{err}"
    );
}

#[test]
fn manifest_detects_changed_missing_and_extra_files() {
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path());
    let manifest = neuropods_core::package::build_manifest(dir.path()).unwrap();
    fs::write(dir.path().join("manifest.json"), manifest).unwrap();
    let verify = || {
        registry::register(Platform::Python, &VTABLE);
        let options = LoadOptions {
            verify_manifest: true,
            ..Default::default()
        };
        Neuropod::load(dir.path(), &options).map(drop)
    };
    verify().unwrap();
    fs::write(dir.path().join("0/data/weights.txt"), "3.0").unwrap();
    assert!(verify()
        .unwrap_err()
        .to_string()
        .contains("0/data/weights.txt: sha256 mismatch"));
    fs::remove_file(dir.path().join("0/data/weights.txt")).unwrap();
    assert!(verify()
        .unwrap_err()
        .to_string()
        .contains("in the manifest but missing"));
    let manifest = neuropods_core::package::build_manifest(dir.path()).unwrap();
    fs::write(dir.path().join("manifest.json"), manifest).unwrap();
    fs::write(dir.path().join("0/data/weights.txt"), "2.0").unwrap();
    assert!(verify()
        .unwrap_err()
        .to_string()
        .contains("is not in the manifest"));
}

#[test]
fn manifest_with_wrong_fields_is_a_config_error_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path());
    let digest = "ab".repeat(32);
    let verify = |manifest: &str| {
        fs::write(dir.path().join("manifest.json"), manifest).unwrap();
        registry::register(Platform::Python, &VTABLE);
        let options = LoadOptions {
            verify_manifest: true,
            ..Default::default()
        };
        match Neuropod::load(dir.path(), &options) {
            Err(Error::InvalidConfig {
                file,
                field,
                reason,
            }) => {
                assert_eq!(file, "manifest.json");
                (field, reason)
            }
            other => panic!(
                "{manifest}: expected a config error, got {:?}",
                other.map(drop)
            ),
        }
    };
    for (manifest, field, reason) in [
        (
            r#"{"manifest_version": "1", "files": {}}"#.to_string(),
            "manifest_version",
            "expected a non-negative integer, got a string",
        ),
        (
            r#"{"manifest_version": 2, "files": {}}"#.to_string(),
            "manifest_version",
            "this Neuropods reads version 1, got 2",
        ),
        (r#"{"manifest_version": 1}"#.to_string(), "files", "missing"),
        (
            r#"{"manifest_version": 1, "files": []}"#.to_string(),
            "files",
            "expected an object, got a list",
        ),
        (
            r#"{"manifest_version": 1, "files": {"config.json": 5}}"#.to_string(),
            "files.config.json",
            "expected a string, got a number",
        ),
        (
            r#"{"manifest_version": 1, "files": {"config.json": "abc"}}"#.to_string(),
            "files.config.json",
            "expected a sha256 digest (64 hex digits), got 'abc'",
        ),
        (
            format!(r#"{{"manifest_version": 1, "files": {{}}, "signed_by": "{digest}"}}"#),
            "signed_by",
            "unknown field (known: manifest_version, files)",
        ),
        (
            "[]".to_string(),
            "<document>",
            "expected a JSON object with manifest_version and files, got a list",
        ),
    ] {
        assert_eq!(
            verify(&manifest),
            (field.to_string(), reason.to_string()),
            "{manifest}"
        );
    }
}

/// Caller memory that counts how often it is freed.
struct CountedMemory {
    _values: Vec<f32>,
    frees: Arc<AtomicUsize>,
}

impl Drop for CountedMemory {
    fn drop(&mut self) {
        self.frees.fetch_add(1, Ordering::SeqCst);
    }
}

fn counted_input(values: Vec<f32>) -> (TensorMap, Arc<AtomicUsize>) {
    let frees = Arc::new(AtomicUsize::new(0));
    let (ptr, len) = (values.as_ptr() as *const u8, values.len() * 4);
    let owner = Arc::new(CountedMemory {
        _values: values,
        frees: frees.clone(),
    });
    // SAFETY: the Vec's heap block lives, unchanged, as long as `owner`.
    let buffer = unsafe { Buffer::from_raw_parts(ptr, len, owner) };
    let mut m = TensorMap::new();
    m.insert(
        "x".into(),
        Tensor::from_buffer(neuropods_core::DType::Float32, vec![len / 4], buffer).unwrap(),
    );
    (m, frees)
}

#[test]
fn an_input_the_backend_keeps_keeps_the_callers_memory() {
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path());
    let model = load(dir.path()).unwrap();
    let (inputs, frees) = counted_input(vec![-4.0, 8.0]);
    model.infer(&inputs).unwrap();
    drop(inputs);
    // The caller let go; the backend's copy of the owner holds the memory.
    assert_eq!(frees.load(Ordering::SeqCst), 0);
    let kept = KEPT.lock().unwrap().pop().unwrap();
    assert_eq!(kept.as_slice::<f32>().unwrap(), &[-4.0, 8.0]);
    drop(kept);
    assert_eq!(frees.load(Ordering::SeqCst), 1, "released exactly once");
}

#[test]
fn inputs_are_released_after_calls_that_succeed_fail_or_panic() {
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path());
    let model = load(dir.path()).unwrap();
    for first in [1.0, -1.0, -2.0] {
        let (inputs, frees) = counted_input(vec![first, 2.0]);
        let result = model.infer(&inputs);
        assert_eq!(result.is_ok(), first == 1.0);
        drop(inputs);
        assert_eq!(frees.load(Ordering::SeqCst), 1, "x[0] = {first}");
    }
}

#[test]
fn lent_memory_crosses_as_lent_and_outputs_come_back_frozen() {
    let dir = tempfile::tempdir().unwrap();
    write_package(dir.path());
    let model = load(dir.path()).unwrap();
    let values = Arc::new(vec![0.625f32, 2.0]);
    // SAFETY: the Vec's block lives as long as its Arc, the owner.
    let lent =
        unsafe { ForeignBuffer::from_raw_parts(values.as_ptr() as *mut u8, 8, values.clone()) };
    let mut inputs = TensorMap::new();
    inputs.insert(
        "x".into(),
        Tensor::from_foreign(DType::Float32, vec![2], lent).unwrap(),
    );
    let outputs = model.infer(&inputs).unwrap();
    assert!(SAW_LENT.lock().unwrap().contains(&(0.625, true)));
    assert!(matches!(outputs["out"].data(), TensorData::Numeric(_)));
    assert_eq!(outputs["out"].as_slice::<f32>().unwrap(), &[1.25, 4.0]);

    // Frozen inputs cross as frozen.
    model.infer(&x(&[0.375, 1.0])).unwrap();
    assert!(SAW_LENT.lock().unwrap().contains(&(0.375, false)));
}
