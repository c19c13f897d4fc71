//! Cost of checking a call's tensors against a spec: done twice per `infer`
//! (inputs and outputs), so it is part of every call's overhead.
use criterion::{criterion_group, criterion_main, Criterion};
use neuropods_core::spec::{validate, Direction, SymbolBindings};
use neuropods_core::{DType, Dim, Tensor, TensorMap, TensorSpec};
use std::hint::black_box;

fn spec(name: &str, shape: Vec<Dim>) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype: DType::Float32,
        shape,
    }
}

fn tensors(names: &[&str], shape: &[usize]) -> TensorMap {
    let numel = shape.iter().product();
    names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                Tensor::from_vec(shape.to_vec(), vec![0f32; numel]).unwrap(),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    // The tiny benchmark model's inputs: two vectors sharing a symbol.
    let two = vec![
        spec("x", vec![Dim::Symbol("n".into())]),
        spec("y", vec![Dim::Symbol("n".into())]),
    ];
    let two_tensors = tensors(&["x", "y"], &[4]);
    c.bench_function("validate 2 inputs, 1 symbol", |b| {
        b.iter(|| {
            let mut bindings = SymbolBindings::new();
            validate(
                black_box(&two),
                black_box(&two_tensors),
                Direction::Input,
                &mut bindings,
            )
            .unwrap();
        })
    });

    // A wider model: 16 rank-3 inputs mixing fixed dims, symbols and any.
    let names: Vec<String> = (0..16).map(|i| format!("input_{i}")).collect();
    let wide: Vec<TensorSpec> = names
        .iter()
        .map(|n| {
            spec(
                n,
                vec![Dim::Symbol("batch".into()), Dim::Fixed(8), Dim::Any],
            )
        })
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let wide_tensors = tensors(&name_refs, &[32, 8, 3]);
    c.bench_function("validate 16 inputs, rank 3", |b| {
        b.iter(|| {
            let mut bindings = SymbolBindings::new();
            validate(
                black_box(&wide),
                black_box(&wide_tensors),
                Direction::Input,
                &mut bindings,
            )
            .unwrap();
        })
    });

    // The error path: an unknown name is reported with the expected names.
    let mut unknown = two_tensors.clone();
    unknown.insert(
        "z".into(),
        Tensor::from_vec(vec![4], vec![0f32; 4]).unwrap(),
    );
    c.bench_function("validate, unknown input (error)", |b| {
        b.iter(|| {
            let mut bindings = SymbolBindings::new();
            validate(
                black_box(&two),
                black_box(&unknown),
                Direction::Input,
                &mut bindings,
            )
            .unwrap_err();
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
