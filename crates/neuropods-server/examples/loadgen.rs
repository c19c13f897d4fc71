//! A closed-loop load generator for Open Inference Protocol servers, used
//! by the serving benchmarks (benchmarks/suite/serving.py) against
//! neuropods and MLServer alike.
//!
//! ```text
//! loadgen --protocol http|http-json|grpc --address 127.0.0.1:8000 --model NAME \
//!     --input x:FP32:1,4 [--input ...] --concurrency 16 --duration 5 [--warmup 1]
//! ```
//!
//! Each of `concurrency` clients has a connection of its own and sends its
//! next request when the last one is answered: requests as tritonclient
//! sends them (`http`: the binary tensor data extension, outputs asked in
//! binary; `http-json`: JSON tensors, for servers without the extension;
//! `grpc`: `raw_input_contents`), inputs filled with ones. It runs on
//! one thread (a current-thread tokio runtime), so that it takes at most one
//! core from the server it measures, and prints one JSON line: requests,
//! errors, requests per second, latency percentiles in microseconds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use neuropods_server::proto::model_infer_request::InferInputTensor;
use neuropods_server::proto::{ModelInferRequest, ModelInferResponse};
use tokio::net::TcpStream;

struct Input {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    raw: Bytes,
    count: usize,
}

fn parse_input(text: &str) -> Result<Input, String> {
    let mut parts = text.splitn(3, ':');
    let (Some(name), Some(datatype), Some(dims)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("--input {text}: expected NAME:DATATYPE:DIM,DIM"));
    };
    let shape: Vec<i64> = dims
        .split(',')
        .map(|d| {
            d.parse()
                .map_err(|_| format!("--input {text}: bad dim {d}"))
        })
        .collect::<Result<_, _>>()?;
    let count: i64 = shape.iter().product();
    let one: &[u8] = match datatype {
        "FP32" => &1.0f32.to_le_bytes(),
        "FP64" => &1.0f64.to_le_bytes(),
        "INT32" => &1i32.to_le_bytes(),
        "INT64" => &1i64.to_le_bytes(),
        other => {
            return Err(format!(
                "--input {text}: datatype {other} is not one loadgen fills"
            ))
        }
    };
    Ok(Input {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        raw: one.repeat(count as usize).into(),
        count: count as usize,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http,
    HttpJson,
    Grpc,
}

struct Options {
    protocol: Protocol,
    address: String,
    model: String,
    inputs: Vec<Input>,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        protocol: Protocol::Http,
        address: String::new(),
        model: String::new(),
        inputs: Vec::new(),
        concurrency: 1,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
    };
    let seconds = |v: String| {
        v.parse::<f64>()
            .map(Duration::from_secs_f64)
            .map_err(|_| format!("bad seconds {v}"))
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--protocol" => {
                options.protocol = match value.as_str() {
                    "http" => Protocol::Http,
                    "http-json" => Protocol::HttpJson,
                    "grpc" => Protocol::Grpc,
                    other => return Err(format!("unknown protocol {other}")),
                }
            }
            "--address" => options.address = value,
            "--model" => options.model = value,
            "--input" => options.inputs.push(parse_input(&value)?),
            "--concurrency" => {
                options.concurrency = value.parse().map_err(|_| "bad --concurrency")?
            }
            "--duration" => options.duration = seconds(value)?,
            "--warmup" => options.warmup = seconds(value)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if options.address.is_empty() || options.model.is_empty() || options.inputs.is_empty() {
        return Err("give --address, --model and at least one --input".into());
    }
    Ok(options)
}

/// The request body, and the length of its JSON header when it uses the
/// binary extension.
fn http_body(options: &Options) -> (Bytes, Option<usize>) {
    if options.protocol == Protocol::HttpJson {
        let inputs: Vec<serde_json::Value> = options
            .inputs
            .iter()
            .map(|i| {
                serde_json::json!({
                    "name": i.name, "shape": i.shape, "datatype": i.datatype,
                    "data": vec![1; i.count],
                })
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "inputs": inputs })).unwrap_or_default();
        return (body.into(), None);
    }
    let inputs: Vec<serde_json::Value> = options
        .inputs
        .iter()
        .map(|i| {
            serde_json::json!({
                "name": i.name, "shape": i.shape, "datatype": i.datatype,
                "parameters": {"binary_data_size": i.raw.len()},
            })
        })
        .collect();
    let header = serde_json::json!({"inputs": inputs, "parameters": {"binary_data_output": true}});
    let mut body = serde_json::to_vec(&header).unwrap_or_default();
    let length = body.len();
    for input in &options.inputs {
        body.extend_from_slice(&input.raw);
    }
    (body.into(), Some(length))
}

fn grpc_request(options: &Options) -> ModelInferRequest {
    ModelInferRequest {
        model_name: options.model.clone(),
        inputs: options
            .inputs
            .iter()
            .map(|i| InferInputTensor {
                name: i.name.clone(),
                datatype: i.datatype.clone(),
                shape: i.shape.clone(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: options.inputs.iter().map(|i| i.raw.clone()).collect(),
        ..Default::default()
    }
}

type Outcome = Result<(), String>;

/// One client: sends until `end`, returns the latencies (us) of the calls
/// that ended after `measure_from`, and its error count.
async fn http_client(
    options: &Options,
    body: Bytes,
    header_length: Option<usize>,
    measure_from: Instant,
    end: Instant,
) -> Result<(Vec<u32>, u64), String> {
    let stream = TcpStream::connect(&options.address)
        .await
        .map_err(|e| format!("connect {}: {e}", options.address))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_local(connection);
    let uri = format!("/v2/models/{}/infer", options.model);
    let mut latencies = Vec::new();
    let mut errors = 0;
    while Instant::now() < end {
        let mut request = hyper::Request::post(&uri).header("host", &options.address);
        request = match header_length {
            Some(length) => request
                .header("content-type", "application/octet-stream")
                .header("inference-header-content-length", length),
            None => request.header("content-type", "application/json"),
        };
        let request = request
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let outcome: Outcome = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let ok = response.status().is_success();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            if ok {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&bytes.to_bytes()).into_owned())
            }
        }
        .await;
        record(&mut latencies, &mut errors, start, measure_from, outcome);
    }
    Ok((latencies, errors))
}

async fn grpc_client(
    options: &Options,
    request: ModelInferRequest,
    measure_from: Instant,
    end: Instant,
) -> Result<(Vec<u32>, u64), String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", options.address))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect {}: {e}", options.address))?;
    let mut client = tonic::client::Grpc::new(channel);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/inference.GRPCInferenceService/ModelInfer",
    );
    let mut latencies = Vec::new();
    let mut errors = 0;
    while Instant::now() < end {
        let start = Instant::now();
        let outcome: Outcome = async {
            client.ready().await.map_err(|e| e.to_string())?;
            let codec = tonic_prost::ProstCodec::<ModelInferRequest, ModelInferResponse>::default();
            client
                .unary(tonic::Request::new(request.clone()), path.clone(), codec)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        .await;
        record(&mut latencies, &mut errors, start, measure_from, outcome);
    }
    Ok((latencies, errors))
}

fn record(
    latencies: &mut Vec<u32>,
    errors: &mut u64,
    start: Instant,
    measure_from: Instant,
    outcome: Outcome,
) {
    if start < measure_from {
        return;
    }
    match outcome {
        Ok(()) => latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32),
        Err(message) => {
            if *errors == 0 {
                eprintln!("loadgen: request failed: {message}");
            }
            *errors += 1;
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn run(options: Options) -> Result<serde_json::Value, String> {
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let end = measure_from + options.duration;
    let (body, header_length) = http_body(&options);
    let grpc = grpc_request(&options);
    let options = &options;
    let clients = (0..options.concurrency).map(|_| {
        let body = body.clone();
        let grpc = grpc.clone();
        async move {
            if options.protocol == Protocol::Grpc {
                grpc_client(options, grpc, measure_from, end).await
            } else {
                http_client(options, body, header_length, measure_from, end).await
            }
        }
    });
    let results = futures_util::future::join_all(clients).await;
    let mut latencies = Vec::new();
    let mut errors = 0;
    for result in results {
        let (mine, failed) = result?;
        latencies.extend(mine);
        errors += failed;
    }
    let measured = end.saturating_duration_since(measure_from).as_secs_f64();
    latencies.sort_unstable();
    Ok(serde_json::json!({
        "requests": latencies.len(),
        "errors": errors,
        "throughput": latencies.len() as f64 / measured,
        "p50_us": percentile(&latencies, 0.50),
        "p90_us": percentile(&latencies, 0.90),
        "p99_us": percentile(&latencies, 0.99),
    }))
}

fn main() {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(options)) {
        Ok(report) => println!("{report}"),
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::exit(1);
        }
    }
}
