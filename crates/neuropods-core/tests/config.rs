//! config.json parsing: a valid config round-trips, and every kind of
//! mistake is an `InvalidConfig` naming the field.

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
fn to_json_round_trips() {
    let config = ModelConfig::from_json(VALID).unwrap();
    assert_eq!(ModelConfig::from_json(&config.to_json()).unwrap(), config);
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
fn unknown_field_is_named() {
    let (field, reason) = config_error(&with("colour", "\"red\""));
    assert_eq!(field, "colour");
    assert!(reason.contains("unknown field"), "{reason}");
}

#[test]
fn wrong_type_is_named() {
    let (field, reason) = config_error(&with("name", "3"));
    assert_eq!(field, "name");
    assert!(
        reason.contains("expected a string, got a number"),
        "{reason}"
    );
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
        ("true", "an int, null or a string"),
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
    assert!(reason.contains("TPU"), "{reason}");
}
