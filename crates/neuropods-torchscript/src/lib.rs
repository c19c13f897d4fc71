//! The TorchScript backend of Neuropods, on `tch` (libtorch).
//!
//! Built as a shared library that the core opens the first time a
//! torchscript model is loaded (see `neuropods_core::backend::registry`). Loading and
//! tensors go through tch; calling `forward` goes through a small C++ file
//! (`cpp/forward.cpp`), because tch cannot match inputs to argument names or
//! build a `Dict` of the type the schema declares.

mod custom_ops;
mod forward;
mod libtorch;
mod model_file;
mod shared_allocator;

use std::cell::Cell;
use std::ffi::{c_void, CStr};
use std::sync::Arc;

use neuropods_abi::device::{input_device, model_device, Device};
use neuropods_abi::plugin::{points_into_inputs, Backend, BackendModel, LoadContext};
use neuropods_abi::{Buffer, DType, Error, Result, Tensor, TensorData, TensorMap};
use tch::{CModule, Kind};

/// The TorchScript backend.
pub struct TorchScriptBackend;

neuropods_abi::export_backend!(TorchScriptBackend);

/// Where the model file lives inside a package.
pub const MODEL_FILE: &str = "0/data/model.pt";

fn tch_device(device: Device) -> tch::Device {
    match device {
        Device::Cpu => tch::Device::Cpu,
        Device::Gpu(i) => tch::Device::Cuda(i as usize),
    }
}

fn kind_of(dtype: DType) -> Option<Kind> {
    Some(match dtype {
        DType::Float16 => Kind::Half,
        DType::Float32 => Kind::Float,
        DType::Float64 => Kind::Double,
        DType::Int8 => Kind::Int8,
        DType::Int16 => Kind::Int16,
        DType::Int32 => Kind::Int,
        DType::Int64 => Kind::Int64,
        DType::Uint8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
        // libtorch has no usable uint16/32/64 tensors in tch.
        DType::Uint16 | DType::Uint32 | DType::Uint64 | DType::String => return None,
    })
}

fn dtype_of(kind: Kind) -> Option<DType> {
    Some(match kind {
        Kind::Half => DType::Float16,
        Kind::Float => DType::Float32,
        Kind::Double => DType::Float64,
        Kind::Int8 => DType::Int8,
        Kind::Int16 => DType::Int16,
        Kind::Int => DType::Int32,
        Kind::Int64 => DType::Int64,
        Kind::Uint8 => DType::Uint8,
        Kind::Bool => DType::Bool,
        _ => return None,
    })
}

/// Sizes libtorch's inter-op pool. tch's own wrapper panics when libtorch
/// refuses (the pool can only be sized before it first runs, e.g. not after
/// Python's torch used it), so call libtorch directly and keep its message.
fn set_interop_threads(n: i32) -> std::result::Result<(), String> {
    // SAFETY: plain libtorch calls; the error string is malloc'ed by
    // torch-sys and freed here once.
    unsafe {
        torch_sys::at_set_num_interop_threads(n);
        let err = torch_sys::get_and_reset_last_err();
        if err.is_null() {
            return Ok(());
        }
        let message = CStr::from_ptr(err).to_string_lossy().into_owned();
        libc::free(err as *mut c_void);
        Err(message.lines().next().unwrap_or_default().to_string())
    }
}

/// Applies thread settings. Both are process-wide in libtorch, and the
/// inter-op pool can only be sized once, before it first runs: a refused
/// size is a warning, not an error, since the model runs either way.
fn apply_threads(ctx: &LoadContext) {
    if let Some(n) = ctx.options.intra_op_threads {
        tch::set_num_threads(n as i32);
    }
    // 0 (no inter-op pool) is what libtorch does for a forward already.
    if let Some(n) = ctx.options.inter_op_threads.filter(|&n| n > 0) {
        if let Err(e) = set_interop_threads(n as i32) {
            ctx.warn(format!(
                "inter_op_threads={n} ignored: libtorch's inter-op pool is process-wide and already set ({e})"
            ));
        }
    }
}

/// Applies `intra_op_threads` on the calling thread before a forward.
///
/// libtorch's intra-op pool is OpenMP, whose thread count is a per-thread
/// setting: `set_num_threads` at load reaches only the loading thread, and
/// every other thread calling the model would use one OpenMP thread per
/// core. With several callers that oversubscribes the cores (measured:
/// two callers on two cores got no more throughput than one). Set once per
/// thread and value.
fn apply_intra_op_threads_here(n: u32) {
    thread_local! {
        static APPLIED: Cell<Option<u32>> = const { Cell::new(None) };
    }
    APPLIED.with(|applied| {
        if applied.get() != Some(n) {
            tch::set_num_threads(n as i32);
            applied.set(Some(n));
        }
    });
}

thread_local! {
    /// Set in the one thread of a forked child (the thread that called
    /// `fork`), by the handler [`note_forks`] registers.
    static FORKED_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Registers, once, a fork handler that marks the forking thread in the
/// child. libtorch's intra-op pool is OpenMP, and libgomp keeps a pool per
/// thread that started a parallel region: in a fork, that thread's pool
/// lists threads the fork did not copy, and its next parallel op waits for
/// them forever (measured: a 600x600 matmul in the parent, then in the
/// child). Ops run single-threaded on that thread never use the pool.
fn note_forks() {
    extern "C" fn in_child() {
        FORKED_HERE.with(|forked| forked.set(true));
    }
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a handler that only sets a thread-local flag;
        // this library is never unloaded.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// How many CUDA devices libtorch sees, loading CUDA first when a GPU is
/// asked for.
fn cuda_device_count(ctx: &LoadContext) -> usize {
    if ctx.options.visible_gpu.is_none() {
        return 0;
    }
    if let Err(e) = libtorch::load_cuda() {
        ctx.warn(format!("cannot load libtorch's CUDA support: {e}"));
        return 0;
    }
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

impl Backend for TorchScriptBackend {
    fn load(ctx: &LoadContext) -> Result<Box<dyn BackendModel>> {
        note_forks();
        let (release, warning) = libtorch::check_version()?;
        if let Some(warning) = warning {
            ctx.warn(warning);
        }
        ctx.config
            .platform_version_semver
            .check("torchscript", "libtorch", release)?;
        apply_threads(ctx);
        if let Some(shared) = &ctx.shared_allocator {
            shared_allocator::install(shared);
        }
        let gpus = cuda_device_count(ctx);
        let (device, warning) = model_device(ctx.options.visible_gpu, gpus)?;
        if let Some(warning) = warning {
            ctx.warn(warning);
        }
        custom_ops::load(&ctx.package_root, &ctx.config)?;
        let path = ctx.package_root.join(MODEL_FILE);
        if !path.is_file() {
            return Err(Error::InvalidPackage {
                path: ctx.package_root.clone(),
                reason: format!("missing {MODEL_FILE}"),
            });
        }
        model_file::refuse_legacy_format(&ctx.package_root, MODEL_FILE)?;
        let mut module = CModule::load_on_device(&path, tch_device(device))
            .map_err(|e| Error::framework(format!("cannot load {MODEL_FILE}: {e}")))?;
        module
            .f_set_eval()
            .map_err(|e| Error::framework(format!("set_eval: {e}")))?;
        let input_devices = ctx
            .config
            .input_spec
            .iter()
            .map(|s| (s.name.clone(), input_device(&ctx.config, &s.name, device)))
            .collect();
        Ok(Box::new(TorchScriptModel {
            module,
            intra_op_threads: ctx.options.intra_op_threads,
            input_devices,
            output_names: ctx
                .config
                .output_spec
                .iter()
                .map(|s| s.name.clone())
                .collect(),
        }))
    }
}

struct TorchScriptModel {
    module: CModule,
    intra_op_threads: Option<u32>,
    input_devices: std::collections::HashMap<String, Device>,
    output_names: Vec<String>,
}

/// Keeps a libtorch tensor alive while Neuropods (or numpy) reads its memory.
struct TorchStorage(#[allow(dead_code)] tch::Tensor);
// SAFETY: the tensor is only dropped, never used, after being wrapped;
// libtorch's reference counting is thread-safe.
unsafe impl Sync for TorchStorage {}

impl TorchScriptModel {
    fn input_to_torch<'a>(&self, name: &'a str, tensor: &'a Tensor) -> Result<forward::Input<'a>> {
        if let Some(strings) = tensor.strings() {
            if tensor.shape().len() != 1 {
                return Err(Error::InvalidInput(format!(
                    "input '{name}': TorchScript takes strings as a 1-D List[str], got shape {:?}",
                    tensor.shape()
                )));
            }
            return Ok(forward::Input::strings(name, strings));
        }
        let kind = kind_of(tensor.dtype()).ok_or_else(|| {
            Error::InvalidInput(format!(
                "input '{name}': dtype {} is not supported by libtorch",
                tensor.dtype()
            ))
        })?;
        let size: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
        let device = self.input_devices.get(name).copied().unwrap_or(Device::Cpu);
        // A view, no copy: the tensor's storage holds the buffer, so a
        // module that keeps an input keeps the caller's memory alive.
        // Outputs that alias it are still copied (see `output_from_torch`).
        let cpu = match tensor.data() {
            TensorData::Foreign(lent) => {
                forward::tensor_over(lent.as_ptr(), lent.clone(), &size, kind)
            }
            TensorData::Numeric(frozen) => {
                forward::tensor_over(frozen.as_ptr().cast_mut(), frozen.clone(), &size, kind)
            }
            TensorData::Strings(_) => {
                return Err(Error::Internal(
                    "a string tensor reached the numeric path".into(),
                ))
            }
        }
        .map_err(Error::framework)?;
        let placed = match (device, tensor.data()) {
            // libtorch may write through an input (a model working in
            // place): lent memory may be written, as when the caller calls
            // libtorch directly, but nobody may write frozen bytes, so the
            // model gets a copy of them. Moving to a GPU copies anyway.
            (Device::Cpu, TensorData::Foreign(_)) => cpu,
            (Device::Cpu, _) => {
                let mut copy = cpu.f_empty_like().map_err(Error::framework)?;
                copy.f_copy_(&cpu).map_err(Error::framework)?;
                copy
            }
            (gpu, _) => cpu.f_to_device(tch_device(gpu)).map_err(Error::framework)?,
        };
        Ok(forward::Input::tensor(name, placed))
    }

    fn output_from_torch(name: &str, tensor: tch::Tensor, inputs: &TensorMap) -> Result<Tensor> {
        let kind = tensor.f_kind().map_err(Error::framework)?;
        let dtype = dtype_of(kind).ok_or_else(|| {
            Error::framework(format!(
                "output '{name}' has unsupported torch dtype {kind:?}"
            ))
        })?;
        let mut cpu = tensor
            .f_to_device(tch::Device::Cpu)
            .and_then(|t| t.f_contiguous())
            .map_err(Error::framework)?;
        let shape: Vec<usize> = cpu.size().iter().map(|&d| d as usize).collect();
        let nbytes = cpu.numel() * dtype.item_size().unwrap_or(1);
        // A model that returns (a view of) an input would hand back memory
        // the caller owns; copy it so outputs never alias inputs.
        if nbytes > 0 && points_into_inputs(inputs, cpu.data_ptr() as *const u8) {
            let mut copy = cpu.f_empty_like().map_err(Error::framework)?;
            copy.f_copy_(&cpu).map_err(Error::framework)?;
            cpu = copy;
        }
        let ptr = cpu.data_ptr() as *const u8;
        // SAFETY: `cpu` is contiguous on the CPU with `nbytes` bytes at `ptr`,
        // and is kept alive by the buffer's owner.
        let buffer = unsafe { Buffer::from_raw_parts(ptr, nbytes, Arc::new(TorchStorage(cpu))) };
        Tensor::from_buffer(dtype, shape, buffer)
    }
}

impl BackendModel for TorchScriptModel {
    fn infer(&self, inputs: &TensorMap) -> Result<TensorMap> {
        let threads = if FORKED_HERE.with(Cell::get) {
            Some(1)
        } else {
            self.intra_op_threads
        };
        if let Some(n) = threads {
            apply_intra_op_threads_here(n);
        }
        let torch_inputs = inputs
            .iter()
            .map(|(name, tensor)| self.input_to_torch(name, tensor))
            .collect::<Result<Vec<_>>>()?;
        let raw = forward::call(&self.module, &torch_inputs).map_err(|e| match e {
            // The caller's mistake: 400 / INVALID_ARGUMENT from a server.
            forward::CallError::MissingInput(message) => Error::InvalidInput(message),
            forward::CallError::Failed { message, detail } => Error::backend(message, detail),
        })?;
        let mut outputs = TensorMap::new();
        let positional = raw.iter().filter(|o| o.name.is_empty()).count();
        if positional > 0 && positional != self.output_names.len() {
            return Err(Error::framework(format!(
                "forward returned {positional} unnamed output(s) but the output spec has {} ({})",
                self.output_names.len(),
                self.output_names.join(", ")
            )));
        }
        for output in raw {
            let name = match (output.name.is_empty(), output.position) {
                (false, _) => output.name,
                (true, Some(i)) if i < self.output_names.len() => self.output_names[i].clone(),
                _ => {
                    return Err(Error::framework(
                        "forward returned an output with an empty name",
                    ))
                }
            };
            let tensor = match output.value {
                forward::Value::Tensor(t) => Self::output_from_torch(&name, t, inputs)?,
                forward::Value::Strings(s) => Tensor::from_strings(vec![s.len()], s)?,
            };
            outputs.insert(name, tensor);
        }
        Ok(outputs)
    }
}
