//! Loads a package and runs it once from Rust: every input is filled with
//! 0, 1, 2, ... (strings "0", "1", ...), free dims taking size 4.
//!
//! `cargo run --release --example infer -- path/to/package [--gpu N]`

use neuropods_core::{DType, Dim, LoadOptions, Neuropod, Tensor, TensorData, TensorMap};

fn input_for(dtype: DType, shape: Vec<usize>) -> neuropods_core::Result<Tensor> {
    let n: usize = shape.iter().product();
    match dtype {
        DType::Float32 => Tensor::from_vec(shape, (0..n).map(|i| i as f32).collect()),
        DType::Float64 => Tensor::from_vec(shape, (0..n).map(|i| i as f64).collect()),
        DType::Int32 => Tensor::from_vec(shape, (0..n).map(|i| i as i32).collect()),
        DType::Int64 => Tensor::from_vec(shape, (0..n).map(|i| i as i64).collect()),
        DType::String => Tensor::from_strings(shape, (0..n).map(|i| i.to_string()).collect()),
        other => Err(neuropods_core::Error::InvalidInput(format!(
            "this example does not fill {other} inputs"
        ))),
    }
}

fn describe(tensor: &Tensor) -> neuropods_core::Result<String> {
    Ok(match (tensor.dtype(), tensor.data()) {
        (_, TensorData::Strings(s)) => format!("{s:?}"),
        (DType::Float32, _) => format!("{:?}", tensor.as_slice::<f32>()?),
        (DType::Float64, _) => format!("{:?}", tensor.as_slice::<f64>()?),
        (DType::Int32, _) => format!("{:?}", tensor.as_slice::<i32>()?),
        (DType::Int64, _) => format!("{:?}", tensor.as_slice::<i64>()?),
        (dtype, _) => format!("<{dtype} tensor>"),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, gpu) = match args.as_slice() {
        [path] => (path, None),
        [path, flag, n] if flag == "--gpu" => (path, Some(n.parse()?)),
        _ => return Err("usage: infer PACKAGE_PATH [--gpu N]".into()),
    };
    let mut options = LoadOptions::default();
    options.backend.visible_gpu = gpu;
    let model = Neuropod::load(path, &options)?;
    for warning in model.load_warnings() {
        eprintln!("warning: {warning}");
    }
    println!("model {} ({})", model.name(), model.platform());
    let mut inputs = TensorMap::new();
    for spec in model.inputs() {
        let shape = spec
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Any | Dim::Symbol(_) => 4,
            })
            .collect();
        inputs.insert(spec.name.clone(), input_for(spec.dtype, shape)?);
    }
    for (name, tensor) in model.infer(&inputs)? {
        println!(
            "{name}: {} {:?} {}",
            tensor.dtype(),
            tensor.shape(),
            describe(&tensor)?
        );
    }
    Ok(())
}
