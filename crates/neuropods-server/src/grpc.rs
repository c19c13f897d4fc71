//! The protocol's gRPC half: `inference.GRPCInferenceService`. Inputs come
//! as `raw_input_contents` (one entry per input) or typed `contents`;
//! outputs always go back as `raw_output_contents`, as Triton sends them.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use crate::encoding::{
    datatype_name, metadata_shape, parse_datatype, parse_shape, raw_from_tensor,
    tensor_from_contents, tensor_from_raw, wire_shape,
};
use crate::error::RequestError;
use crate::metrics::Protocol;
use crate::proto::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use crate::proto::model_infer_response::InferOutputTensor;
use crate::proto::model_metadata_response::TensorMetadata;
use crate::proto::*;
use crate::repository::{InferCall, ServedModel, MODEL_VERSION};
use crate::ServerState;

/// The gRPC service over a server's state.
pub fn service(state: Arc<ServerState>) -> GrpcInferenceServiceServer<Service> {
    let limit = state.config.max_body_bytes;
    GrpcInferenceServiceServer::new(Service { state })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX)
}

/// Implements the service's methods.
pub struct Service {
    state: Arc<ServerState>,
}

fn version(v: &str) -> Option<&str> {
    Some(v).filter(|v| !v.is_empty())
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.state.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        self.state
            .repository
            .get(&request.name, version(&request.version))
            .map_err(|e| e.grpc_status())?;
        Ok(Response::new(ModelReadyResponse {
            ready: self.state.is_ready(),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: crate::SERVER_NAME.into(),
            version: crate::SERVER_VERSION.into(),
            extensions: crate::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let model = self
            .state
            .repository
            .get(&request.name, version(&request.version))
            .map_err(|e| e.grpc_status())?;
        let tensors = |specs: &[neuropods_core::TensorSpec]| {
            specs
                .iter()
                .map(|s| TensorMetadata {
                    name: s.name.clone(),
                    datatype: datatype_name(s.dtype).into(),
                    shape: metadata_shape(&s.shape),
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: model.name().into(),
            versions: vec![MODEL_VERSION.into()],
            platform: model.config().platform.name().into(),
            inputs: tensors(&model.config().input_spec),
            outputs: tensors(&model.config().output_spec),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let start = Instant::now();
        let request = request.into_inner();
        let model = self
            .state
            .repository
            .get(&request.model_name, version(&request.model_version))
            .map_err(|e| e.grpc_status())?
            .clone();
        let result = infer(&model, request, self.state.config.max_body_bytes).await;
        model.record(Protocol::Grpc, start, &result);
        result.map(Response::new).map_err(|e| e.grpc_status())
    }
}

async fn infer(
    model: &ServedModel,
    request: ModelInferRequest,
    max_dim: usize,
) -> Result<ModelInferResponse, RequestError> {
    if request.inputs.is_empty() {
        return Err(RequestError::bad_request("the request has no inputs"));
    }
    let raw = &request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(RequestError::bad_request(format!(
            "{} raw_input_contents for {} inputs: give one per input, or none and use contents",
            raw.len(),
            request.inputs.len()
        )));
    }
    let mut inputs = neuropods_core::TensorMap::new();
    for (i, input) in request.inputs.into_iter().enumerate() {
        let dtype = parse_datatype(&input.name, &input.datatype)?;
        let shape = parse_shape(&input.name, &input.shape, max_dim)?;
        let tensor = match (raw.get(i), &input.contents) {
            (Some(raw), None) => tensor_from_raw(&input.name, dtype, shape, raw)?,
            (None, Some(contents)) => tensor_from_contents(&input.name, dtype, shape, contents)?,
            (Some(_), Some(_)) => {
                return Err(RequestError::bad_request(format!(
                    "input '{}' has both contents and raw_input_contents",
                    input.name
                )))
            }
            (None, None) => {
                return Err(RequestError::bad_request(format!(
                    "input '{}' has neither contents nor raw_input_contents",
                    input.name
                )))
            }
        };
        if inputs.insert(input.name.clone(), tensor).is_some() {
            return Err(RequestError::bad_request(format!(
                "input '{}' is given twice",
                input.name
            )));
        }
    }
    let asked = (!request.outputs.is_empty())
        .then(|| request.outputs.into_iter().map(|o| o.name).collect());
    let outputs = model
        .infer(InferCall {
            inputs,
            outputs: asked,
        })
        .await?;
    let mut response = ModelInferResponse {
        model_name: model.name().into(),
        model_version: MODEL_VERSION.into(),
        id: request.id,
        ..Default::default()
    };
    for (name, tensor) in &outputs {
        response.outputs.push(InferOutputTensor {
            name: name.clone(),
            datatype: datatype_name(tensor.dtype()).into(),
            shape: wire_shape(tensor.shape()),
            ..Default::default()
        });
        response.raw_output_contents.push(raw_from_tensor(tensor));
    }
    Ok(response)
}
