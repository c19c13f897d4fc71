//! Loading a GraphDef or SavedModel into a session, and running it.

use std::any::Any;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use neuropods_core::backend::plugin::{Backend, BackendModel, LoadContext};
use neuropods_core::device::model_device;
use neuropods_core::{Buffer, DType, Error, Result, Tensor, TensorMap, TensorSpec};
use serde_json::Value;
use tensorflow::{
    DataType, Graph, ImportGraphDefOptions, Operation, SavedModelBundle, Session, SessionOptions,
    SessionRunArgs, Tensor as TfTensor, TensorType,
};

/// The TensorFlow backend.
pub struct TensorFlowBackend;

/// Frozen graph, relative to the package root.
pub const GRAPH_FILE: &str = "0/data/model.pb";
/// SavedModel folder, relative to the package root.
pub const SAVED_MODEL_DIR: &str = "0/data/savedmodel";

fn backend_error(message: impl std::fmt::Display) -> Error {
    Error::Backend {
        platform: "tensorflow".into(),
        message: message.to_string(),
    }
}

fn package_error(root: &Path, reason: String) -> Error {
    Error::InvalidPackage {
        path: root.to_path_buf(),
        reason,
    }
}

/// One tensor of the graph: an operation's output.
struct Endpoint {
    op: Operation,
    index: i32,
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
    let op = graph
        .operation_by_name(op_name)
        .map_err(backend_error)?
        .ok_or_else(|| {
            package_error(
                root,
                format!(
                    "'{spec_name}' maps to '{node}', but the graph has no operation '{op_name}'"
                ),
            )
        })?;
    Ok(Endpoint { op, index })
}

/// A serialized `ConfigProto` with the thread counts (fields 2 and 5).
fn config_proto(intra: Option<u32>, inter: Option<u32>) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, value) in [(0x10u8, intra), (0x28u8, inter)] {
        if let Some(mut v) = value {
            out.push(tag);
            while v >= 0x80 {
                out.push((v as u8 & 0x7f) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
    }
    out
}

struct TfModel {
    session: Session,
    // The session runs this graph; kept alive with it.
    _graph: Graph,
    inputs: HashMap<String, Endpoint>,
    outputs: Vec<(String, Endpoint)>,
}

// SAFETY: TF sessions may run from many threads at once; the graph and its
// operations are never changed after loading.
unsafe impl Send for TfModel {}
unsafe impl Sync for TfModel {}

fn spec_names(specs: &[TensorSpec]) -> impl Iterator<Item = &str> {
    specs.iter().map(|s| s.name.as_str())
}

fn load_saved_model(
    ctx: &LoadContext,
    options: &SessionOptions,
    backend_config: &Value,
) -> Result<TfModel> {
    let root = &ctx.package_root;
    let mut graph = Graph::new();
    let bundle = SavedModelBundle::load(options, ["serve"], &mut graph, root.join(SAVED_MODEL_DIR))
        .map_err(|e| backend_error(format!("cannot load {SAVED_MODEL_DIR}: {e}")))?;
    let signature_name = backend_config
        .get("signature_name")
        .and_then(Value::as_str)
        .unwrap_or("serving_default");
    let meta = bundle.meta_graph_def();
    let signature = meta.get_signature(signature_name).map_err(|_| {
        let mut known: Vec<&String> = meta.signatures().keys().collect();
        known.sort();
        package_error(
            root,
            format!("the SavedModel has no signature '{signature_name}' (it has: {known:?})"),
        )
    })?;
    // Spec names are the signature's keys, unless `signature_keys` renames
    // them (the Keras packager names outputs after the model's layers, while
    // Keras exports them as output_0, output_1...).
    let renamed = backend_config
        .get("signature_keys")
        .and_then(Value::as_object);
    let resolve = |names: Vec<&str>, keys: &HashMap<String, tensorflow::TensorInfo>, what: &str| {
        names
            .into_iter()
            .map(|spec_name| {
                let name = renamed
                    .and_then(|r| r.get(spec_name))
                    .and_then(Value::as_str)
                    .unwrap_or(spec_name);
                let info = keys.get(name).ok_or_else(|| {
                    let mut known: Vec<&String> = keys.keys().collect();
                    known.sort();
                    package_error(
                        root,
                        format!("{what} '{name}' is not in signature '{signature_name}' ({what}s: {known:?})"),
                    )
                })?;
                let node = format!("{}:{}", info.name().name, info.name().index);
                Ok((spec_name.to_string(), endpoint(&graph, root, spec_name, &node)?))
            })
            .collect::<Result<Vec<_>>>()
    };
    let inputs = resolve(
        spec_names(&ctx.config.input_spec).collect(),
        signature.inputs(),
        "input",
    )?;
    let outputs = resolve(
        spec_names(&ctx.config.output_spec).collect(),
        signature.outputs(),
        "output",
    )?;
    Ok(TfModel {
        session: bundle.session,
        _graph: graph,
        inputs: inputs.into_iter().collect(),
        outputs,
    })
}

fn load_graph(
    ctx: &LoadContext,
    options: &SessionOptions,
    backend_config: &Value,
) -> Result<TfModel> {
    let root = &ctx.package_root;
    let path = root.join(GRAPH_FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        package_error(
            root,
            format!("neither {SAVED_MODEL_DIR}/ nor a readable {GRAPH_FILE}: {e}"),
        )
    })?;
    let mut graph = Graph::new();
    graph
        .import_graph_def(&bytes, &ImportGraphDefOptions::new())
        .map_err(|e| backend_error(format!("cannot import {GRAPH_FILE}: {e}")))?;
    let mapping = backend_config
        .get("node_name_mapping")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            package_error(root, "0/config.json has no node_name_mapping object".into())
        })?;
    let mut resolve = |spec: &TensorSpec| -> Result<(String, Endpoint)> {
        let node = mapping
            .get(&spec.name)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                package_error(
                    root,
                    format!("node_name_mapping has no entry for '{}'", spec.name),
                )
            })?;
        Ok((spec.name.clone(), endpoint(&graph, root, &spec.name, node)?))
    };
    let inputs = ctx
        .config
        .input_spec
        .iter()
        .map(&mut resolve)
        .collect::<Result<HashMap<_, _>>>()?;
    let outputs = ctx
        .config
        .output_spec
        .iter()
        .map(&mut resolve)
        .collect::<Result<Vec<_>>>()?;
    let session = Session::new(options, &graph).map_err(backend_error)?;
    let init_ops = backend_config
        .get("init_op_names")
        .and_then(Value::as_array)
        .map(|ops| ops.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        .unwrap_or_default();
    if !init_ops.is_empty() {
        let mut args = SessionRunArgs::new();
        let ops = init_ops
            .iter()
            .map(|name| endpoint(&graph, root, name, name).map(|e| e.op))
            .collect::<Result<Vec<_>>>()?;
        for op in &ops {
            args.add_target(op);
        }
        session
            .run(&mut args)
            .map_err(|e| backend_error(format!("init ops {init_ops:?}: {e}")))?;
    }
    Ok(TfModel {
        session,
        _graph: graph,
        inputs,
        outputs,
    })
}

impl Backend for TensorFlowBackend {
    fn load(ctx: &LoadContext) -> Result<Box<dyn BackendModel>> {
        // The tensorflow-cpu wheel has no GPU support: a requested GPU falls
        // back to the CPU with a warning.
        let (_device, warning) = model_device(ctx.options.visible_gpu, 0)?;
        if let Some(warning) = warning {
            ctx.warn(warning);
        }
        let backend_config: Value = match &ctx.backend_config {
            Some(text) => serde_json::from_str(text).map_err(|e| Error::InvalidConfig {
                file: "0/config.json".into(),
                field: "<document>".into(),
                reason: format!("not valid JSON: {e}"),
            })?,
            None => Value::Object(Default::default()),
        };
        let mut options = SessionOptions::new();
        let proto = config_proto(ctx.options.intra_op_threads, ctx.options.inter_op_threads);
        if !proto.is_empty() {
            options.set_config(&proto).map_err(backend_error)?;
        }
        let model = if ctx.package_root.join(SAVED_MODEL_DIR).is_dir() {
            load_saved_model(ctx, &options, &backend_config)?
        } else {
            load_graph(ctx, &options, &backend_config)?
        };
        Ok(Box::new(model))
    }
}

/// A TF tensor fed to a run.
trait Feed {
    fn add_to<'a>(&'a self, args: &mut SessionRunArgs<'a>, endpoint: &Endpoint);
}

impl<T: TensorType> Feed for TfTensor<T> {
    fn add_to<'a>(&'a self, args: &mut SessionRunArgs<'a>, endpoint: &Endpoint) {
        args.add_feed(&endpoint.op, endpoint.index, self);
    }
}

fn numeric_feed<T: TensorType + neuropods_core::Element>(
    dims: &[u64],
    tensor: &Tensor,
) -> Result<Box<dyn Feed>> {
    let values = tensor.as_slice::<T>()?;
    let tf = TfTensor::<T>::new(dims)
        .with_values(values)
        .map_err(backend_error)?;
    Ok(Box::new(tf))
}

fn to_feed(tensor: &Tensor) -> Result<Box<dyn Feed>> {
    let dims: Vec<u64> = tensor.shape().iter().map(|&d| d as u64).collect();
    match tensor.dtype() {
        DType::Float16 => numeric_feed::<half::f16>(&dims, tensor),
        DType::Float32 => numeric_feed::<f32>(&dims, tensor),
        DType::Float64 => numeric_feed::<f64>(&dims, tensor),
        DType::Int8 => numeric_feed::<i8>(&dims, tensor),
        DType::Int16 => numeric_feed::<i16>(&dims, tensor),
        DType::Int32 => numeric_feed::<i32>(&dims, tensor),
        DType::Int64 => numeric_feed::<i64>(&dims, tensor),
        DType::Uint8 => numeric_feed::<u8>(&dims, tensor),
        DType::Uint16 => numeric_feed::<u16>(&dims, tensor),
        DType::Uint32 => numeric_feed::<u32>(&dims, tensor),
        DType::Uint64 => numeric_feed::<u64>(&dims, tensor),
        DType::Bool => numeric_feed::<bool>(&dims, tensor),
        DType::String => {
            let strings = tensor.strings().unwrap_or_default();
            let tf = TfTensor::<String>::new(&dims)
                .with_values(strings)
                .map_err(backend_error)?;
            Ok(Box::new(tf))
        }
    }
}

/// Keeps a TF output tensor alive while its memory is read elsewhere.
struct TfStorage(#[allow(dead_code)] Box<dyn Any>);
// SAFETY: the tensor is only dropped, never used, once wrapped; TF tensors
// may be freed from any thread.
unsafe impl Send for TfStorage {}
unsafe impl Sync for TfStorage {}

fn numeric_output<T: TensorType + neuropods_core::Element>(tf: TfTensor<T>) -> Result<Tensor> {
    let shape: Vec<usize> = tf.dims().iter().map(|&d| d as usize).collect();
    let ptr = tf.as_ptr() as *const u8;
    let len = std::mem::size_of_val(&tf[..]);
    // SAFETY: the TF tensor owns `len` bytes at `ptr` and lives in the owner.
    let buffer = unsafe { Buffer::from_raw_parts(ptr, len, Arc::new(TfStorage(Box::new(tf)))) };
    Tensor::from_buffer(T::DTYPE, shape, buffer)
}

fn fetch_output(
    args: &mut SessionRunArgs<'_>,
    token: tensorflow::FetchToken,
    dtype: DataType,
    name: &str,
) -> Result<Tensor> {
    let err = |e: tensorflow::Status| backend_error(format!("output '{name}': {e}"));
    match dtype {
        DataType::Half => numeric_output(args.fetch::<half::f16>(token).map_err(err)?),
        DataType::Float => numeric_output(args.fetch::<f32>(token).map_err(err)?),
        DataType::Double => numeric_output(args.fetch::<f64>(token).map_err(err)?),
        DataType::Int8 => numeric_output(args.fetch::<i8>(token).map_err(err)?),
        DataType::Int16 => numeric_output(args.fetch::<i16>(token).map_err(err)?),
        DataType::Int32 => numeric_output(args.fetch::<i32>(token).map_err(err)?),
        DataType::Int64 => numeric_output(args.fetch::<i64>(token).map_err(err)?),
        DataType::UInt8 => numeric_output(args.fetch::<u8>(token).map_err(err)?),
        DataType::UInt16 => numeric_output(args.fetch::<u16>(token).map_err(err)?),
        DataType::UInt32 => numeric_output(args.fetch::<u32>(token).map_err(err)?),
        DataType::UInt64 => numeric_output(args.fetch::<u64>(token).map_err(err)?),
        DataType::Bool => numeric_output(args.fetch::<bool>(token).map_err(err)?),
        DataType::String => {
            let tf = args.fetch::<String>(token).map_err(err)?;
            let shape = tf.dims().iter().map(|&d| d as usize).collect();
            Tensor::from_strings(shape, tf.iter().cloned().collect())
        }
        other => Err(backend_error(format!(
            "output '{name}' has unsupported TF dtype {other:?}"
        ))),
    }
}

impl BackendModel for TfModel {
    fn infer(&self, inputs: &TensorMap) -> Result<TensorMap> {
        let feeds = inputs
            .iter()
            .map(|(name, tensor)| {
                let endpoint = self.inputs.get(name).ok_or_else(|| {
                    Error::InvalidInput(format!("input '{name}' is not mapped to a graph node"))
                })?;
                Ok((endpoint, to_feed(tensor)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut args = SessionRunArgs::new();
        for (endpoint, feed) in &feeds {
            feed.add_to(&mut args, endpoint);
        }
        let tokens: Vec<_> = self
            .outputs
            .iter()
            .map(|(name, e)| (name, e, args.request_fetch(&e.op, e.index)))
            .collect();
        self.session.run(&mut args).map_err(backend_error)?;
        let mut outputs = TensorMap::new();
        for (name, endpoint, token) in tokens {
            let dtype = endpoint.op.output_type(endpoint.index as usize);
            outputs.insert(name.clone(), fetch_output(&mut args, token, dtype, name)?);
        }
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

    #[test]
    fn config_proto_encodes_thread_counts() {
        assert_eq!(config_proto(None, None), Vec::<u8>::new());
        assert_eq!(
            config_proto(Some(2), Some(300)),
            vec![0x10, 2, 0x28, 0xac, 0x02]
        );
    }
}
