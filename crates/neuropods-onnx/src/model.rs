//! Loading an ONNX model into a session, and running it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use neuropods_core::backend::plugin::{points_into_inputs, Backend, BackendModel, LoadContext};
use neuropods_core::device::model_device;
use neuropods_core::{Buffer, DType, Dim, Error, Result, Tensor, TensorMap, TensorSpec};
use ort::ep::{ExecutionProvider, CUDA};
use ort::memory::Allocator;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{DynTensorValueType, DynValue, Outlet, TensorRef, ValueType};

use crate::dtypes;
use crate::runtime;

/// The ONNX backend.
pub struct OnnxBackend;

/// The model, relative to the package root; external-data files sit beside
/// it, where ONNX Runtime looks for them.
pub const MODEL_FILE: &str = "0/data/model.onnx";

fn backend_error(message: impl std::fmt::Display) -> Error {
    Error::Backend {
        platform: "onnx".into(),
        message: message.to_string(),
    }
}

fn package_error(root: &Path, reason: String) -> Error {
    Error::InvalidPackage {
        path: root.to_path_buf(),
        reason,
    }
}

struct OnnxModel {
    // ort's `run` takes `&mut Session`: it holds that ONNX Runtime's `Run` is
    // not safe to call from several threads at once on one session. Calls
    // on one model take turns; each uses the session's intra-op pool, and
    // `neuropods serve --instances N` runs N sessions side by side.
    runner: Mutex<Runner>,
    outputs: Vec<String>,
}

struct Runner {
    session: Session,
    // Asks for the spec's outputs only; None when the spec has every
    // output of the graph (a plain run then costs less).
    run_options: Option<RunOptions<HasSelectedOutputs>>,
}

/// The session settings for these load options: all graph optimisations
/// (as onnxruntime's Python API by default), and the thread counts.
/// `inter_op_threads` > 0 turns on parallel execution, the only mode that
/// uses an inter-op pool; 0 (or None) keeps ONNX Runtime's default, nodes
/// run one after another.
fn session_builder(ctx: &LoadContext, runtime: &runtime::Runtime) -> Result<SessionBuilder> {
    let mut builder = Session::builder(runtime.environment())
        .map_err(backend_error)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(backend_error)?;
    if let Some(n) = ctx.options.intra_op_threads {
        builder = builder
            .with_intra_threads(n as usize)
            .map_err(backend_error)?;
    }
    if let Some(n) = ctx.options.inter_op_threads.filter(|&n| n > 0) {
        builder = builder
            .with_parallel_execution(true)
            .map_err(backend_error)?
            .with_inter_threads(n as usize)
            .map_err(backend_error)?;
    }
    Ok(builder)
}

/// With `visible_gpu=i`, the CUDA execution provider on device `i` when the
/// runtime has it (the onnxruntime-gpu wheel) and it starts; otherwise the
/// CPU, with a warning, as the other backends do. Inputs and outputs stay
/// in CPU memory: ONNX Runtime copies them to and from the device.
fn with_device(ctx: &LoadContext, builder: SessionBuilder) -> Result<SessionBuilder> {
    let Some(gpu) = ctx.options.visible_gpu else {
        return Ok(builder);
    };
    let cpu_fallback = |builder: SessionBuilder, why: String| -> Result<SessionBuilder> {
        if let (_, Some(warning)) = model_device(Some(gpu), 0)? {
            ctx.warn(format!("{warning} ({why})"));
        }
        Ok(builder)
    };
    if !CUDA::is_available().unwrap_or(false) {
        return cpu_fallback(
            builder,
            "this ONNX Runtime has no CUDA execution provider: install onnxruntime-gpu".into(),
        );
    }
    let device_id = i32::try_from(gpu)
        .map_err(|_| Error::InvalidInput(format!("visible_gpu={gpu} is out of range")))?;
    let cuda = CUDA::default()
        .with_device_id(device_id)
        .build()
        .error_on_failure();
    match builder.with_execution_providers([cuda]) {
        Ok(builder) => Ok(builder),
        Err(e) => {
            let why = format!("its CUDA execution provider did not start: {e}");
            cpu_fallback(e.recover(), why)
        }
    }
}

fn names(outlets: &[Outlet]) -> Vec<&str> {
    outlets.iter().map(Outlet::name).collect()
}

/// Checks one spec against the graph's tensor of that name: the dtype, the
/// rank, and fixed sizes that differ.
fn check_spec(root: &Path, spec: &TensorSpec, outlet: &Outlet, what: &str) -> Result<()> {
    let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
        return Err(package_error(
            root,
            format!(
                "{what} '{}' of the ONNX graph is a {}, not a tensor: Neuropods passes tensors",
                spec.name,
                outlet.dtype()
            ),
        ));
    };
    let graph_dtype = dtypes::from_ort(*ty);
    if graph_dtype != Some(spec.dtype) {
        return Err(package_error(
            root,
            format!(
                "{what} '{}' is {} in the spec but {ty:?} in the ONNX graph",
                spec.name,
                spec.dtype.name()
            ),
        ));
    }
    let graph_dims: &[i64] = shape;
    let conflict =
        graph_dims.len() != spec.shape.len()
            || spec.shape.iter().zip(graph_dims).any(
                |(dim, &graph)| matches!(dim, Dim::Fixed(n) if graph >= 0 && *n as i64 != graph),
            );
    if conflict {
        let spec_dims: Vec<String> = spec.shape.iter().map(Dim::to_string).collect();
        let graph_dims: Vec<String> = graph_dims
            .iter()
            .map(|&d| if d < 0 { "None".into() } else { d.to_string() })
            .collect();
        return Err(package_error(
            root,
            format!(
                "{what} '{}' has shape [{}] in the spec but [{}] in the ONNX graph",
                spec.name,
                spec_dims.join(", "),
                graph_dims.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Checks the package's specs against the graph: every spec names a graph
/// tensor of its dtype and shape, and every graph input has a spec (ONNX
/// inputs have no defaults, so one without a spec could never be fed).
fn check_signature(
    root: &Path,
    specs: (&[TensorSpec], &[TensorSpec]),
    session: &Session,
) -> Result<()> {
    let (input_specs, output_specs) = specs;
    for (specs, outlets, what) in [
        (input_specs, session.inputs(), "input"),
        (output_specs, session.outputs(), "output"),
    ] {
        for spec in specs {
            let outlet = outlets
                .iter()
                .find(|o| o.name() == spec.name)
                .ok_or_else(|| {
                    package_error(
                        root,
                        format!(
                            "{what} '{}' is not in the ONNX graph (its {what}s: {})",
                            spec.name,
                            names(outlets).join(", ")
                        ),
                    )
                })?;
            check_spec(root, spec, outlet, what)?;
        }
    }
    if let Some(missing) = session
        .inputs()
        .iter()
        .find(|o| !input_specs.iter().any(|s| s.name == o.name()))
    {
        return Err(package_error(
            root,
            format!(
                "the ONNX graph's input '{}' has no spec (every graph input needs one)",
                missing.name()
            ),
        ));
    }
    Ok(())
}

impl Backend for OnnxBackend {
    fn load(ctx: &LoadContext) -> Result<Box<dyn BackendModel>> {
        let runtime = runtime::get()?;
        match runtime.release {
            Some(release) => {
                ctx.config
                    .platform_version_semver
                    .check("onnx", "ONNX Runtime", release)?;
            }
            None => ctx.warn(format!(
                "cannot read ONNX Runtime's version '{}' ({}); assuming it is one this \
                 backend supports ({})",
                runtime.version,
                runtime.path.display(),
                runtime::SUPPORTED
            )),
        }
        let root = &ctx.package_root;
        let path = root.join(MODEL_FILE);
        if !path.is_file() {
            return Err(package_error(root, format!("no {MODEL_FILE}")));
        }
        let mut builder = with_device(ctx, session_builder(ctx, runtime)?)?;
        let session = builder
            .commit_from_file(&path)
            .map_err(|e| backend_error(format!("cannot load {MODEL_FILE}: {e}")))?;
        check_signature(
            root,
            (&ctx.config.input_spec, &ctx.config.output_spec),
            &session,
        )?;
        let outputs: Vec<String> = ctx
            .config
            .output_spec
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let run_options = if session.outputs().len() == outputs.len() {
            None
        } else {
            let selector = outputs
                .iter()
                .fold(OutputSelector::no_default(), |selector, name| {
                    selector.with(name)
                });
            Some(
                RunOptions::new()
                    .map_err(backend_error)?
                    .with_outputs(selector),
            )
        };
        Ok(Box::new(OnnxModel {
            runner: Mutex::new(Runner {
                session,
                run_options,
            }),
            outputs,
        }))
    }
}

/// Calls `$body` with `$t` bound to the Rust element type of a numeric
/// dtype.
macro_rules! with_element_type {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            DType::Float16 => {
                type $t = half::f16;
                $body
            }
            DType::Float32 => {
                type $t = f32;
                $body
            }
            DType::Float64 => {
                type $t = f64;
                $body
            }
            DType::Int8 => {
                type $t = i8;
                $body
            }
            DType::Int16 => {
                type $t = i16;
                $body
            }
            DType::Int32 => {
                type $t = i32;
                $body
            }
            DType::Int64 => {
                type $t = i64;
                $body
            }
            DType::Uint8 => {
                type $t = u8;
                $body
            }
            DType::Uint16 => {
                type $t = u16;
                $body
            }
            DType::Uint32 => {
                type $t = u32;
                $body
            }
            DType::Uint64 => {
                type $t = u64;
                $body
            }
            DType::Bool => {
                type $t = bool;
                $body
            }
            DType::String => unreachable!("strings are not numeric"),
        }
    };
}

/// An ONNX Runtime value for input `name`. Numeric inputs are views of the
/// caller's memory (the view borrows `tensor`, which outlives the run);
/// strings are copied, as ONNX Runtime keeps its own, and so is memory a
/// Rust caller lent unaligned for its dtype.
fn feed<'t>(name: &str, tensor: &'t Tensor) -> Result<SessionInputValue<'t>> {
    if let Some(strings) = tensor.strings() {
        // ONNX Runtime takes strings as C strings.
        if let Some(i) = strings.iter().position(|s| s.contains('\0')) {
            return Err(Error::InvalidInput(format!(
                "input '{name}': element {i} holds a NUL character, which ONNX Runtime's \
                 strings cannot"
            )));
        }
        let value = ort::value::Tensor::from_string_array((tensor.shape().to_vec(), strings))
            .map_err(backend_error)?;
        return Ok(value.into());
    }
    with_element_type!(tensor.dtype(), T => match tensor.as_slice::<T>() {
        Ok(elements) => TensorRef::from_array_view((tensor.shape(), elements))
            .map(SessionInputValue::from)
            .map_err(backend_error),
        Err(_) => {
            let bytes = tensor
                .buffer()
                .ok_or_else(|| Error::Internal("numeric tensor without a buffer".into()))?;
            let mut copy = ort::value::Tensor::<T>::new(&Allocator::default(), tensor.shape())
                .map_err(backend_error)?;
            // SAFETY: the new tensor holds exactly `bytes.len()` bytes (same
            // dtype and shape), and the two allocations are distinct.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    copy.data_ptr_mut().cast::<u8>(),
                    bytes.len(),
                )
            };
            Ok(copy.into())
        }
    })
}

/// An output tensor; numeric ones are handed on without a copy, kept alive
/// by their ONNX Runtime value, unless they alias an input.
fn fetched(name: &str, value: DynValue, inputs: &TensorMap) -> Result<Tensor> {
    let ValueType::Tensor { ty, shape, .. } = value.dtype() else {
        return Err(backend_error(format!(
            "output '{name}' is a {}, not a tensor",
            value.dtype()
        )));
    };
    let dtype = dtypes::from_ort(*ty).ok_or_else(|| {
        backend_error(format!(
            "output '{name}' is of type {ty:?}, which Neuropods does not support"
        ))
    })?;
    let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let value = value
        .downcast::<DynTensorValueType>()
        .map_err(backend_error)?;
    if dtype == DType::String {
        let (_, strings) = value.try_extract_strings().map_err(backend_error)?;
        return Tensor::from_strings(shape, strings);
    }
    if !value.memory_info().is_cpu_accessible() {
        return Err(backend_error(format!(
            "output '{name}' is not in CPU memory"
        )));
    }
    let numel = neuropods_core::tensor::checked_numel(&shape)
        .ok_or_else(|| backend_error(format!("output '{name}' has too many elements")))?;
    let len = numel * dtype.item_size().unwrap_or(0);
    let ptr = value.data_ptr().cast::<u8>();
    let buffer = if len == 0 {
        Buffer::from_vec::<u8>(Vec::new())
    } else if points_into_inputs(inputs, ptr) {
        // SAFETY: the value holds `len` bytes at `ptr`.
        Buffer::copy_from_slice(unsafe { std::slice::from_raw_parts(ptr, len) })
    } else {
        // SAFETY: the value owns `len` bytes at `ptr` and lives in the
        // owner; nothing writes an output once the run returned it.
        unsafe { Buffer::from_raw_parts(ptr, len, Arc::new(value)) }
    };
    Tensor::from_buffer(dtype, shape, buffer)
}

impl BackendModel for OnnxModel {
    fn infer(&self, inputs: &TensorMap) -> Result<TensorMap> {
        let feeds = inputs
            .iter()
            .map(|(name, tensor)| Ok((name.as_str(), feed(name, tensor)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut runner = self.runner.lock().unwrap_or_else(|p| p.into_inner());
        let Runner {
            session,
            run_options,
        } = &mut *runner;
        let mut results = match run_options {
            Some(options) => session.run_with_options(feeds, options),
            None => session.run(feeds),
        }
        .map_err(backend_error)?;
        let outputs = self
            .outputs
            .iter()
            .map(|name| {
                let value = results
                    .remove(name.as_str())
                    .ok_or_else(|| backend_error(format!("the run returned no output '{name}'")))?;
                Ok((name.clone(), fetched(name, value, inputs)?))
            })
            .collect::<Result<TensorMap>>();
        drop(results);
        drop(runner);
        outputs
    }
}
