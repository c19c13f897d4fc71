//! Loading a GraphDef or SavedModel into a session, and running it.

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::Path;
use std::sync::Arc;

use neuropods_abi::device::model_device;
use neuropods_abi::json;
use neuropods_abi::plugin::{points_into_inputs, Backend, BackendModel, LoadContext};
use neuropods_abi::BACKEND_CONFIG_FILE;
use neuropods_abi::{Buffer, DType, Error, Result, Tensor, TensorData, TensorMap, TensorSpec};
use neuropods_frameworks::custom_ops;
use serde::Deserialize;

use crate::dtypes;
use crate::ffi::{self, Endpoint, Graph, Session};
use crate::proto::{self, SessionConfig, Signature};
use crate::version;

/// The TensorFlow backend.
pub struct TensorFlowBackend;

/// Frozen graph, relative to the package root.
pub const GRAPH_FILE: &str = "0/data/model.pb";
/// SavedModel folder, relative to the package root.
pub const SAVED_MODEL_DIR: &str = "0/data/savedmodel";

/// The backend's 0/config.json. A frozen graph needs `node_name_mapping`
/// (spec name -> `"op:index"`, as the original Neuropod wrote it) and may
/// have `init_op_names` to run once after loading; a SavedModel has its
/// `signature_name` and, when spec names differ from the signature's keys,
/// `signature_keys` (spec name -> key).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct TfBackendConfig {
    node_name_mapping: Option<HashMap<String, String>>,
    /// `[]`, `{}` (the original's own test packages), null, or one name
    /// as a string (its packager wrapped one in a list).
    #[serde(default)]
    init_op_names: json::Strings,
    signature_name: Option<String>,
    signature_keys: Option<HashMap<String, String>>,
}

fn config_error(field: &str, reason: String) -> Error {
    Error::InvalidConfig {
        file: BACKEND_CONFIG_FILE.into(),
        field: field.into(),
        reason,
    }
}

fn package_error(root: &Path, reason: String) -> Error {
    Error::InvalidPackage {
        path: root.to_path_buf(),
        reason,
    }
}

/// `op:index`, or `op` for output 0 (as node_name_mapping writes them).
fn parse_node(name: &str) -> (&str, i32) {
    match name.rsplit_once(':') {
        Some((op, index)) => match index.parse() {
            Ok(i) => (op, i),
            Err(_) => (name, 0),
        },
        None => (name, 0),
    }
}

fn endpoint(graph: &Graph, root: &Path, spec_name: &str, node: &str) -> Result<Endpoint> {
    let (op_name, index) = parse_node(node);
    graph.endpoint(op_name, index).ok_or_else(|| {
        package_error(
            root,
            format!("'{spec_name}' maps to '{node}', but the graph has no operation '{op_name}' with output {index}"),
        )
    })
}

struct TfModel {
    // Declared before the graph: the session is closed before the graph it
    // runs is freed.
    session: Session,
    _graph: Graph,
    inputs: HashMap<String, Endpoint>,
    /// Inputs fed to a `Placeholder`, which TF needs a value for.
    required: Vec<String>,
    output_names: Vec<String>,
    outputs: Vec<Endpoint>,
}

impl TfModel {
    fn new(
        session: Session,
        graph: Graph,
        inputs: Vec<(String, Endpoint)>,
        outputs: Vec<(String, Endpoint)>,
    ) -> TfModel {
        let (output_names, outputs) = outputs.into_iter().unzip();
        let required = inputs
            .iter()
            .filter(|(_, endpoint)| endpoint.is_placeholder())
            .map(|(name, _)| name.clone())
            .collect();
        TfModel {
            session,
            _graph: graph,
            required,
            inputs: inputs.into_iter().collect(),
            output_names,
            outputs,
        }
    }
}

// SAFETY: the session is thread-safe (see `ffi::Session`); the graph and its
// endpoints are never changed after loading.
unsafe impl Send for TfModel {}
// SAFETY: as for Send: calls share only the thread-safe session and
// read-only endpoints.
unsafe impl Sync for TfModel {}

fn spec_names(specs: &[TensorSpec]) -> Vec<&str> {
    specs.iter().map(|s| s.name.as_str()).collect()
}

/// The package's signature, by name.
fn find_signature(root: &Path, meta_graph_def: &[u8], name: &str) -> Result<Signature> {
    let mut signatures = proto::signatures(meta_graph_def).map_err(|e| {
        package_error(
            root,
            format!("cannot read the SavedModel's signatures: {e}"),
        )
    })?;
    signatures.remove(name).ok_or_else(|| {
        let mut known: Vec<&String> = signatures.keys().collect();
        known.sort();
        package_error(
            root,
            format!("the SavedModel has no signature '{name}' (it has: {known:?})"),
        )
    })
}

fn load_saved_model(
    ctx: &LoadContext,
    config: &SessionConfig,
    backend_config: &TfBackendConfig,
) -> Result<TfModel> {
    let root = &ctx.package_root;
    let graph = Graph::new();
    let (session, meta) = Session::load_saved_model(
        &root.join(SAVED_MODEL_DIR),
        "serve",
        &graph,
        &config.to_proto(),
    )
    .map_err(|e| Error::framework(format!("cannot load {SAVED_MODEL_DIR}: {e}")))?;
    let signature_name = backend_config
        .signature_name
        .as_deref()
        .unwrap_or("serving_default");
    let signature = find_signature(root, &meta, signature_name)?;
    // Spec names are the signature's keys, unless `signature_keys` renames
    // them (the Keras packager names outputs after the model's layers, while
    // Keras exports them as output_0, output_1...).
    let renamed = backend_config.signature_keys.as_ref();
    let resolve = |names: Vec<&str>, keys: &HashMap<String, proto::SignatureTensor>, what: &str| {
        names
            .into_iter()
            .map(|spec_name| {
                let key = renamed
                    .and_then(|r| r.get(spec_name))
                    .map_or(spec_name, String::as_str);
                let tensor = keys.get(key).ok_or_else(|| {
                    let mut known: Vec<&String> = keys.keys().collect();
                    known.sort();
                    package_error(
                        root,
                        format!("{what} '{key}' is not in signature '{signature_name}' ({what}s: {known:?})"),
                    )
                })?;
                Ok((spec_name.to_string(), endpoint(&graph, root, spec_name, &tensor.0)?))
            })
            .collect::<Result<Vec<_>>>()
    };
    let inputs = resolve(
        spec_names(&ctx.config.input_spec),
        &signature.inputs,
        "input",
    )?;
    let outputs = resolve(
        spec_names(&ctx.config.output_spec),
        &signature.outputs,
        "output",
    )?;
    Ok(TfModel::new(session, graph, inputs, outputs))
}

fn load_graph(
    ctx: &LoadContext,
    config: &SessionConfig,
    backend_config: &TfBackendConfig,
) -> Result<TfModel> {
    let root = &ctx.package_root;
    let path = root.join(GRAPH_FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        package_error(
            root,
            format!("neither {SAVED_MODEL_DIR}/ nor a readable {GRAPH_FILE}: {e}"),
        )
    })?;
    let graph = Graph::new();
    graph
        .import(&bytes)
        .map_err(|e| Error::framework(format!("cannot import {GRAPH_FILE}: {e}")))?;
    let mapping = backend_config.node_name_mapping.as_ref().ok_or_else(|| {
        config_error(
            "node_name_mapping",
            "missing: a frozen graph needs it (spec name -> \"op:index\")".into(),
        )
    })?;
    let resolve = |specs: &[TensorSpec]| {
        specs
            .iter()
            .map(|spec| {
                let node = mapping.get(&spec.name).ok_or_else(|| {
                    config_error(
                        "node_name_mapping",
                        format!(
                            "no entry for '{}' (every input and output needs one)",
                            spec.name
                        ),
                    )
                })?;
                Ok((spec.name.clone(), endpoint(&graph, root, &spec.name, node)?))
            })
            .collect::<Result<Vec<_>>>()
    };
    let inputs = resolve(&ctx.config.input_spec)?;
    let outputs = resolve(&ctx.config.output_spec)?;
    let session = Session::new(&graph, &config.to_proto()).map_err(Error::framework)?;
    let init_ops = &backend_config.init_op_names.0;
    if !init_ops.is_empty() {
        let targets = init_ops
            .iter()
            .map(|name| {
                graph.operation(name).ok_or_else(|| {
                    package_error(root, format!("init op '{name}' is not in the graph"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        session
            .run(&[], &[], &targets)
            .map_err(|e| Error::framework(format!("init ops {init_ops:?}: {e}")))?;
    }
    Ok(TfModel::new(session, graph, inputs, outputs))
}

/// The session settings for these load options.
fn session_config(ctx: &LoadContext) -> SessionConfig {
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    SessionConfig {
        intra_op_threads: ctx.options.intra_op_threads.map(count),
        // 0: no inter-op pool (TF's negative value: the calling thread).
        inter_op_threads: ctx
            .options
            .inter_op_threads
            .map(|n| if n == 0 { -1 } else { count(n) }),
        gpu: ctx.options.visible_gpu,
    }
}

impl Backend for TensorFlowBackend {
    fn load(ctx: &LoadContext) -> Result<Box<dyn BackendModel>> {
        let (release, warning) = version::check(&version::loaded())?;
        if let Some(warning) = warning {
            ctx.warn(warning);
        }
        if let Some(release) = release {
            ctx.config
                .platform_version_semver
                .check("tensorflow", "TensorFlow", release)?;
        }
        let backend_config: TfBackendConfig = ctx.parse_backend_config()?.unwrap_or_default();
        // Before the graph is read: it may use their ops.
        custom_ops::load(&ctx.package_root, &ctx.config, ffi::load_op_library)?;
        let config = session_config(ctx);
        let model = if ctx.package_root.join(SAVED_MODEL_DIR).is_dir() {
            load_saved_model(ctx, &config, &backend_config)?
        } else {
            load_graph(ctx, &config, &backend_config)?
        };
        // With `visible_gpu=i` the session sees only GPU i, if any: no GPU
        // device (e.g. the tensorflow-cpu wheel) means the CPU, with a
        // warning. TF places ops itself, on that GPU where it has a kernel;
        // fed inputs are copied to where their ops run, so inputs pinned to
        // the CPU by `input_tensor_device` need nothing more.
        if ctx.options.visible_gpu.is_some() {
            let gpus = model
                .session
                .device_types()
                .map_err(Error::framework)?
                .iter()
                .filter(|t| t.as_str() == "GPU")
                .count();
            if gpus == 0 {
                if let (_, Some(warning)) = model_device(ctx.options.visible_gpu, 0)? {
                    ctx.warn(warning);
                }
            }
        }
        Ok(Box::new(model))
    }
}

unsafe extern "C" fn release_data(_data: *mut c_void, _len: usize, arg: *mut c_void) {
    // SAFETY: `arg` is the box made in `feed`, released once by TF.
    drop(unsafe { Box::from_raw(arg.cast::<TensorData>()) });
}

/// A TF tensor for an input. Numeric inputs are handed to TF in place: TF
/// holds a reference to their memory until it releases it (TF copies them
/// itself when they are not aligned as its kernels need).
fn feed(tensor: &Tensor) -> Result<ffi::Tensor> {
    let dims: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
    let type_code = dtypes::to_tf(tensor.dtype());
    if let Some(strings) = tensor.strings() {
        return ffi::Tensor::strings(&dims, strings).map_err(Error::framework);
    }
    let (data, len) = tensor
        .numeric_bytes()
        .ok_or_else(|| Error::Internal("numeric tensor without bytes".into()))?;
    let owner = Box::into_raw(Box::new(tensor.data().clone())).cast::<c_void>();
    // SAFETY: the boxed data (a share of the tensor's memory) keeps the
    // bytes alive until TF calls `release_data`. TF reads inputs and never
    // writes them while the caller still holds the tensor, which `infer`
    // does until the run and its outputs are done, so frozen bytes stay
    // frozen.
    unsafe {
        ffi::Tensor::over(
            type_code,
            &dims,
            data.cast_mut().cast(),
            len,
            release_data,
            owner,
        )
    }
    .map_err(Error::framework)
}

/// An output tensor; numeric ones are handed on without a copy, kept alive
/// by their TF tensor, unless they alias an input.
fn fetched(name: &str, tf: ffi::Tensor, inputs: &TensorMap) -> Result<Tensor> {
    let dtype = dtypes::from_tf(tf.type_code()).ok_or_else(|| {
        Error::framework(format!(
            "output '{name}' has TF type code {}, which Neuropods does not support",
            tf.type_code()
        ))
    })?;
    let shape = tf.dims();
    if dtype == DType::String {
        let strings = tf
            .string_elements()
            .into_iter()
            .map(|bytes| {
                String::from_utf8(bytes.to_vec()).map_err(|_| {
                    Error::framework(format!("output '{name}' holds a string that is not UTF-8"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        return Tensor::from_strings(shape, strings);
    }
    let (ptr, len) = tf.bytes();
    // Ops like Identity return the fed buffer itself, which the caller only
    // lent for this call.
    let buffer = if len > 0 && points_into_inputs(inputs, ptr) {
        // SAFETY: the TF tensor holds `len` bytes at `ptr`, which may be a
        // caller's lent input: copied through raw pointers.
        unsafe { Buffer::copy_from_raw(ptr, len) }
    } else {
        // SAFETY: the TF tensor owns `len` bytes at `ptr` and lives in the
        // owner; TF never writes a fetched tensor.
        unsafe { Buffer::from_raw_parts(ptr, len, Arc::new(tf)) }
    };
    Tensor::from_buffer(dtype, shape, buffer)
}

impl BackendModel for TfModel {
    fn infer(&self, inputs: &TensorMap) -> Result<TensorMap> {
        // The caller's mistake, named before the run (TF's message for it
        // names the graph's node, not the input).
        if let Some(missing) = self.required.iter().find(|n| !inputs.contains_key(*n)) {
            return Err(Error::InvalidInput(format!(
                "missing input '{missing}': the model's graph needs a value for it (a placeholder)"
            )));
        }
        let feeds = inputs
            .iter()
            .map(|(name, tensor)| {
                let endpoint = self.inputs.get(name).ok_or_else(|| {
                    Error::InvalidInput(format!("input '{name}' is not mapped to a graph node"))
                })?;
                Ok((*endpoint, feed(tensor)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let results = self
            .session
            .run(&feeds, &self.outputs, &[])
            .map_err(Error::framework)?;
        let outputs = self
            .output_names
            .iter()
            .zip(results)
            .map(|(name, tf)| Ok((name.clone(), fetched(name, tf, inputs)?)))
            .collect::<Result<TensorMap>>()?;
        // The fed tensors are released only now, after every output that
        // aliased one was copied.
        drop(feeds);
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_parse_like_the_original() {
        assert_eq!(
            parse_node("some_namespace/in_x:0"),
            ("some_namespace/in_x", 0)
        );
        assert_eq!(parse_node("out:2"), ("out", 2));
        assert_eq!(parse_node("plain"), ("plain", 0));
        assert_eq!(parse_node("weird:name"), ("weird:name", 0));
    }
}
