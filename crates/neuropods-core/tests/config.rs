//! config.json parsing: a valid config parses, and every kind of mistake is
//! an `InvalidConfig` naming the field.

use neuropods_core::config::DeviceKind;
use neuropods_core::{DType, Dim, Error, ModelConfig, Platform};

const VALID: &str = r#"{
  "name": "addition_model",
  "platform": "torchscript",
  "platform_version_semver": "*",
  "input_spec": [
    {"name": "x", "dtype": "float32", "shape": [null, 2, "batch"]},
    {"name": "s", "dtype": "string", "shape": ["batch"]}
  ],
  "output_spec": [{"name": "out", "dtype": "float64", "shape": []}],
  "input_tensor_device": {"x": "GPU", "s": "CPU"},
  "custom_ops": ["libop.so"]
}"#;

#[test]
fn valid_config_parses() {
    let config = ModelConfig::from_json(VALID).unwrap();
    assert_eq!(config.name, "addition_model");
    assert_eq!(config.platform, Platform::TorchScript);
    assert_eq!(config.input_spec[0].dtype, DType::Float32);
    assert_eq!(
        config.input_spec[0].shape,
        vec![Dim::Any, Dim::Fixed(2), Dim::Symbol("batch".into())]
    );
    assert_eq!(config.input_spec[1].dtype, DType::String);
    assert!(config.output_spec[0].shape.is_empty());
    assert_eq!(config.input_device("s"), DeviceKind::Cpu);
    assert_eq!(config.input_device("x"), DeviceKind::Gpu);
    assert_eq!(config.custom_ops, vec!["libop.so".to_string()]);
}

#[test]
fn optional_fields_default_like_old_neuropod_configs() {
    let config = ModelConfig::from_json(
        r#"{"name": "m", "platform": "pytorch", "input_spec": [], "output_spec": []}"#,
    )
    .unwrap();
    assert_eq!(config.platform, Platform::Python);
    assert_eq!(config.platform_version_semver.as_str(), "*");
    assert!(config.custom_ops.is_empty() && config.input_tensor_device.is_empty());
    // Written as null, they default the same way.
    let with_nulls = ModelConfig::from_json(
        r#"{"name": "m", "platform": "pytorch", "input_spec": [], "output_spec": [],
            "platform_version_semver": null, "input_tensor_device": null, "custom_ops": null}"#,
    )
    .unwrap();
    assert_eq!(with_nulls, config);
}

#[test]
fn list_fields_take_the_originals_empty_forms() {
    // The original's reader (jsoncpp) iterated null and {} as empty lists.
    for empty in ["null", "{}", "[]"] {
        let mut v: serde_json::Value = serde_json::from_str(VALID).unwrap();
        v["custom_ops"] = serde_json::from_str(empty).unwrap();
        v["output_spec"] = serde_json::from_str(empty).unwrap();
        let config = ModelConfig::from_json(&v.to_string()).unwrap();
        assert!(
            config.custom_ops.is_empty() && config.output_spec.is_empty(),
            "{empty}"
        );
    }
}

#[test]
fn every_config_the_originals_releases_wrote_parses() {
    // tests/data/original-packages: config.json files in the shapes each
    // release of the original's packagers wrote (see its README).
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/original-packages");
    let mut parsed = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path().join("config.json");
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let config =
            ModelConfig::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!config.input_spec.is_empty(), "{}", path.display());
        parsed += 1;
    }
    assert!(parsed >= 8, "{parsed} fixtures in {}", root.display());
}

/// Parses `text` and returns (field, reason) of the expected config error.
fn config_error(text: &str) -> (String, String) {
    match ModelConfig::from_json(text) {
        Err(Error::InvalidConfig { field, reason, .. }) => (field, reason),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

fn with(field: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(VALID).unwrap();
    v[field] = serde_json::from_str(value).unwrap();
    v.to_string()
}

#[test]
fn invalid_json_is_reported() {
    let (field, reason) = config_error("{\"name\": ");
    assert_eq!(field, "<document>");
    assert!(reason.contains("not valid JSON"), "{reason}");
}

#[test]
fn missing_field_is_named() {
    let mut v: serde_json::Value = serde_json::from_str(VALID).unwrap();
    v.as_object_mut().unwrap().remove("output_spec");
    assert_eq!(
        config_error(&v.to_string()),
        ("output_spec".into(), "missing".into())
    );
}

#[test]
fn invalid_document_is_reported() {
    let (field, reason) = config_error("[1, 2]");
    assert_eq!(field, "<document>");
    assert_eq!(reason, "expected a JSON object, got a list");
}

#[test]
fn unknown_field_is_named_with_the_known_ones() {
    let (field, reason) = config_error(&with("colour", "\"red\""));
    assert_eq!(field, "colour");
    assert!(
        reason.starts_with("unknown field (known: name, platform, platform_version_semver,"),
        "{reason}"
    );
    let spec = r#"[{"name": "x", "dtype": "int8", "shape": [], "device": "CPU"}]"#;
    let (field, reason) = config_error(&with("input_spec", spec));
    assert_eq!(field, "input_spec[0].device");
    assert_eq!(reason, "unknown field (known: name, dtype, shape)");
}

#[test]
fn wrong_types_are_named_with_expected_and_found() {
    for (field, value, path, reason) in [
        ("name", "3", "name", "expected a string, got a number"),
        (
            "platform_version_semver",
            "[1]",
            "platform_version_semver",
            "expected a string, got a list",
        ),
        (
            "input_spec",
            r#"{"x": {"name": "x", "dtype": "int8", "shape": []}}"#,
            "input_spec",
            "expected a list, got an object",
        ),
        (
            "output_spec",
            "[\"out\"]",
            "output_spec[0]",
            "expected an object with name, dtype and shape, got a string",
        ),
        (
            "output_spec",
            r#"[{"name": "o", "dtype": 7, "shape": []}]"#,
            "output_spec[0].dtype",
            "expected a string, got a number",
        ),
        (
            "output_spec",
            r#"[{"name": "o", "dtype": "int8", "shape": "n"}]"#,
            "output_spec[0].shape",
            "expected a list, got a string",
        ),
        (
            "input_tensor_device",
            "[\"x\"]",
            "input_tensor_device",
            "expected an object, got a list",
        ),
        (
            "custom_ops",
            "\"ops.so\"",
            "custom_ops",
            "expected a list, got a string",
        ),
        (
            "custom_ops",
            "[\"a.so\", 1]",
            "custom_ops[1]",
            "expected a string, got a number",
        ),
    ] {
        assert_eq!(
            config_error(&with(field, value)),
            (path.to_string(), reason.to_string()),
            "{field} = {value}"
        );
    }
}

#[test]
fn unknown_platform_is_named() {
    let (field, reason) = config_error(&with("platform", "\"caffe\""));
    assert_eq!(field, "platform");
    assert!(reason.contains("'caffe'"), "{reason}");
}

#[test]
fn unknown_dtype_is_named() {
    let text = with(
        "input_spec",
        r#"[{"name": "x", "dtype": "float128", "shape": [1]}]"#,
    );
    let (field, reason) = config_error(&text);
    assert_eq!(field, "input_spec[0].dtype");
    assert!(reason.contains("float128"), "{reason}");
}

#[test]
fn bad_dims_are_named() {
    for (dim, expect) in [
        ("0", "positive"),
        ("-3", "positive"),
        ("1.5", "positive"),
        ("true", "expected an int, null or a string, got a bool"),
        ("[1]", "expected an int, null or a string, got a list"),
        ("\"\"", "empty"),
    ] {
        let text = with(
            "output_spec",
            &format!(r#"[{{"name": "o", "dtype": "int8", "shape": [2, {dim}]}}]"#),
        );
        let (field, reason) = config_error(&text);
        assert_eq!(field, "output_spec[0].shape[1]", "dim {dim}");
        assert!(reason.contains(expect), "dim {dim}: {reason}");
    }
}

#[test]
fn empty_and_duplicate_names_are_refused() {
    let (field, _) = config_error(&with(
        "input_spec",
        r#"[{"name": "", "dtype": "int8", "shape": []}]"#,
    ));
    assert_eq!(field, "input_spec[0].name");
    let dup = r#"[{"name": "a", "dtype": "int8", "shape": []}, {"name": "a", "dtype": "int8", "shape": []}]"#;
    let (field, reason) = config_error(&with("input_spec", dup));
    assert_eq!(field, "input_spec[1].name");
    assert!(reason.contains("duplicate"), "{reason}");
}

#[test]
fn spec_entry_must_be_complete() {
    let (field, reason) = config_error(&with("input_spec", r#"[{"name": "x", "dtype": "int8"}]"#));
    assert_eq!(
        (field.as_str(), reason.as_str()),
        ("input_spec[0].shape", "missing")
    );
}

#[test]
fn device_map_must_name_inputs_and_devices() {
    let (field, _) = config_error(&with("input_tensor_device", r#"{"nope": "GPU"}"#));
    assert_eq!(field, "input_tensor_device.nope");
    let (field, reason) = config_error(&with("input_tensor_device", r#"{"x": "TPU"}"#));
    assert_eq!(field, "input_tensor_device.x");
    assert_eq!(reason, r#"expected "GPU" or "CPU", got "TPU""#);
}
