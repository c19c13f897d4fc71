//! `config.json`: the model's name, platform and specs, in the original
//! Neuropod's format, read strictly by [`crate::json::parse`] (every error
//! names the field).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::json;
use crate::spec::{Dim, TensorSpec};
use crate::tensor::DType;
use crate::version::VersionRange;

/// Backend-specific settings, relative to the package root.
pub const BACKEND_CONFIG_FILE: &str = "0/config.json";

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
    /// An ONNX model, run by ONNX Runtime.
    Onnx,
}

impl Platform {
    /// The name written in config.json.
    pub fn name(self) -> &'static str {
        match self {
            Platform::TorchScript => "torchscript",
            Platform::TensorFlow => "tensorflow",
            Platform::Python => "python",
            Platform::Onnx => "onnx",
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
            "onnx" => Ok(Platform::Onnx),
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum DeviceKind {
    /// On the model's GPU, when it runs on one.
    #[serde(rename = "GPU")]
    Gpu,
    /// Always on the CPU.
    #[serde(rename = "CPU")]
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

impl ModelConfig {
    /// Parses config.json text. Configs of old Neuropod versions, without
    /// `platform_version_semver`, `input_tensor_device` or `custom_ops`, are
    /// accepted with their defaults.
    pub fn from_json(text: &str) -> Result<ModelConfig> {
        let file: ConfigFile = json::parse(CONFIG_FILE, text)?;
        if file.name.is_empty() {
            return Err(Error::config(CONFIG_FILE, "name", "must not be empty"));
        }
        let input_spec = specs("input_spec", file.input_spec.0)?;
        let output_spec = specs("output_spec", file.output_spec.0)?;
        let input_tensor_device = file.input_tensor_device.unwrap_or_default();
        if let Some(name) = input_tensor_device
            .keys()
            .find(|name| !input_spec.iter().any(|s| &s.name == *name))
        {
            return Err(Error::config(
                CONFIG_FILE,
                format!("input_tensor_device.{name}"),
                "not an input in input_spec",
            ));
        }
        Ok(ModelConfig {
            name: file.name,
            platform: file.platform,
            platform_version_semver: match file.platform_version_semver {
                None => VersionRange::default(),
                Some(text) => VersionRange::parse(&text).map_err(|reason| {
                    Error::config(CONFIG_FILE, "platform_version_semver", reason)
                })?,
            },
            input_spec,
            output_spec,
            input_tensor_device,
            custom_ops: file.custom_ops.0,
        })
    }

    /// Placement of one input.
    pub fn input_device(&self, name: &str) -> DeviceKind {
        self.input_tensor_device
            .get(name)
            .copied()
            .unwrap_or(DeviceKind::Gpu)
    }
}

/// config.json as written. The optional fields are absent (or null) in
/// configs of old Neuropod versions; list fields take the original's empty
/// forms ([`json::List`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct ConfigFile {
    name: String,
    #[serde(deserialize_with = "platform")]
    platform: Platform,
    platform_version_semver: Option<String>,
    input_spec: json::List<SpecEntry>,
    output_spec: json::List<SpecEntry>,
    input_tensor_device: Option<BTreeMap<String, DeviceKind>>,
    #[serde(default)]
    custom_ops: json::List<String>,
}

/// One entry of `input_spec` or `output_spec`.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with name, dtype and shape"
)]
struct SpecEntry {
    name: String,
    #[serde(deserialize_with = "dtype")]
    dtype: DType,
    shape: Vec<ShapeDim>,
}

/// The specs of `field`, with names checked: none empty, none twice.
fn specs(field: &str, entries: Vec<SpecEntry>) -> Result<Vec<TensorSpec>> {
    let mut specs: Vec<TensorSpec> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("{field}[{i}].name");
        if entry.name.is_empty() {
            return Err(Error::config(CONFIG_FILE, at, "must not be empty"));
        }
        if specs.iter().any(|s| s.name == entry.name) {
            return Err(Error::config(
                CONFIG_FILE,
                at,
                format!("duplicate tensor name '{}'", entry.name),
            ));
        }
        specs.push(TensorSpec {
            name: entry.name,
            dtype: entry.dtype,
            shape: entry.shape.into_iter().map(|d| d.0).collect(),
        });
    }
    Ok(specs)
}

fn platform<'de, D: Deserializer<'de>>(d: D) -> Result<Platform, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map_err(|()| {
        de::Error::custom(format!(
            "unknown platform '{name}' (expected torchscript, tensorflow, python or onnx)"
        ))
    })
}

fn dtype<'de, D: Deserializer<'de>>(d: D) -> Result<DType, D::Error> {
    let name = String::deserialize(d)?;
    DType::from_name(&name).ok_or_else(|| {
        de::Error::custom(format!(
            "unknown dtype '{name}' (expected one of: {})",
            DType::ALL.map(DType::name).join(", ")
        ))
    })
}

/// A dim as written: an int >= 1, null (any size) or a non-empty symbol.
struct ShapeDim(Dim);

impl<'de> Deserialize<'de> for ShapeDim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DimVisitor).map(ShapeDim)
    }
}

struct DimVisitor;

fn not_positive<E: de::Error>(n: impl fmt::Display) -> E {
    E::custom(format!("a fixed dim must be a positive integer, got {n}"))
}

impl<'de> Visitor<'de> for DimVisitor {
    type Value = Dim;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an int, null or a string")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Dim, E> {
        match usize::try_from(n) {
            Ok(size) if size >= 1 => Ok(Dim::Fixed(size)),
            _ => Err(not_positive(n)),
        }
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Dim, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(not_positive(n)),
        }
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Dim, E> {
        Err(not_positive(n))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Dim, E> {
        Ok(Dim::Any)
    }

    fn visit_none<E: de::Error>(self) -> Result<Dim, E> {
        Ok(Dim::Any)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Dim, E> {
        if s.is_empty() {
            return Err(E::custom("a symbol must not be empty"));
        }
        Ok(Dim::Symbol(s.to_string()))
    }
}
