//! A self-describing binary form of one tensor or of a [`TensorMap`], for
//! sending tensors between processes or storing them (the exact layout is in
//! `docs/serialization.md`).
//!
//! Every payload starts at a multiple of [`PAYLOAD_ALIGN`] bytes from the
//! start of the blob, so [`deserialize`] can hand out numeric tensors that
//! are slices of the input buffer instead of copies. The reader treats its
//! input as untrusted: every claimed size is checked against the bytes
//! actually present before anything is allocated for it, and anything
//! malformed is an [`Error::Serialization`] that says what and where.
//!
//! Numeric payloads are written and read as the buffer's bytes, which are
//! native-endian; like the rest of the crate this assumes a little-endian
//! host.

use crate::bytes::ByteReader;
use crate::error::{Error, Result};
use crate::tensor::{
    check_shape, checked_numel, Buffer, DType, ForeignBuffer, Tensor, TensorData, TensorMap,
};

/// First 8 bytes of every blob.
pub const MAGIC: [u8; 8] = *b"NEUROPOD";

/// Version of the layout written here; the reader accepts only this one.
pub const FORMAT_VERSION: u16 = 1;

/// Payloads start at a multiple of this many bytes from the start of the
/// blob: enough for any dtype and for SIMD loads.
pub const PAYLOAD_ALIGN: usize = 64;

/// Magic, version, kind, entry count.
const HEADER_LEN: usize = 8 + 2 + 2 + 4;
const KIND_TENSOR: u16 = 0;
const KIND_MAP: u16 = 1;
/// The fixed fields of an entry (name length, dtype, rank, payload length):
/// no entry can be shorter, which bounds the entry count a blob can claim.
const MIN_ENTRY_LEN: usize = 4 + 4 + 4 + 8;

/// What a blob holds.
#[derive(Clone, Debug)]
pub enum Serialized {
    /// One tensor, written by [`serialize_tensor`] or [`write_tensor`].
    Tensor(Tensor),
    /// Named tensors, written by [`serialize_map`] or [`write_map`].
    Map(TensorMap),
}

/// Serializes one tensor.
///
/// # Panics
/// Only on a tensor whose rank does not fit in a `u32`, which no real tensor
/// reaches (see [`write_tensor`]).
pub fn serialize_tensor(t: &Tensor) -> Vec<u8> {
    let mut out = vec![0; serialized_len_tensor(t)];
    if let Err(e) = write_tensor(t, &mut out) {
        panic!("cannot serialize tensor: {e}");
    }
    out
}

/// Serializes a map of tensors, in name order.
///
/// # Panics
/// Only on a name of 4 GiB or more, a rank that does not fit in a `u32`, or
/// more than `u32::MAX` entries (see [`write_map`]).
pub fn serialize_map(m: &TensorMap) -> Vec<u8> {
    let mut out = vec![0; serialized_len_map(m)];
    if let Err(e) = write_map(m, &mut out) {
        panic!("cannot serialize tensor map: {e}");
    }
    out
}

/// Exact size of the blob [`write_tensor`] writes for `t`.
pub fn serialized_len_tensor(t: &Tensor) -> usize {
    let mut sink = Sink { out: None, pos: 0 };
    encode(KIND_TENSOR, 1, tensor_entries(t), &mut sink);
    sink.pos
}

/// Exact size of the blob [`write_map`] writes for `m`.
pub fn serialized_len_map(m: &TensorMap) -> usize {
    let mut sink = Sink { out: None, pos: 0 };
    encode(KIND_MAP, m.len(), map_entries(m), &mut sink);
    sink.pos
}

/// Writes the blob of one tensor into `out`, which must be exactly
/// [`serialized_len_tensor`] bytes long (so a caller can allocate the
/// destination, e.g. a Python `bytes`, and fill it without a copy).
///
/// Fails with [`Error::InvalidInput`] if `out` has another length or the
/// rank does not fit in the format's `u32`.
pub fn write_tensor(t: &Tensor, out: &mut [u8]) -> Result<()> {
    check_encodable(1, tensor_entries(t))?;
    write_checked(serialized_len_tensor(t), out, |sink| {
        encode(KIND_TENSOR, 1, tensor_entries(t), sink)
    })
}

/// Writes the blob of a map into `out`, which must be exactly
/// [`serialized_len_map`] bytes long.
///
/// Fails with [`Error::InvalidInput`] if `out` has another length, or a
/// name, a rank or the number of entries does not fit in the format's `u32`.
pub fn write_map(m: &TensorMap, out: &mut [u8]) -> Result<()> {
    check_encodable(m.len(), map_entries(m))?;
    write_checked(serialized_len_map(m), out, |sink| {
        encode(KIND_MAP, m.len(), map_entries(m), sink)
    })
}

/// Parses a blob held in a [`Buffer`].
///
/// A numeric payload becomes a slice of `buf` sharing its owner (no copy)
/// when its address is aligned for the dtype, which it always is when `buf`
/// starts at a multiple of the dtype's size; otherwise it is copied into a
/// fresh aligned buffer. Strings are always copied.
pub fn deserialize(buf: &Buffer) -> Result<Serialized> {
    parse(buf).map_err(Error::Serialization)
}

/// Copies `bytes` into an aligned [`Buffer`] and parses it with
/// [`deserialize`], so numeric tensors share that one copy.
pub fn deserialize_bytes(bytes: &[u8]) -> Result<Serialized> {
    deserialize(&Buffer::copy_from_slice(bytes))
}

// ---------------------------------------------------------------- writing

fn tensor_entries(t: &Tensor) -> impl Iterator<Item = (&str, &Tensor)> {
    std::iter::once(("", t))
}

fn map_entries(m: &TensorMap) -> impl Iterator<Item = (&str, &Tensor)> {
    m.iter().map(|(name, t)| (name.as_str(), t))
}

/// The checks the format's `u32` fields impose; done up front so that
/// [`encode`] itself cannot fail and can also serve to measure.
fn check_encodable<'a>(
    count: usize,
    entries: impl Iterator<Item = (&'a str, &'a Tensor)>,
) -> Result<()> {
    if u32::try_from(count).is_err() {
        return Err(Error::InvalidInput(format!(
            "cannot serialize {count} tensors: at most {} fit in one blob",
            u32::MAX
        )));
    }
    for (name, t) in entries {
        if u32::try_from(name.len()).is_err() {
            return Err(Error::InvalidInput(format!(
                "cannot serialize a tensor name of {} bytes: at most {} fit",
                name.len(),
                u32::MAX
            )));
        }
        if u32::try_from(t.shape().len()).is_err() {
            return Err(Error::InvalidInput(format!(
                "cannot serialize tensor '{}' of rank {}",
                short(name),
                t.shape().len()
            )));
        }
    }
    Ok(())
}

fn write_checked(len: usize, out: &mut [u8], fill: impl FnOnce(&mut Sink<'_>)) -> Result<()> {
    if out.len() != len {
        return Err(Error::InvalidInput(format!(
            "output buffer is {} bytes but the serialized form is {len}",
            out.len()
        )));
    }
    let mut sink = Sink {
        out: Some(out),
        pos: 0,
    };
    fill(&mut sink);
    Ok(())
}

/// Where [`encode`] writes: into `out`, or nowhere when `out` is `None`, which
/// only measures. One function thus defines both the size and the bytes.
struct Sink<'a> {
    out: Option<&'a mut [u8]>,
    pos: usize,
}

// Writing, not reading: `out` is the caller's buffer, checked against the
// measured length, so the module's no-indexing rule (for untrusted input)
// gives way to the plain slice writes here.
#[allow(clippy::indexing_slicing)]
impl Sink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        if let Some(out) = self.out.as_deref_mut() {
            // In bounds: `out` was checked to be as long as the measured blob,
            // and the same encode over the same immutable tensors measured it.
            out[self.pos..end].copy_from_slice(bytes);
        }
        self.pos = end;
    }

    /// Puts lent bytes, copied as they are now.
    fn put_foreign(&mut self, bytes: &ForeignBuffer) {
        let end = self.pos + bytes.len();
        if let Some(out) = self.out.as_deref_mut() {
            bytes.copy_to(&mut out[self.pos..end]);
        }
        self.pos = end;
    }

    fn pad_to_payload(&mut self) {
        let end = self.pos + padding(self.pos);
        if let Some(out) = self.out.as_deref_mut() {
            // Written even though fresh buffers are zeroed: `out` may be reused.
            out[self.pos..end].fill(0);
        }
        self.pos = end;
    }
}

fn padding(pos: usize) -> usize {
    (PAYLOAD_ALIGN - pos % PAYLOAD_ALIGN) % PAYLOAD_ALIGN
}

/// The layout, in one place. The `as u32` casts were checked by
/// [`check_encodable`] before anything is written; `usize as u64` is lossless
/// on every supported target.
fn encode<'a>(
    kind: u16,
    count: usize,
    entries: impl Iterator<Item = (&'a str, &'a Tensor)>,
    sink: &mut Sink<'_>,
) {
    sink.put(&MAGIC);
    sink.put(&FORMAT_VERSION.to_le_bytes());
    sink.put(&kind.to_le_bytes());
    sink.put(&(count as u32).to_le_bytes());
    for (name, t) in entries {
        sink.put(&(name.len() as u32).to_le_bytes());
        sink.put(name.as_bytes());
        sink.put(&t.dtype().code().to_le_bytes());
        sink.put(&(t.shape().len() as u32).to_le_bytes());
        for &d in t.shape() {
            sink.put(&(d as u64).to_le_bytes());
        }
        match t.data() {
            TensorData::Numeric(buf) => {
                sink.put(&(buf.len() as u64).to_le_bytes());
                sink.pad_to_payload();
                sink.put(buf);
            }
            TensorData::Foreign(buf) => {
                sink.put(&(buf.len() as u64).to_le_bytes());
                sink.pad_to_payload();
                sink.put_foreign(buf);
            }
            TensorData::Strings(strings) => {
                let text: usize = strings.iter().map(String::len).sum();
                let payload = strings.len() * 8 + text;
                sink.put(&(payload as u64).to_le_bytes());
                sink.pad_to_payload();
                for s in strings.iter() {
                    sink.put(&(s.len() as u64).to_le_bytes());
                }
                for s in strings.iter() {
                    sink.put(s.as_bytes());
                }
            }
        }
    }
}

// ---------------------------------------------------------------- reading

fn parse(buf: &Buffer) -> Result<Serialized, String> {
    let bytes: &[u8] = buf;
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "blob is {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        ));
    }
    let mut r = ByteReader::new(bytes);
    let magic: [u8; 8] = r.array("magic")?;
    if magic != MAGIC {
        return Err(format!(
            "bad magic \"{}\" (expected \"{}\"): not a serialized tensor",
            magic.escape_ascii(),
            MAGIC.escape_ascii()
        ));
    }
    let version = r.u16("format version")?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "unsupported format version {version} (this build reads version {FORMAT_VERSION})"
        ));
    }
    let kind = r.u16("kind")?;
    let count = r.u32("entry count")?;
    let value = match kind {
        KIND_TENSOR => {
            if count != 1 {
                return Err(format!(
                    "a single-tensor blob must have 1 entry, this one claims {count}"
                ));
            }
            let (_, t) = read_entry(&mut r, buf, None)?;
            Serialized::Tensor(t)
        }
        KIND_MAP => {
            // Checked before the loop so an absurd count fails at once.
            let fit = r.remaining() / MIN_ENTRY_LEN;
            if usize::try_from(count).map_or(true, |c| c > fit) {
                return Err(format!(
                    "blob claims {count} entries but the {} bytes left can hold at most {fit}",
                    r.remaining()
                ));
            }
            let mut map = TensorMap::new();
            for index in 0..count {
                let (name, t) = read_entry(&mut r, buf, Some(index))?;
                if map.contains_key(&name) {
                    return Err(format!("entry {index}: duplicate name '{}'", short(&name)));
                }
                map.insert(name, t);
            }
            Serialized::Map(map)
        }
        other => {
            return Err(format!(
                "unknown kind {other} (expected {KIND_TENSOR} = tensor or {KIND_MAP} = map)"
            ))
        }
    };
    if r.remaining() != 0 {
        return Err(format!(
            "{} bytes of trailing garbage after the last entry (at offset {})",
            r.remaining(),
            r.position()
        ));
    }
    Ok(value)
}

/// Reads one entry; `index` is `None` in a single-tensor blob, whose name
/// must be empty. Errors are prefixed with the entry and, once read, its name.
fn read_entry(
    r: &mut ByteReader<'_>,
    buf: &Buffer,
    index: Option<u32>,
) -> Result<(String, Tensor), String> {
    let label = match index {
        Some(i) => format!("entry {i}"),
        None => "tensor".to_string(),
    };
    let name = read_name(r).map_err(|e| format!("{label}: {e}"))?;
    let label = match index {
        Some(_) => format!("{label} ('{}')", short(&name)),
        None if name.is_empty() => label,
        None => {
            return Err(format!(
                "{label}: a single-tensor blob has an empty name, this one has '{}'",
                short(&name)
            ))
        }
    };
    let t = read_tensor(r, buf).map_err(|e| format!("{label}: {e}"))?;
    Ok((name, t))
}

fn read_name(r: &mut ByteReader<'_>) -> Result<String, String> {
    let len = to_usize(r.u32("name length")?.into(), "name length")?;
    let bytes = r.take(len, "name")?;
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|e| format!("name is not valid UTF-8: {e}"))
}

fn read_tensor(r: &mut ByteReader<'_>, buf: &Buffer) -> Result<Tensor, String> {
    let code = r.u32("dtype")?;
    let dtype = DType::from_code(code).ok_or_else(|| format!("unknown dtype code {code}"))?;

    let rank = to_usize(r.u32("rank")?.into(), "rank")?;
    // Each dim is 8 bytes of input, so this bounds the allocation below.
    if rank.checked_mul(8).is_none_or(|n| n > r.remaining()) {
        return Err(format!(
            "rank {rank} needs {rank} x 8 bytes of dims but only {} remain",
            r.remaining()
        ));
    }
    let mut shape = Vec::with_capacity(rank);
    for i in 0..rank {
        let d = r.u64("dim")?;
        shape
            .push(usize::try_from(d).map_err(|_| format!("dim {i} = {d} does not fit in memory"))?);
    }
    // Before the payload is looked at: a shape no layer could hold is an
    // error whatever the payload says.
    check_shape(&shape).map_err(|e| match e {
        Error::InvalidInput(message) => message,
        other => other.to_string(),
    })?;
    let numel = checked_numel(&shape).ok_or_else(|| {
        format!(
            "shape {} has more elements than fit in memory",
            fmt_shape(&shape)
        )
    })?;

    let payload_len = to_usize(r.u64("payload length")?, "payload length")?;
    let pad_start = r.position();
    let pad = r.take(padding(pad_start), "padding")?;
    if pad.iter().any(|&b| b != 0) {
        return Err(format!(
            "padding before the payload (offset {pad_start}) is not zero"
        ));
    }
    if payload_len > r.remaining() {
        return Err(format!(
            "payload claims {payload_len} bytes but {} remain",
            r.remaining()
        ));
    }
    let start = r.position();
    let payload = r.take(payload_len, "payload")?;

    let Some(item) = dtype.item_size() else {
        let strings = read_strings(payload, numel)?;
        return Tensor::from_strings(shape, strings).map_err(|e| e.to_string());
    };
    let expected = numel.checked_mul(item);
    if expected != Some(payload_len) {
        return Err(format!(
            "payload is {payload_len} bytes but a {dtype} tensor of shape {} needs {}",
            fmt_shape(&shape),
            expected.map_or("more than fit in memory".to_string(), |n| n.to_string())
        ));
    }
    let slice = start
        .checked_add(payload_len)
        .and_then(|end| buf.slice(start..end))
        .ok_or_else(|| "payload out of bounds".to_string())?;
    let data = if slice.is_aligned_to(item) {
        slice
    } else {
        Buffer::copy_from_slice(&slice)
    };
    // from_buffer checks what the bytes must hold (bools are 0 or 1).
    Tensor::from_buffer(dtype, shape, data).map_err(|e| match e {
        Error::InvalidInput(message) => message,
        other => other.to_string(),
    })
}

/// `numel` u64 lengths, then the UTF-8 bytes back to back, filling `payload`
/// exactly.
fn read_strings(payload: &[u8], numel: usize) -> Result<Vec<String>, String> {
    // The lengths must be present before `numel` is trusted for allocation.
    let (table, text) = numel
        .checked_mul(8)
        .and_then(|n| payload.split_at_checked(n))
        .ok_or_else(|| {
            format!(
                "string payload of {} bytes cannot hold the lengths of {numel} strings",
                payload.len()
            )
        })?;
    let mut rest = text;
    let mut strings = Vec::with_capacity(numel);
    for (i, len) in table.chunks_exact(8).enumerate() {
        let len = len
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| "string lengths: short read".to_string())?;
        let Some((bytes, after)) = usize::try_from(len)
            .ok()
            .and_then(|n| rest.split_at_checked(n))
        else {
            return Err(format!(
                "string {i} claims {len} bytes but {} remain",
                rest.len()
            ));
        };
        let s = std::str::from_utf8(bytes)
            .map_err(|e| format!("string {i} is not valid UTF-8: {e}"))?;
        strings.push(s.to_owned());
        rest = after;
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes of string data are left over after the last string",
            rest.len()
        ));
    }
    Ok(strings)
}

fn to_usize(v: u64, what: &str) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("{what} {v} does not fit in memory"))
}

/// A shape for messages, cut short when the rank is absurd.
fn fmt_shape(shape: &[usize]) -> String {
    const SHOWN: usize = 8;
    match shape.get(..SHOWN) {
        Some(head) if shape.len() > SHOWN => format!("{head:?}... (rank {})", shape.len()),
        _ => format!("{shape:?}"),
    }
}

/// A name for messages, cut short so a hostile blob cannot make a huge one.
fn short(name: &str) -> String {
    crate::error::shortened(name, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry spelled out field by field, to build malformed blobs.
    struct Raw {
        name: Vec<u8>,
        dtype: u32,
        dims: Vec<u64>,
        payload_len: u64,
        pad: u8,
        payload: Vec<u8>,
    }

    fn raw(name: &str, dtype: DType, dims: &[u64], payload: &[u8]) -> Raw {
        Raw {
            name: name.as_bytes().to_vec(),
            dtype: dtype.code(),
            dims: dims.to_vec(),
            payload_len: payload.len() as u64,
            pad: 0,
            payload: payload.to_vec(),
        }
    }

    fn header(kind: u16, count: u32) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend(FORMAT_VERSION.to_le_bytes());
        b.extend(kind.to_le_bytes());
        b.extend(count.to_le_bytes());
        b
    }

    fn blob(kind: u16, entries: &[Raw]) -> Vec<u8> {
        let mut b = header(kind, entries.len() as u32);
        for e in entries {
            b.extend((e.name.len() as u32).to_le_bytes());
            b.extend(&e.name);
            b.extend(e.dtype.to_le_bytes());
            b.extend((e.dims.len() as u32).to_le_bytes());
            for d in &e.dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(e.payload_len.to_le_bytes());
            b.resize(b.len() + padding(b.len()), e.pad);
            b.extend(&e.payload);
        }
        b
    }

    fn strings_payload(strings: &[&[u8]]) -> Vec<u8> {
        let mut p = Vec::new();
        for s in strings {
            p.extend((s.len() as u64).to_le_bytes());
        }
        for s in strings {
            p.extend(*s);
        }
        p
    }

    /// The message of the `Error::Serialization` that `bytes` must produce.
    fn err(bytes: &[u8]) -> String {
        match deserialize_bytes(bytes) {
            Err(Error::Serialization(m)) => m,
            other => panic!("expected a serialization error, got {other:?}"),
        }
    }

    fn assert_err(bytes: &[u8], needle: &str) {
        let m = err(bytes);
        assert!(
            m.contains(needle),
            "message {m:?} does not contain {needle:?}"
        );
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn layout_is_as_documented() {
        let t = Tensor::from_vec(vec![2], vec![1i32, -1]).unwrap();
        let bytes = serialize_tensor(&t);
        let mut want = b"NEUROPOD".to_vec();
        want.extend([1, 0, 0, 0, 1, 0, 0, 0]); // version 1, kind 0, count 1
        want.extend([0, 0, 0, 0]); // empty name
        want.extend([6, 0, 0, 0]); // int32
        want.extend([1, 0, 0, 0]); // rank 1
        want.extend(2u64.to_le_bytes()); // dim
        want.extend(8u64.to_le_bytes()); // payload length
        want.resize(64, 0); // padding to offset 64
        want.extend([1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(bytes, want);
        assert_eq!(serialized_len_tensor(&t), 72);
    }

    #[test]
    fn map_layout_matches_builder_in_name_order() {
        let mut m = TensorMap::new();
        m.insert("b".into(), Tensor::from_vec(vec![], vec![2.5f64]).unwrap());
        m.insert(
            "a".into(),
            Tensor::from_strings(vec![2], vec!["hé".into(), String::new()]).unwrap(),
        );
        let want = blob(
            KIND_MAP,
            &[
                raw(
                    "a",
                    DType::String,
                    &[2],
                    &strings_payload(&["hé".as_bytes(), b""]),
                ),
                raw("b", DType::Float64, &[], &2.5f64.to_le_bytes()),
            ],
        );
        assert_eq!(serialize_map(&m), want);
        assert_eq!(serialized_len_map(&m), want.len());
        let Serialized::Map(back) = deserialize_bytes(&want).unwrap() else {
            panic!("not a map")
        };
        assert_eq!(back["a"].strings().unwrap(), ["hé", ""]);
        assert_eq!(back["b"].as_slice::<f64>().unwrap(), [2.5]);
        assert_eq!(back["b"].shape(), [] as [usize; 0]);
    }

    #[test]
    fn empty_map_round_trips() {
        let bytes = serialize_map(&TensorMap::new());
        assert_eq!(bytes.len(), HEADER_LEN);
        let Serialized::Map(m) = deserialize_bytes(&bytes).unwrap() else {
            panic!("not a map")
        };
        assert!(m.is_empty());
    }

    #[test]
    fn write_rejects_wrong_output_length() {
        let t = Tensor::from_vec(vec![1], vec![1u8]).unwrap();
        let mut out = vec![0; serialized_len_tensor(&t) + 1];
        match write_tensor(&t, &mut out) {
            Err(Error::InvalidInput(m)) => assert!(m.contains("output buffer is 66 bytes"), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut out = vec![0; 3];
        assert!(matches!(
            write_map(&TensorMap::new(), &mut out),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn write_overwrites_dirty_output() {
        let t = Tensor::from_vec(vec![1], vec![7u16]).unwrap();
        let mut out = vec![0xAA; serialized_len_tensor(&t)];
        write_tensor(&t, &mut out).unwrap();
        assert_eq!(out, serialize_tensor(&t));
    }

    #[test]
    fn aligned_payload_is_shared_unaligned_is_copied() {
        let t = Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).unwrap();
        let bytes = serialize_tensor(&t);
        let inside = |buf: &Buffer, t: &Tensor| {
            let p = t.buffer().unwrap().as_ptr() as usize;
            let base = buf.as_ptr() as usize;
            p >= base && p < base + buf.len()
        };

        let aligned = Buffer::copy_from_slice(&bytes);
        let Serialized::Tensor(back) = deserialize(&aligned).unwrap() else {
            panic!("not a tensor")
        };
        assert!(inside(&aligned, &back));
        assert_eq!(f32s(&back), [1.0, 2.0, 3.0]);

        // The same blob one byte into an aligned buffer: payload lands on an
        // odd address, so it must be copied to be readable.
        let mut shifted = vec![0u8];
        shifted.extend(&bytes);
        let shifted = Buffer::copy_from_slice(&shifted)
            .slice(1..bytes.len() + 1)
            .unwrap();
        let Serialized::Tensor(back) = deserialize(&shifted).unwrap() else {
            panic!("not a tensor")
        };
        assert!(!inside(&shifted, &back));
        assert_eq!(f32s(&back), [1.0, 2.0, 3.0]);
    }

    // ------------------------------------------------ one test per error kind

    #[test]
    fn shorter_than_header() {
        assert_err(&MAGIC, "blob is 8 bytes, shorter than the 16-byte header");
        assert_err(&[], "blob is 0 bytes");
    }

    #[test]
    fn bad_magic() {
        let mut b = blob(KIND_MAP, &[]);
        b[..8].copy_from_slice(b"PK\x03\x04xxxx");
        assert_err(&b, "bad magic \"PK\\x03\\x04xxxx\"");
    }

    #[test]
    fn unsupported_version() {
        let mut b = blob(KIND_MAP, &[]);
        b[8..10].copy_from_slice(&2u16.to_le_bytes());
        assert_err(&b, "unsupported format version 2");
    }

    #[test]
    fn unknown_kind() {
        let mut b = blob(KIND_MAP, &[]);
        b[10..12].copy_from_slice(&7u16.to_le_bytes());
        assert_err(&b, "unknown kind 7");
    }

    #[test]
    fn single_tensor_with_wrong_count() {
        let e = raw("", DType::Uint8, &[1], &[5]);
        let mut b = blob(KIND_TENSOR, &[e]);
        b[12..16].copy_from_slice(&2u32.to_le_bytes());
        assert_err(
            &b,
            "single-tensor blob must have 1 entry, this one claims 2",
        );
        let b = header(KIND_TENSOR, 0);
        assert_err(&b, "claims 0");
    }

    #[test]
    fn absurd_entry_count() {
        let mut b = header(KIND_MAP, 4_000_000_000);
        b.extend([0; 40]);
        assert_err(
            &b,
            "blob claims 4000000000 entries but the 40 bytes left can hold at most 2",
        );
    }

    #[test]
    fn truncated_field() {
        let b = blob(KIND_TENSOR, &[raw("", DType::Uint8, &[1], &[5])]);
        assert_err(
            &b[..18],
            "tensor: name length needs 4 bytes at offset 16 but only 2 remain",
        );
        assert_err(
            &b[..22],
            "tensor: dtype needs 4 bytes at offset 20 but only 2 remain",
        );
        assert_err(&b[..40], "tensor: payload length needs 8 bytes");
        assert_err(
            &b[..50],
            "tensor: padding needs 20 bytes at offset 44 but only 6 remain",
        );
    }

    #[test]
    fn name_longer_than_blob() {
        let mut b = header(KIND_MAP, 1);
        b.extend(1000u32.to_le_bytes());
        b.extend([b'x'; 30]);
        assert_err(
            &b,
            "entry 0: name needs 1000 bytes at offset 20 but only 30 remain",
        );
    }

    #[test]
    fn name_not_utf8() {
        let mut e = raw("", DType::Uint8, &[0], &[]);
        e.name = vec![b'a', 0xff];
        assert_err(&blob(KIND_MAP, &[e]), "entry 0: name is not valid UTF-8");
    }

    #[test]
    fn single_tensor_with_name() {
        let b = blob(KIND_TENSOR, &[raw("x", DType::Uint8, &[0], &[])]);
        assert_err(
            &b,
            "tensor: a single-tensor blob has an empty name, this one has 'x'",
        );
    }

    #[test]
    fn unknown_dtype() {
        let mut e = raw("x", DType::Uint8, &[0], &[]);
        e.dtype = 99;
        assert_err(
            &blob(KIND_MAP, &[e]),
            "entry 0 ('x'): unknown dtype code 99",
        );
    }

    #[test]
    fn rank_larger_than_blob() {
        let mut b = header(KIND_TENSOR, 1);
        b.extend(0u32.to_le_bytes());
        b.extend(DType::Int8.code().to_le_bytes());
        b.extend(u32::MAX.to_le_bytes());
        b.extend([0; 24]);
        assert_err(
            &b,
            "tensor: rank 4294967295 needs 4294967295 x 8 bytes of dims but only 24 remain",
        );
    }

    #[test]
    fn dims_overflow() {
        let big = 1u64 << 32;
        let b = blob(KIND_MAP, &[raw("x", DType::Int8, &[big, big, big], &[])]);
        assert_err(
            &b,
            "entry 0 ('x'): shape [4294967296, 4294967296, 4294967296] is too large to describe memory",
        );
        // A zero dim does not excuse the others: numpy and the frameworks
        // size strides from them.
        for dims in [[big, big, big, 0], [0, big, big, big]] {
            let b = blob(KIND_MAP, &[raw("x", DType::Int8, &dims, &[])]);
            assert_err(&b, "too large to describe memory");
        }
        let b = blob(KIND_MAP, &[raw("x", DType::Int8, &[0, 5, 7], &[])]);
        let Serialized::Map(m) = deserialize_bytes(&b).unwrap() else {
            panic!("not a map")
        };
        assert_eq!(m["x"].numel(), 0);
        assert_eq!(m["x"].shape(), &[0, 5, 7]);
    }

    #[test]
    fn rank_beyond_the_limit() {
        let dims = [1u64; crate::tensor::MAX_RANK + 1];
        let b = blob(KIND_TENSOR, &[raw("", DType::Uint8, &dims, &[7])]);
        assert_err(&b, "rank 65 is more than the 64 dimensions");
        let dims = [1u64; crate::tensor::MAX_RANK];
        let b = blob(KIND_TENSOR, &[raw("", DType::Uint8, &dims, &[7])]);
        assert!(deserialize_bytes(&b).is_ok());
    }

    #[test]
    fn payload_longer_than_blob() {
        let mut a = raw("a", DType::Uint8, &[1], &[1]);
        let mut e = raw("x", DType::Float32, &[2], &[0; 8]);
        e.payload_len = 1_000_000_000_000_000_000;
        let b = blob(KIND_MAP, &[std::mem::replace(&mut a, e), a]);
        assert_err(
            &b,
            "entry 1 ('x'): payload claims 1000000000000000000 bytes but 8 remain",
        );
    }

    #[test]
    fn payload_length_disagrees_with_shape() {
        let b = blob(KIND_MAP, &[raw("x", DType::Float32, &[3], &[0; 8])]);
        assert_err(
            &b,
            "entry 0 ('x'): payload is 8 bytes but a float32 tensor of shape [3] needs 12",
        );
        let huge = 1u64 << 62;
        let b = blob(KIND_MAP, &[raw("x", DType::Float64, &[huge], &[0; 8])]);
        assert_err(&b, "too large to describe memory");
    }

    #[test]
    fn nonzero_padding() {
        let mut e = raw("", DType::Uint8, &[1], &[5]);
        e.pad = 1;
        assert_err(
            &blob(KIND_TENSOR, &[e]),
            "tensor: padding before the payload (offset 44) is not zero",
        );
    }

    #[test]
    fn bool_not_zero_or_one() {
        let b = blob(KIND_TENSOR, &[raw("", DType::Bool, &[3], &[1, 0, 2])]);
        assert_err(&b, "tensor: bool element 2 is 2, not 0 or 1");
    }

    #[test]
    fn string_lengths_do_not_fit() {
        let b = blob(KIND_TENSOR, &[raw("", DType::String, &[3], &[0; 8])]);
        assert_err(
            &b,
            "string payload of 8 bytes cannot hold the lengths of 3 strings",
        );
        let b = blob(
            KIND_TENSOR,
            &[raw("", DType::String, &[1u64 << 62], &[0; 8])],
        );
        assert_err(&b, "too large to describe memory");
    }

    #[test]
    fn string_longer_than_payload() {
        let mut p = strings_payload(&[b"ab"]);
        p[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let b = blob(KIND_TENSOR, &[raw("", DType::String, &[1], &p)]);
        assert_err(
            &b,
            "tensor: string 0 claims 18446744073709551615 bytes but 2 remain",
        );
    }

    #[test]
    fn string_data_left_over() {
        let mut p = strings_payload(&[b"ab"]);
        p.push(b'c');
        let b = blob(KIND_TENSOR, &[raw("", DType::String, &[1], &p)]);
        assert_err(&b, "1 bytes of string data are left over");
    }

    #[test]
    fn string_not_utf8() {
        let p = strings_payload(&[b"ok", b"\xc3("]);
        let b = blob(KIND_TENSOR, &[raw("", DType::String, &[2], &p)]);
        assert_err(&b, "tensor: string 1 is not valid UTF-8");
    }

    #[test]
    fn trailing_garbage() {
        let mut b = blob(KIND_TENSOR, &[raw("", DType::Uint8, &[1], &[5])]);
        b.extend([0, 0, 0]);
        assert_err(
            &b,
            "3 bytes of trailing garbage after the last entry (at offset 65)",
        );
    }

    #[test]
    fn duplicate_names() {
        let e = || raw("x", DType::Uint8, &[0], &[]);
        assert_err(&blob(KIND_MAP, &[e(), e()]), "entry 1: duplicate name 'x'");
    }

    #[test]
    fn long_names_are_cut_in_messages() {
        let name = "é".repeat(1000);
        let mut e = raw(&name, DType::Uint8, &[0], &[]);
        e.dtype = 0;
        let m = err(&blob(KIND_MAP, &[e]));
        assert!(m.len() < 200, "{m}");
        assert!(m.contains(&format!("'{}...'", "é".repeat(64))), "{m}");
    }
}
