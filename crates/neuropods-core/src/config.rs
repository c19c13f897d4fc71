//! `config.json`: the model's name, platform and specs, in the original
//! Neuropod's format. Parsing is by hand so that every error names the field.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::spec::{Dim, TensorSpec};
use crate::tensor::DType;
use crate::version::VersionRange;

/// The name of the top-level config file inside a package.
pub const CONFIG_FILE: &str = "config.json";

/// The framework a model runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Platform {
    /// TorchScript, run by libtorch.
    TorchScript,
    /// A TensorFlow GraphDef or SavedModel.
    TensorFlow,
    /// Python code (also written as `pytorch` by the original packagers).
    Python,
}

impl Platform {
    /// The name written in config.json.
    pub fn name(self) -> &'static str {
        match self {
            Platform::TorchScript => "torchscript",
            Platform::TensorFlow => "tensorflow",
            Platform::Python => "python",
        }
    }
}

impl FromStr for Platform {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "torchscript" => Ok(Platform::TorchScript),
            "tensorflow" => Ok(Platform::TensorFlow),
            "python" | "pytorch" => Ok(Platform::Python),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an input tensor should be placed before the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// On the model's GPU, when it runs on one.
    Gpu,
    /// Always on the CPU.
    Cpu,
}

/// The contents of a package's `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Model name.
    pub name: String,
    /// The framework.
    pub platform: Platform,
    /// Framework version range the model needs (`"*"` for any); see
    /// [`crate::version`].
    pub platform_version_semver: VersionRange,
    /// Inputs.
    pub input_spec: Vec<TensorSpec>,
    /// Outputs.
    pub output_spec: Vec<TensorSpec>,
    /// Placement of inputs; inputs not listed go to the GPU.
    pub input_tensor_device: BTreeMap<String, DeviceKind>,
    /// Custom op libraries, relative to `0/ops/`.
    pub custom_ops: Vec<String>,
}

const KNOWN_FIELDS: [&str; 7] = [
    "name",
    "platform",
    "platform_version_semver",
    "input_spec",
    "output_spec",
    "input_tensor_device",
    "custom_ops",
];

impl ModelConfig {
    /// Parses config.json text.
    pub fn from_json(text: &str) -> Result<ModelConfig> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            Error::config(CONFIG_FILE, "<document>", format!("not valid JSON: {e}"))
        })?;
        let obj = value
            .as_object()
            .ok_or_else(|| Error::config(CONFIG_FILE, "<document>", "expected a JSON object"))?;
        if let Some(extra) = obj.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            return Err(Error::config(
                CONFIG_FILE,
                extra.as_str(),
                format!("unknown field (known: {})", KNOWN_FIELDS.join(", ")),
            ));
        }
        let name = required_str(obj, "name")?.to_string();
        if name.is_empty() {
            return Err(Error::config(CONFIG_FILE, "name", "must not be empty"));
        }
        let platform_name = required_str(obj, "platform")?;
        let platform = platform_name.parse().map_err(|()| {
            Error::config(
                CONFIG_FILE,
                "platform",
                format!(
                    "unknown platform '{platform_name}' (expected torchscript, tensorflow or python)"
                ),
            )
        })?;
        let platform_version_semver = match obj.get("platform_version_semver") {
            None | Some(Value::Null) => VersionRange::default(),
            Some(Value::String(s)) => VersionRange::parse(s)
                .map_err(|reason| Error::config(CONFIG_FILE, "platform_version_semver", reason))?,
            Some(other) => {
                return Err(type_error("platform_version_semver", "a string", other));
            }
        };
        let input_spec = parse_specs(obj, "input_spec")?;
        let output_spec = parse_specs(obj, "output_spec")?;
        let input_tensor_device = parse_devices(obj, &input_spec)?;
        let custom_ops = match obj.get("custom_ops") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| type_error(&format!("custom_ops[{i}]"), "a string", v))
                })
                .collect::<Result<_>>()?,
            Some(other) => return Err(type_error("custom_ops", "a list of strings", other)),
        };
        Ok(ModelConfig {
            name,
            platform,
            platform_version_semver,
            input_spec,
            output_spec,
            input_tensor_device,
            custom_ops,
        })
    }

    /// Writes config.json text (the inverse of [`ModelConfig::from_json`]).
    pub fn to_json(&self) -> String {
        let specs = |specs: &[TensorSpec]| -> Value {
            specs
                .iter()
                .map(|s| {
                    let shape: Vec<Value> = s
                        .shape
                        .iter()
                        .map(|d| match d {
                            Dim::Fixed(n) => Value::from(*n),
                            Dim::Any => Value::Null,
                            Dim::Symbol(sym) => Value::from(sym.clone()),
                        })
                        .collect();
                    serde_json::json!({"name": s.name, "dtype": s.dtype.name(), "shape": shape})
                })
                .collect()
        };
        let devices: Map<String, Value> = self
            .input_tensor_device
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    DeviceKind::Gpu => "GPU",
                    DeviceKind::Cpu => "CPU",
                };
                (k.clone(), Value::from(v))
            })
            .collect();
        let value = serde_json::json!({
            "name": self.name,
            "platform": self.platform.name(),
            "platform_version_semver": self.platform_version_semver.as_str(),
            "input_spec": specs(&self.input_spec),
            "output_spec": specs(&self.output_spec),
            "input_tensor_device": devices,
            "custom_ops": self.custom_ops,
        });
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// Placement of one input.
    pub fn input_device(&self, name: &str) -> DeviceKind {
        self.input_tensor_device
            .get(name)
            .copied()
            .unwrap_or(DeviceKind::Gpu)
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn type_error(field: &str, expected: &str, got: &Value) -> Error {
    Error::config(
        CONFIG_FILE,
        field,
        format!("expected {expected}, got {}", json_type(got)),
    )
}

fn required_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str> {
    match obj.get(field) {
        None => Err(Error::config(CONFIG_FILE, field, "missing")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(type_error(field, "a string", other)),
    }
}

fn parse_specs(obj: &Map<String, Value>, field: &str) -> Result<Vec<TensorSpec>> {
    let items = match obj.get(field) {
        None => return Err(Error::config(CONFIG_FILE, field, "missing")),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(type_error(field, "a list of tensor specs", other)),
    };
    let mut specs: Vec<TensorSpec> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let spec = parse_spec(item, &at)?;
        if specs.iter().any(|s| s.name == spec.name) {
            return Err(Error::config(
                CONFIG_FILE,
                format!("{at}.name"),
                format!("duplicate tensor name '{}'", spec.name),
            ));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// Parses one `{"name", "dtype", "shape"}` entry; `at` is its JSON path.
pub fn parse_spec(item: &Value, at: &str) -> Result<TensorSpec> {
    let entry = item
        .as_object()
        .ok_or_else(|| type_error(at, "an object with name, dtype and shape", item))?;
    if let Some(extra) = entry
        .keys()
        .find(|k| !["name", "dtype", "shape"].contains(&k.as_str()))
    {
        return Err(Error::config(
            CONFIG_FILE,
            format!("{at}.{extra}"),
            "unknown field (known: name, dtype, shape)",
        ));
    }
    let name = required_str(entry, "name")
        .map_err(|e| rebase(e, at))?
        .to_string();
    if name.is_empty() {
        return Err(Error::config(
            CONFIG_FILE,
            format!("{at}.name"),
            "must not be empty",
        ));
    }
    let dtype_name = required_str(entry, "dtype").map_err(|e| rebase(e, at))?;
    let dtype = DType::from_name(dtype_name).ok_or_else(|| {
        Error::config(
            CONFIG_FILE,
            format!("{at}.dtype"),
            format!(
                "unknown dtype '{dtype_name}' (expected one of: {})",
                DType::ALL.map(DType::name).join(", ")
            ),
        )
    })?;
    let dims = match entry.get("shape") {
        None => return Err(Error::config(CONFIG_FILE, format!("{at}.shape"), "missing")),
        Some(Value::Array(dims)) => dims,
        Some(other) => return Err(type_error(&format!("{at}.shape"), "a list", other)),
    };
    let shape = dims
        .iter()
        .enumerate()
        .map(|(d, v)| parse_dim(v, &format!("{at}.shape[{d}]")))
        .collect::<Result<_>>()?;
    Ok(TensorSpec { name, dtype, shape })
}

fn parse_dim(v: &Value, at: &str) -> Result<Dim> {
    match v {
        Value::Null => Ok(Dim::Any),
        Value::String(s) if s.is_empty() => {
            Err(Error::config(CONFIG_FILE, at, "a symbol must not be empty"))
        }
        Value::String(s) => Ok(Dim::Symbol(s.clone())),
        Value::Number(n) => match n.as_i64() {
            Some(k) if k >= 1 => Ok(Dim::Fixed(k as usize)),
            _ => Err(Error::config(
                CONFIG_FILE,
                at,
                format!("a fixed dim must be a positive integer, got {n}"),
            )),
        },
        other => Err(type_error(at, "an int, null or a string", other)),
    }
}

fn rebase(err: Error, at: &str) -> Error {
    match err {
        Error::InvalidConfig {
            file,
            field,
            reason,
        } => Error::InvalidConfig {
            file,
            field: format!("{at}.{field}"),
            reason,
        },
        other => other,
    }
}

fn parse_devices(
    obj: &Map<String, Value>,
    inputs: &[TensorSpec],
) -> Result<BTreeMap<String, DeviceKind>> {
    let map = match obj.get("input_tensor_device") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(type_error(
                "input_tensor_device",
                "an object of input name to \"GPU\" or \"CPU\"",
                other,
            ))
        }
    };
    let mut devices = BTreeMap::new();
    for (name, v) in map {
        let at = format!("input_tensor_device.{name}");
        if !inputs.iter().any(|s| &s.name == name) {
            return Err(Error::config(CONFIG_FILE, at, "not an input in input_spec"));
        }
        let kind = match v.as_str() {
            Some("GPU") => DeviceKind::Gpu,
            Some("CPU") => DeviceKind::Cpu,
            _ => {
                return Err(Error::config(
                    CONFIG_FILE,
                    at,
                    format!("expected \"GPU\" or \"CPU\", got {v}"),
                ))
            }
        };
        devices.insert(name.clone(), kind);
    }
    Ok(devices)
}
