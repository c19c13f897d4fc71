//! Loading an ONNX model into a session: options, device, the graph checked
//! against the spec. Its calls are in [`crate::run`].

use std::path::Path;

use neuropods_abi::device::model_device;
use neuropods_abi::plugin::{Backend, BackendModel, LoadContext};
use neuropods_abi::{Dim, Error, Result, TensorMap, TensorSpec};
use ort::ep::{ExecutionProvider, CUDA};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::{Outlet, ValueType};

use crate::dtypes;
use crate::run::Runner;
use crate::runtime;

/// The ONNX backend.
pub struct OnnxBackend;

/// The model, relative to the package root; external-data files sit beside
/// it, where ONNX Runtime looks for them.
pub const MODEL_FILE: &str = "0/data/model.onnx";

fn package_error(root: &Path, reason: String) -> Error {
    Error::InvalidPackage {
        path: root.to_path_buf(),
        reason,
    }
}

struct OnnxModel {
    runner: Runner,
}

impl BackendModel for OnnxModel {
    fn infer(&self, inputs: &TensorMap) -> Result<TensorMap> {
        self.runner.run(inputs)
    }
}

/// The session settings for these load options: all graph optimisations
/// (as onnxruntime's Python API by default), and the thread counts.
/// `inter_op_threads` > 0 turns on parallel execution, the only mode that
/// uses an inter-op pool; 0 (or None) keeps ONNX Runtime's default, nodes
/// run one after another.
fn session_builder(ctx: &LoadContext, runtime: &runtime::Runtime) -> Result<SessionBuilder> {
    let mut builder = Session::builder(runtime.environment())
        .map_err(Error::framework)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(Error::framework)?;
    if let Some(n) = ctx.options.intra_op_threads {
        builder = builder
            .with_intra_threads(n as usize)
            .map_err(Error::framework)?;
    }
    if let Some(n) = ctx.options.inter_op_threads.filter(|&n| n > 0) {
        builder = builder
            .with_parallel_execution(true)
            .map_err(Error::framework)?
            .with_inter_threads(n as usize)
            .map_err(Error::framework)?;
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
            .map_err(|e| Error::framework(format!("cannot load {MODEL_FILE}: {e}")))?;
        check_signature(
            root,
            (&ctx.config.input_spec, &ctx.config.output_spec),
            &session,
        )?;
        let runner = Runner::new(
            session,
            ctx.config.input_spec.iter().map(|s| s.name.as_str()),
            ctx.config.output_spec.iter().map(|s| s.name.as_str()),
        )?;
        Ok(Box::new(OnnxModel { runner }))
    }
}
