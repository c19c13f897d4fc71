//! Generates the gRPC service from proto/inference.proto with protox, a
//! protobuf compiler in Rust, so that building needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/inference.proto");
    let descriptors = protox::compile(["inference.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .bytes(".inference")
        .compile_fds(descriptors)?;
    Ok(())
}
