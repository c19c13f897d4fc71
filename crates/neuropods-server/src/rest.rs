//! The protocol's REST half, over HTTP: health, metadata and inference,
//! with the binary tensor data extension (a JSON header of
//! `Inference-Header-Content-Length` bytes, then the tensors' raw bytes),
//! and `GET /metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::connections::BodyTimeout;
use crate::encoding::{
    datatype_name, metadata_shape, parse_datatype, parse_shape, raw_from_tensor, shorten,
    tensor_from_json, tensor_from_raw, wire_shape, JsonElements,
};
use crate::error::{FailureKind, RequestError};
use crate::metrics::Protocol;
use crate::repository::{InferCall, ServedModel, MODEL_VERSION};
use crate::ServerState;

/// The header that gives the JSON part's length in a binary request or
/// response.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// The REST routes.
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_metadata_version),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready_version),
        )
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_version),
        )
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        (self.http_status(), Json(json!({ "error": self.message }))).into_response()
    }
}

async fn not_found(request: Request) -> RequestError {
    RequestError::not_found(format!(
        "no route for {} {} (the Open Inference Protocol's routes are under /v2)",
        request.method(),
        request.uri().path()
    ))
}

async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

async fn ready(State(state): State<Arc<ServerState>>) -> Response {
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

async fn server_metadata() -> Json<Value> {
    Json(crate::server_metadata_json())
}

fn metadata(model: &ServedModel) -> Value {
    let tensors = |specs: &[neuropods_core::TensorSpec]| -> Vec<Value> {
        specs
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "datatype": datatype_name(s.dtype),
                    "shape": metadata_shape(&s.shape),
                })
            })
            .collect()
    };
    json!({
        "name": model.name(),
        "versions": [MODEL_VERSION],
        "platform": model.config().platform.name(),
        "inputs": tensors(&model.config().input_spec),
        "outputs": tensors(&model.config().output_spec),
    })
}

async fn model_metadata(
    State(state): State<Arc<ServerState>>,
    Path(model): Path<String>,
) -> Result<Json<Value>, RequestError> {
    Ok(Json(metadata(state.repository.get(&model, None)?)))
}

async fn model_metadata_version(
    State(state): State<Arc<ServerState>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, RequestError> {
    Ok(Json(metadata(
        state.repository.get(&model, Some(&version))?,
    )))
}

fn readiness(
    state: &ServerState,
    model: &str,
    version: Option<&str>,
) -> Result<Response, RequestError> {
    let model = state.repository.get(model, version)?;
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        status,
        Json(json!({ "name": model.name(), "ready": ready })),
    )
        .into_response())
}

async fn model_ready(
    State(state): State<Arc<ServerState>>,
    Path(model): Path<String>,
) -> Result<Response, RequestError> {
    readiness(&state, &model, None)
}

async fn model_ready_version(
    State(state): State<Arc<ServerState>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, RequestError> {
    readiness(&state, &model, Some(&version))
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.repository.metrics().render(),
    )
        .into_response()
}

async fn infer(
    State(state): State<Arc<ServerState>>,
    Path(model): Path<String>,
    request: Request,
) -> Response {
    infer_request(state, model, None, request).await
}

async fn infer_version(
    State(state): State<Arc<ServerState>>,
    Path((model, version)): Path<(String, String)>,
    request: Request,
) -> Response {
    infer_request(state, model, Some(version), request).await
}

async fn infer_request(
    state: Arc<ServerState>,
    model: String,
    version: Option<String>,
    request: Request,
) -> Response {
    let start = Instant::now();
    let served = match state.repository.get(&model, version.as_deref()) {
        Ok(served) => served.clone(),
        Err(error) => return error.into_response(),
    };
    let result = run_infer(&state, &served, request).await;
    served.record(Protocol::Http, start, &result);
    result.unwrap_or_else(IntoResponse::into_response)
}

/// An inference request's JSON part. `data` stays raw text until the
/// datatype and shape are known, then is read straight into the tensor.
/// `null` stands for an absent field, as MLServer's clients send it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequestJson<'a> {
    id: Option<String>,
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<InputJson<'a>>,
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputJson<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputJson {
    name: String,
    parameters: Option<Map<String, Value>>,
}

/// Parameters of the protocol's extensions that neuropods does not serve:
/// refused by name rather than ignored (the answer would not be what the
/// client asked for).
const UNSUPPORTED_PARAMETERS: [&str; 4] = [
    "classification",
    "shared_memory_region",
    "shared_memory_byte_size",
    "shared_memory_offset",
];

fn check_parameters(
    owner: &str,
    parameters: &Option<Map<String, Value>>,
) -> Result<(), RequestError> {
    if let Some(parameters) = parameters {
        if let Some(name) = UNSUPPORTED_PARAMETERS
            .iter()
            .find(|name| parameters.contains_key(**name))
        {
            return Err(RequestError::bad_request(format!(
                "{owner}: parameter '{name}' is not supported by neuropods serve"
            )));
        }
    }
    Ok(())
}

fn bool_parameter(
    parameters: &Option<Map<String, Value>>,
    key: &str,
) -> Result<Option<bool>, RequestError> {
    match parameters.as_ref().and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(RequestError::bad_request(format!(
            "parameter '{key}' must be true or false, got {}",
            shorten(&other.to_string())
        ))),
    }
}

/// Bodies (and outputs) above this are decoded (encoded) on the blocking
/// pool, so that a large JSON request does not hold up the async threads.
const DECODE_INLINE_MAX_BYTES: usize = 256 << 10;

/// A decoded request: the call, and how each output is to be sent.
struct Decoded {
    call: InferCall,
    /// Per requested output: binary or not; None: all outputs, each
    /// binary if `all_binary`.
    binary: Option<Vec<bool>>,
    all_binary: bool,
    id: Option<String>,
}

/// The whole body, up to `--max-body-bytes`. It arrives at no less than
/// the minimum rate or ends in [`BodyTimeout`], which the accept loop's
/// body gives it (see `connections.rs`): answered 408.
async fn read_body(state: &ServerState, body: Body) -> Result<Bytes, RequestError> {
    use http_body_util::BodyExt;
    let limit = state.config.max_body_bytes;
    let too_large = || {
        RequestError::new(
            FailureKind::TooLarge,
            format!(
                "the request body is over the server's limit of {limit} bytes (--max-body-bytes)"
            ),
        )
    };
    let mut body = body;
    if http_body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(too_large());
    }
    // Kept as they come, joined once at the end (no copy for a body of
    // one frame).
    let mut frames: Vec<Bytes> = Vec::new();
    let mut received = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            let cause = e.into_inner();
            match cause.downcast_ref::<BodyTimeout>() {
                Some(timeout) => RequestError::new(FailureKind::Timeout, timeout.to_string()),
                None => RequestError::bad_request(format!("cannot read the request body: {cause}")),
            }
        })?;
        if let Ok(data) = frame.into_data() {
            received += data.len();
            if received > limit {
                return Err(too_large());
            }
            frames.push(data);
        }
    }
    if frames.len() == 1 {
        return Ok(frames.swap_remove(0));
    }
    let mut joined = bytes::BytesMut::with_capacity(received);
    for frame in frames {
        joined.extend_from_slice(&frame);
    }
    Ok(joined.freeze())
}

async fn run_infer(
    state: &ServerState,
    model: &ServedModel,
    request: Request,
) -> Result<Response, RequestError> {
    let header_length = header_length(request.headers())?;
    if let Some(encoding) = request.headers().get(header::CONTENT_ENCODING) {
        if encoding.as_bytes() != b"identity" {
            return Err(RequestError::bad_request(format!(
                "Content-Encoding {encoding:?} is not supported: send the request uncompressed"
            )));
        }
    }
    let limit = state.config.max_body_bytes;
    let body = read_body(state, request.into_body()).await?;
    let decoded = if body.len() > DECODE_INLINE_MAX_BYTES {
        tokio::task::spawn_blocking(move || decode(body, header_length, limit))
            .await
            .map_err(|e| RequestError::internal(format!("decoding the request: {e}")))??
    } else {
        decode(body, header_length, limit)?
    };
    let Decoded {
        call,
        binary,
        all_binary,
        id,
    } = decoded;
    let outputs = model.infer(call).await?;
    let output_bytes: usize = outputs.iter().map(|(_, t)| t.numel() * 8).sum();
    let name = model.name().to_string();
    let encode_outputs = move || encode(&name, id, outputs, binary.as_deref(), all_binary);
    if output_bytes > DECODE_INLINE_MAX_BYTES {
        tokio::task::spawn_blocking(encode_outputs)
            .await
            .map_err(|e| RequestError::internal(format!("encoding the response: {e}")))?
    } else {
        encode_outputs()
    }
}

fn decode(
    body: Bytes,
    header_length: Option<usize>,
    max_dim: usize,
) -> Result<Decoded, RequestError> {
    let (json_part, mut binary) = match header_length {
        Some(length) if length > body.len() => {
            return Err(RequestError::bad_request(format!(
                "Inference-Header-Content-Length is {length} but the body has only {} bytes",
                body.len()
            )))
        }
        Some(length) => (body.slice(..length), body.slice(length..)),
        None => (body, Bytes::new()),
    };
    let request: InferRequestJson = serde_json::from_slice(&json_part)
        .map_err(|e| RequestError::bad_request(format!("malformed inference request JSON: {e}")))?;
    check_parameters("the request", &request.parameters)?;
    if request.inputs.is_empty() {
        return Err(RequestError::bad_request("the request has no inputs"));
    }
    let mut inputs = neuropods_core::TensorMap::new();
    for input in request.inputs {
        let name = &input.name;
        check_parameters(&format!("input '{}'", shorten(name)), &input.parameters)?;
        let dtype = parse_datatype(name, &input.datatype)?;
        let shape = parse_shape(name, &input.shape, max_dim)?;
        let binary_size = input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"));
        let tensor = match (binary_size, input.data) {
            (Some(size), None) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| {
                        RequestError::bad_request(format!(
                            "input '{}': binary_data_size must be a non-negative integer, got {}",
                            shorten(name),
                            shorten(&size.to_string())
                        ))
                    })?;
                if size > binary.len() {
                    return Err(RequestError::bad_request(format!(
                        "input '{}': binary_data_size is {size} but only {} bytes of binary data are left",
                        shorten(name),
                        binary.len()
                    )));
                }
                let raw = binary.split_to(size);
                tensor_from_raw(name, dtype, shape, &raw)?
            }
            (None, Some(data)) => tensor_from_json(name, dtype, shape, data)?,
            (Some(_), Some(_)) => {
                return Err(RequestError::bad_request(format!(
                    "input '{}' has both data and binary_data_size",
                    shorten(name)
                )))
            }
            (None, None) => {
                return Err(RequestError::bad_request(format!(
                    "input '{}' has neither data nor binary_data_size",
                    shorten(name)
                )))
            }
        };
        if inputs.insert(input.name.clone(), tensor).is_some() {
            return Err(RequestError::bad_request(format!(
                "input '{}' is given twice",
                shorten(name)
            )));
        }
    }
    if !binary.is_empty() {
        return Err(RequestError::bad_request(format!(
            "{} bytes of binary data are not claimed by any input's binary_data_size",
            binary.len()
        )));
    }
    let all_binary = bool_parameter(&request.parameters, "binary_data_output")?.unwrap_or(false);
    // No outputs named, or an empty list: all of them (as over gRPC).
    let (names, binary) = match request.outputs.filter(|o| !o.is_empty()) {
        Some(outputs) => {
            let mut names = Vec::with_capacity(outputs.len());
            let mut binary = Vec::with_capacity(outputs.len());
            for output in outputs {
                check_parameters(
                    &format!("output '{}'", shorten(&output.name)),
                    &output.parameters,
                )?;
                // An output's own binary_data wins over binary_data_output.
                binary
                    .push(bool_parameter(&output.parameters, "binary_data")?.unwrap_or(all_binary));
                names.push(output.name);
            }
            (Some(names), Some(binary))
        }
        None => (None, None),
    };
    Ok(Decoded {
        call: InferCall {
            inputs,
            outputs: names,
        },
        binary,
        all_binary,
        id: request.id,
    })
}

/// One output in the response's JSON.
#[derive(Serialize)]
struct OutputHeader<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonElements<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct ResponseHeader<'a> {
    model_name: &'a str,
    model_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputHeader<'a>>,
}

fn encode(
    model: &str,
    id: Option<String>,
    outputs: Vec<(String, neuropods_core::Tensor)>,
    binary: Option<&[bool]>,
    all_binary: bool,
) -> Result<Response, RequestError> {
    let mut headers = Vec::with_capacity(outputs.len());
    let mut raw_parts = Vec::new();
    for (i, (name, tensor)) in outputs.iter().enumerate() {
        let as_binary = binary.map_or(all_binary, |b| b.get(i).copied().unwrap_or(all_binary));
        let (parameters, data) = if as_binary {
            let raw = raw_from_tensor(tensor);
            let size = raw.len();
            raw_parts.push(raw);
            (
                Some(BinarySize {
                    binary_data_size: size,
                }),
                None,
            )
        } else {
            (None, Some(JsonElements(tensor)))
        };
        headers.push(OutputHeader {
            name,
            datatype: datatype_name(tensor.dtype()),
            shape: wire_shape(tensor.shape()),
            parameters,
            data,
        });
    }
    let header = serde_json::to_vec(&ResponseHeader {
        model_name: model,
        model_version: MODEL_VERSION,
        id,
        outputs: headers,
    })
    .map_err(|e| RequestError::internal(format!("cannot encode the response: {e}")))?;
    if raw_parts.is_empty() {
        return Ok(([(header::CONTENT_TYPE, "application/json")], header).into_response());
    }
    let header_len = header.len();
    let mut parts = Vec::with_capacity(raw_parts.len() + 1);
    parts.push(Bytes::from(header));
    parts.extend(raw_parts);
    let mut response = Response::new(Body::new(Chunks::new(parts)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(HEADER_LENGTH, HeaderValue::from(header_len));
    Ok(response)
}

fn header_length(headers: &HeaderMap) -> Result<Option<usize>, RequestError> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| {
            RequestError::bad_request(format!(
                "Inference-Header-Content-Length must be a byte count, got {value:?}"
            ))
        })
}

/// A response body of several buffers sent one after another, with its
/// length known up front (a Content-Length, not chunked encoding).
struct Chunks {
    parts: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(parts: Vec<Bytes>) -> Chunks {
        let remaining = parts.iter().map(|p| p.len() as u64).sum();
        Chunks {
            parts: parts.into(),
            remaining,
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let part = self.parts.pop_front();
        if let Some(part) = &part {
            self.remaining -= part.len() as u64;
        }
        std::task::Poll::Ready(part.map(|p| Ok(http_body::Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}
