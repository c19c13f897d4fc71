//! The core's wire format: writing into a ready buffer (the bindings' path,
//! against a plain copy of the payload) and reading it back, which views the
//! payload in place and so should cost the same at any size.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use neuropods_core::serialize::{deserialize, serialized_len_tensor, write_tensor};
use neuropods_core::{Buffer, Tensor};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut write = c.benchmark_group("serialize into a ready buffer");
    for &bytes in &[1usize << 10, 1 << 20, 64 << 20] {
        let tensor = Tensor::from_vec(vec![bytes / 4], vec![1.5f32; bytes / 4]).unwrap();
        let mut out = vec![0u8; serialized_len_tensor(&tensor)];
        let payload = vec![1u8; bytes];
        let mut copy = vec![0u8; bytes];
        write.throughput(Throughput::Bytes(bytes as u64));
        write.bench_with_input(BenchmarkId::new("write_tensor", bytes), &tensor, |b, t| {
            b.iter(|| write_tensor(black_box(t), &mut out).unwrap())
        });
        write.bench_with_input(
            BenchmarkId::new("copy_from_slice", bytes),
            &payload,
            |b, p| b.iter(|| copy.copy_from_slice(black_box(p))),
        );
    }
    write.finish();

    let mut read = c.benchmark_group("deserialize");
    for &bytes in &[1usize << 10, 1 << 20, 64 << 20] {
        let tensor = Tensor::from_vec(vec![bytes / 4], vec![1.5f32; bytes / 4]).unwrap();
        let mut blob = vec![0u8; serialized_len_tensor(&tensor)];
        write_tensor(&tensor, &mut blob).unwrap();
        let blob = Buffer::copy_from_slice(&blob);
        read.bench_with_input(BenchmarkId::from_parameter(bytes), &blob, |b, blob| {
            b.iter(|| deserialize(black_box(blob)).unwrap())
        });
    }
    read.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
