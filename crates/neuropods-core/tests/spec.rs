//! Spec validation: one test per kind of mismatch, and symbols shared
//! between inputs and outputs.

use neuropods_core::spec::{validate, Direction, SymbolBindings};
use neuropods_core::{DType, Dim, SpecError, Tensor, TensorMap, TensorSpec};

fn spec(name: &str, dtype: DType, shape: Vec<Dim>) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype,
        shape,
    }
}

fn f32s(shape: Vec<usize>) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape, vec![0f32; n]).unwrap()
}

fn map(items: Vec<(&str, Tensor)>) -> TensorMap {
    items.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn specs() -> Vec<TensorSpec> {
    let sym = || Dim::Symbol("batch".into());
    vec![
        spec("x", DType::Float32, vec![sym(), Dim::Fixed(3)]),
        spec("y", DType::Float32, vec![sym(), Dim::Any]),
    ]
}

fn check(tensors: TensorMap) -> Result<(), SpecError> {
    validate(
        &specs(),
        &tensors,
        Direction::Input,
        &mut SymbolBindings::new(),
    )
}

#[test]
fn matching_tensors_pass_and_missing_ones_are_allowed() {
    check(map(vec![("x", f32s(vec![2, 3])), ("y", f32s(vec![2, 7]))])).unwrap();
    check(map(vec![("y", f32s(vec![5, 1]))])).unwrap();
}

#[test]
fn unknown_name() {
    let err = check(map(vec![("z", f32s(vec![1]))])).unwrap_err();
    assert!(matches!(&err, SpecError::UnknownTensor { name, .. } if name == "z"));
    assert!(
        err.to_string()
            .contains("input 'z' is not in the spec (expected one of: x, y)"),
        "{err}"
    );
}

#[test]
fn wrong_dtype() {
    let t = Tensor::from_vec(vec![2, 3], vec![0i64; 6]).unwrap();
    let err = check(map(vec![("x", t)])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input 'x': expected dtype float32, got int64"
    );
}

#[test]
fn wrong_rank() {
    let err = check(map(vec![("x", f32s(vec![6]))])).unwrap_err();
    assert!(matches!(err, SpecError::RankMismatch { .. }));
    assert_eq!(
        err.to_string(),
        "input 'x': expected rank 2 (shape ('batch', 3)), got rank 1 (shape (6))"
    );
}

#[test]
fn wrong_fixed_dim() {
    let err = check(map(vec![("x", f32s(vec![2, 4]))])).unwrap_err();
    assert!(matches!(
        err,
        SpecError::DimMismatch {
            dim: 1,
            expected: 3,
            actual: 4,
            ..
        }
    ));
    assert!(
        err.to_string()
            .contains("input 'x': dim 1 expected size 3, got 4"),
        "{err}"
    );
}

#[test]
fn symbol_mismatch_names_both_tensors() {
    let err = check(map(vec![("x", f32s(vec![2, 3])), ("y", f32s(vec![5, 3]))])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input 'y': dim 0 is symbol 'batch' = 2 (set by 'x'), got 5"
    );
}

#[test]
fn symbols_carry_from_inputs_to_outputs() {
    let outputs = vec![spec(
        "out",
        DType::Float32,
        vec![Dim::Symbol("batch".into())],
    )];
    let inputs = specs();
    let mut bindings = SymbolBindings::new();
    validate(
        &inputs,
        &map(vec![("x", f32s(vec![4, 3]))]),
        Direction::Input,
        &mut bindings,
    )
    .unwrap();
    assert_eq!(bindings.get("batch"), Some(4));
    validate(
        &outputs,
        &map(vec![("out", f32s(vec![4]))]),
        Direction::Output,
        &mut bindings,
    )
    .unwrap();
    let err = validate(
        &outputs,
        &map(vec![("out", f32s(vec![3]))]),
        Direction::Output,
        &mut bindings,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("output 'out': dim 0 is symbol 'batch' = 4"),
        "{err}"
    );
}

#[test]
fn string_tensors_are_checked_like_others() {
    let specs = vec![spec("s", DType::String, vec![Dim::Fixed(2)])];
    let ok = Tensor::from_strings(vec![2], vec!["a".into(), "b".into()]).unwrap();
    validate(
        &specs,
        &map(vec![("s", ok)]),
        Direction::Input,
        &mut SymbolBindings::new(),
    )
    .unwrap();
    let err = validate(
        &specs,
        &map(vec![("s", f32s(vec![2]))]),
        Direction::Input,
        &mut SymbolBindings::new(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("expected dtype string, got float32"),
        "{err}"
    );
}
