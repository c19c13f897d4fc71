//! From `visible_gpu` and `input_tensor_device` to where things run. The
//! core cannot ask a framework how many GPUs it sees, so backends call these
//! with their framework's answer; the policy lives here, once.

use crate::config::{DeviceKind, ModelConfig};
use crate::error::{Error, Result};

/// Where a model or a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// CUDA device with this index.
    Gpu(u32),
}

/// The device a model runs on: the CPU for `visible_gpu=None`; GPU `i` when
/// the framework sees it; the CPU with a warning when the framework sees no
/// GPU at all; an error when it sees GPUs but not that one.
pub fn model_device(
    visible_gpu: Option<u32>,
    gpu_count: usize,
) -> Result<(Device, Option<String>)> {
    match visible_gpu {
        None => Ok((Device::Cpu, None)),
        Some(_) if gpu_count == 0 => Ok((
            Device::Cpu,
            Some(format!(
                "visible_gpu={} was requested but no CUDA device is available; running on CPU",
                visible_gpu.unwrap_or_default()
            )),
        )),
        Some(i) if (i as usize) < gpu_count => Ok((Device::Gpu(i), None)),
        Some(i) => Err(Error::InvalidInput(format!(
            "visible_gpu={i} but only {gpu_count} CUDA device(s) are visible"
        ))),
    }
}

/// Where an input goes before the model runs: the model's device, unless
/// config.json pins the input to the CPU.
pub fn input_device(config: &ModelConfig, input: &str, model: Device) -> Device {
    match config.input_device(input) {
        DeviceKind::Cpu => Device::Cpu,
        DeviceKind::Gpu => model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_gpu_requested_runs_on_cpu() {
        assert_eq!(model_device(None, 4).unwrap(), (Device::Cpu, None));
    }

    #[test]
    fn missing_cuda_falls_back_with_a_warning() {
        let (device, warning) = model_device(Some(0), 0).unwrap();
        assert_eq!(device, Device::Cpu);
        assert!(warning.unwrap().contains("visible_gpu=0"));
    }

    #[test]
    fn visible_gpu_out_of_range_is_an_error() {
        let err = model_device(Some(2), 1).unwrap_err().to_string();
        assert!(
            err.contains("visible_gpu=2") && err.contains("1 CUDA"),
            "{err}"
        );
        assert_eq!(model_device(Some(1), 2).unwrap().0, Device::Gpu(1));
    }
}
