//! `Tensor::rows` and `Tensor::concat_rows`: what dynamic batching splits
//! and stacks requests with.

use neuropods_core::{DType, Tensor};

#[test]
fn concat_then_rows_gives_back_each_part() {
    let a = Tensor::from_vec(vec![1, 3], vec![1.0f32, 2.0, 3.0]).unwrap();
    let b = Tensor::from_vec(vec![2, 3], vec![4.0f32, 5.0, 6.0, 7.0, 8.0, 9.0]).unwrap();
    let stacked = Tensor::concat_rows(&[&a, &b]).unwrap();
    assert_eq!(stacked.shape(), &[3, 3]);
    assert_eq!(
        stacked.as_slice::<f32>().unwrap(),
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    );
    let first = stacked.rows(0..1).unwrap();
    let second = stacked.rows(1..3).unwrap();
    assert_eq!(first.shape(), a.shape());
    assert_eq!(
        first.as_slice::<f32>().unwrap(),
        a.as_slice::<f32>().unwrap()
    );
    assert_eq!(
        second.as_slice::<f32>().unwrap(),
        b.as_slice::<f32>().unwrap()
    );
    // Rows are views of the stacked buffer, not copies.
    assert_eq!(
        second.buffer().unwrap().as_ptr(),
        stacked.buffer().unwrap().as_ptr().wrapping_add(12)
    );
}

#[test]
fn strings_stack_and_split() {
    let a = Tensor::from_strings(vec![1], vec!["x".into()]).unwrap();
    let b = Tensor::from_strings(vec![2], vec!["y".into(), "zz".into()]).unwrap();
    let stacked = Tensor::concat_rows(&[&a, &b]).unwrap();
    assert_eq!(stacked.dtype(), DType::String);
    assert_eq!(stacked.strings().unwrap(), &["x", "y", "zz"]);
    assert_eq!(stacked.rows(1..3).unwrap().strings().unwrap(), &["y", "zz"]);
}

#[test]
fn mismatched_parts_and_bad_ranges_are_errors() {
    let a = Tensor::from_vec(vec![1, 3], vec![1.0f32, 2.0, 3.0]).unwrap();
    let wide = Tensor::from_vec(vec![1, 2], vec![1.0f32, 2.0]).unwrap();
    let ints = Tensor::from_vec(vec![1, 3], vec![1i32, 2, 3]).unwrap();
    let scalar = Tensor::from_vec(vec![], vec![1.0f32]).unwrap();
    for bad in [&wide, &ints] {
        let error = Tensor::concat_rows(&[&a, bad]).unwrap_err().to_string();
        assert!(error.contains("cannot concatenate"), "{error}");
    }
    assert!(Tensor::concat_rows(&[&scalar]).is_err());
    assert!(Tensor::concat_rows(&[]).is_err());
    assert!(a
        .rows(0..2)
        .unwrap_err()
        .to_string()
        .contains("rows 0..2 of a tensor with 1 rows"));
    assert!(scalar.rows(0..1).is_err());
    assert_eq!(a.rows(1..1).unwrap().shape(), &[0, 3]);
}
