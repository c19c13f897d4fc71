//! The parsed config.json and the load options to and from their ABI form
//! ([`ModelConfigRef`], [`BackendOptionsRef`]): the core describes what it
//! parsed, the plugin glue reads it back field by field, and nothing is
//! parsed twice.

use crate::abi::{
    BackendOptionsRef, DimRef, InputDeviceRef, ModelConfigRef, StrRef, TensorSpecRef, DEVICE_CPU,
    DEVICE_GPU, DIM_ANY, DIM_FIXED, DIM_SYMBOL,
};
use crate::config::{DeviceKind, ModelConfig, Platform};
use crate::error::{Error, Result};
use crate::options::BackendOptions;
use crate::spec::{Dim, TensorSpec};
use crate::tensor::DType;
use crate::version::VersionRange;

const PLATFORMS: [(Platform, u32); 4] = [
    (Platform::TorchScript, 1),
    (Platform::TensorFlow, 2),
    (Platform::Python, 3),
    (Platform::Onnx, 4),
];

fn platform_code(platform: Platform) -> u32 {
    PLATFORMS
        .iter()
        .find(|(p, _)| *p == platform)
        .map_or(0, |(_, code)| *code)
}

/// The arrays a [`ModelConfigRef`] points into, borrowing the config's
/// strings; the description is valid while this lives.
pub struct ConfigParts<'a> {
    // Each spec's dims; the specs below point into them.
    _dims: Vec<Vec<DimRef>>,
    inputs: Vec<TensorSpecRef>,
    outputs: Vec<TensorSpecRef>,
    devices: Vec<InputDeviceRef>,
    custom_ops: Vec<StrRef>,
    config: &'a ModelConfig,
}

fn dim_ref(dim: &Dim) -> DimRef {
    let empty = StrRef::new("");
    match dim {
        Dim::Fixed(size) => DimRef {
            kind: DIM_FIXED,
            size: *size as u64,
            symbol: empty,
        },
        Dim::Any => DimRef {
            kind: DIM_ANY,
            size: 0,
            symbol: empty,
        },
        Dim::Symbol(name) => DimRef {
            kind: DIM_SYMBOL,
            size: 0,
            symbol: StrRef::new(name),
        },
    }
}

fn spec_refs(specs: &[TensorSpec], dims: &mut Vec<Vec<DimRef>>) -> Vec<TensorSpecRef> {
    specs
        .iter()
        .map(|spec| {
            let spec_dims: Vec<DimRef> = spec.shape.iter().map(dim_ref).collect();
            // The Vec's heap block does not move when the Vec is moved.
            let r = TensorSpecRef {
                name: StrRef::new(&spec.name),
                dtype: spec.dtype.code(),
                dims: spec_dims.as_ptr(),
                rank: spec_dims.len(),
            };
            dims.push(spec_dims);
            r
        })
        .collect()
}

impl<'a> ConfigParts<'a> {
    /// Lays out `config` for [`ConfigParts::describe`].
    pub fn new(config: &'a ModelConfig) -> Self {
        let mut dims = Vec::new();
        let inputs = spec_refs(&config.input_spec, &mut dims);
        let outputs = spec_refs(&config.output_spec, &mut dims);
        let devices = config
            .input_tensor_device
            .iter()
            .map(|(input, device)| InputDeviceRef {
                input: StrRef::new(input),
                device: match device {
                    DeviceKind::Gpu => DEVICE_GPU,
                    DeviceKind::Cpu => DEVICE_CPU,
                },
            })
            .collect();
        let custom_ops = config.custom_ops.iter().map(|s| StrRef::new(s)).collect();
        ConfigParts {
            _dims: dims,
            inputs,
            outputs,
            devices,
            custom_ops,
            config,
        }
    }

    /// The config's ABI description, pointing into `self` and the config.
    pub fn describe(&self) -> ModelConfigRef {
        ModelConfigRef {
            name: StrRef::new(&self.config.name),
            platform: platform_code(self.config.platform),
            platform_version_semver: StrRef::new(self.config.platform_version_semver.as_str()),
            inputs: self.inputs.as_ptr(),
            n_inputs: self.inputs.len(),
            outputs: self.outputs.as_ptr(),
            n_outputs: self.outputs.len(),
            input_devices: self.devices.as_ptr(),
            n_input_devices: self.devices.len(),
            custom_ops: self.custom_ops.as_ptr(),
            n_custom_ops: self.custom_ops.len(),
        }
    }
}

/// `len` elements at `ptr` (which may dangle when `len` is 0).
///
/// # Safety
/// `ptr` must point to `len` readable elements living as long as `'a`.
unsafe fn elements<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract (non-null, as `len` > 0).
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// # Safety
/// As [`StrRef::as_bytes`].
unsafe fn text(s: &StrRef, what: &str) -> Result<String> {
    // SAFETY: the caller's contract; the bytes are copied at once.
    String::from_utf8(unsafe { s.as_bytes() }.to_vec())
        .map_err(|_| Error::Internal(format!("load request: {what} is not valid UTF-8")))
}

/// # Safety
/// As [`read_config`].
unsafe fn read_specs(ptr: *const TensorSpecRef, len: usize) -> Result<Vec<TensorSpec>> {
    // SAFETY: every pointer read here (the specs, their names, dims and
    // symbols) is valid for its length: the caller's contract.
    unsafe {
        elements(ptr, len)
            .iter()
            .map(|r| {
                let name = text(&r.name, "a tensor name")?;
                let dtype = DType::from_code(r.dtype).ok_or_else(|| {
                    Error::Internal(format!("load request: '{name}' has dtype code {}", r.dtype))
                })?;
                let shape = elements(r.dims, r.rank)
                    .iter()
                    .map(|d| match d.kind {
                        DIM_FIXED => usize::try_from(d.size).map(Dim::Fixed).map_err(|_| {
                            Error::Internal(format!("load request: '{name}' has dim {}", d.size))
                        }),
                        DIM_ANY => Ok(Dim::Any),
                        DIM_SYMBOL => text(&d.symbol, "a symbol").map(Dim::Symbol),
                        kind => Err(Error::Internal(format!(
                            "load request: '{name}' has dim kind {kind}"
                        ))),
                    })
                    .collect::<Result<_>>()?;
                Ok(TensorSpec { name, dtype, shape })
            })
            .collect()
    }
}

/// Reads a config described by [`ConfigParts::describe`] back.
///
/// # Safety
/// Every pointer in `r` must be valid for its length, as `describe` leaves
/// them while its parts live.
pub unsafe fn read_config(r: &ModelConfigRef) -> Result<ModelConfig> {
    // SAFETY: every pointer read here (through `elements`, `text` and
    // `read_specs`) is one of `r`'s, valid for its length: the caller's
    // contract.
    unsafe {
        let platform = PLATFORMS
            .iter()
            .find(|(_, code)| *code == r.platform)
            .map(|(p, _)| *p)
            .ok_or_else(|| {
                Error::Internal(format!("load request: platform code {}", r.platform))
            })?;
        let input_tensor_device = elements(r.input_devices, r.n_input_devices)
            .iter()
            .map(|d| {
                let device = match d.device {
                    DEVICE_GPU => DeviceKind::Gpu,
                    DEVICE_CPU => DeviceKind::Cpu,
                    other => {
                        return Err(Error::Internal(format!(
                            "load request: device code {other}"
                        )))
                    }
                };
                Ok((text(&d.input, "an input name")?, device))
            })
            .collect::<Result<_>>()?;
        let custom_ops = elements(r.custom_ops, r.n_custom_ops)
            .iter()
            .map(|s| text(s, "a custom op"))
            .collect::<Result<_>>()?;
        Ok(ModelConfig {
            name: text(&r.name, "the model name")?,
            platform,
            // A version range crosses as its text, which the core already
            // parsed and accepted from config.json; it has no C layout.
            platform_version_semver: VersionRange::parse(&text(
                &r.platform_version_semver,
                "platform_version_semver",
            )?)
            .map_err(|e| Error::Internal(format!("platform_version_semver from the core: {e}")))?,
            input_spec: read_specs(r.inputs, r.n_inputs)?,
            output_spec: read_specs(r.outputs, r.n_outputs)?,
            input_tensor_device,
            custom_ops,
        })
    }
}

const UNSET: i64 = -1;

impl From<&BackendOptions> for BackendOptionsRef {
    fn from(options: &BackendOptions) -> Self {
        let value = |v: Option<u32>| v.map_or(UNSET, i64::from);
        BackendOptionsRef {
            visible_gpu: value(options.visible_gpu),
            intra_op_threads: value(options.intra_op_threads),
            inter_op_threads: value(options.inter_op_threads),
        }
    }
}

impl TryFrom<&BackendOptionsRef> for BackendOptions {
    type Error = Error;

    fn try_from(r: &BackendOptionsRef) -> Result<Self> {
        let value = |name: &str, v: i64| match v {
            UNSET => Ok(None),
            v => u32::try_from(v)
                .map(Some)
                .map_err(|_| Error::Internal(format!("load request: {name} = {v}"))),
        };
        Ok(BackendOptions {
            visible_gpu: value("visible_gpu", r.visible_gpu)?,
            intra_op_threads: value("intra_op_threads", r.intra_op_threads)?,
            inter_op_threads: value("inter_op_threads", r.inter_op_threads)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_options_cross_unchanged() {
        let config = ModelConfig::from_json(
            r#"{"name": "m", "platform": "tensorflow", "platform_version_semver": "^2.0",
                "input_spec": [{"name": "x", "dtype": "float32", "shape": [null, 3, "batch"]},
                               {"name": "s", "dtype": "string", "shape": []}],
                "output_spec": [{"name": "y", "dtype": "int64", "shape": ["batch"]}],
                "input_tensor_device": {"x": "GPU", "s": "CPU"},
                "custom_ops": ["a.so", "b.so"]}"#,
        )
        .unwrap();
        let parts = ConfigParts::new(&config);
        let described = parts.describe();
        // SAFETY: `parts` lives, so the description's pointers are valid.
        assert_eq!(unsafe { read_config(&described) }.unwrap(), config);

        for options in [
            BackendOptions::default(),
            BackendOptions {
                visible_gpu: Some(0),
                intra_op_threads: Some(u32::MAX),
                inter_op_threads: Some(0),
            },
        ] {
            let r = BackendOptionsRef::from(&options);
            assert_eq!(BackendOptions::try_from(&r).unwrap(), options);
        }
        let bad = BackendOptionsRef {
            visible_gpu: -2,
            intra_op_threads: UNSET,
            inter_op_threads: UNSET,
        };
        assert!(matches!(
            BackendOptions::try_from(&bad),
            Err(Error::Internal(_))
        ));
    }
}
