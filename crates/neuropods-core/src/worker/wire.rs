//! The messages between a caller and its worker, in a small binary form
//! (little-endian, length-prefixed). What the worker sends is read as
//! untrusted: every count and length is checked against the bytes present.
//!
//! Every message starts with the same header:
//! ```text
//! u8 tag
//! u32 n, n x {u64 id, u64 len, u8 single_use}   segments whose descriptors
//!                                               travel with this message, in order
//! u32 n, n x u64                                loans given back (one per lease)
//! u32 n, n x u64                                segments the sender dropped
//! ```
//! then a body by tag. A tensor is described by
//! `str name, u32 dtype, u32 rank, rank x u64 dim, u64 segment, u64 offset,
//! u64 len`: a numeric tensor's bytes, or a string tensor serialized as one
//! tensor blob (`crate::serialize`), at that place in shared memory.

use std::path::PathBuf;

use neuropods_ope::arena::SegmentId;

use crate::error::Error;
use crate::tensor::DType;

/// Caller to worker: load the package.
pub const LOAD: u8 = 1;
/// Caller to worker: run the model.
pub const INFER: u8 = 2;
/// Worker to caller: loaded, with warnings.
pub const LOADED: u8 = 11;
/// Worker to caller: the outputs.
pub const OUTPUTS: u8 = 12;
/// Worker to caller: the load or call failed.
pub const FAILED: u8 = 13;

/// Longest text an error carries (a traceback is cut at its start, keeping
/// the end, where the exception is).
const MAX_TEXT: usize = 64 << 10;

/// A segment announced in a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewSegment {
    /// Its id.
    pub id: SegmentId,
    /// Its length.
    pub len: u64,
    /// The sender keeps no hold on it (see `neuropods_ope::arena`).
    pub single_use: bool,
}

/// The common header.
#[derive(Debug, Default)]
pub struct Header {
    /// Segments whose descriptors came with the message.
    pub new_segments: Vec<NewSegment>,
    /// Loans given back.
    pub given_back: Vec<SegmentId>,
    /// Segments the sender dropped.
    pub forgotten: Vec<SegmentId>,
}

/// Where a tensor is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDesc {
    /// Its name.
    pub name: String,
    /// Its dtype.
    pub dtype: DType,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The segment holding it.
    pub segment: SegmentId,
    /// First byte in the segment.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// Load settings sent to the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadMessage {
    /// The package folder (a zip was extracted by the caller).
    pub package_root: PathBuf,
    /// GPU index inside the worker (which sees only the chosen device).
    pub visible_gpu: Option<u32>,
    /// Intra-op threads.
    pub intra_op_threads: Option<u32>,
    /// Inter-op threads.
    pub inter_op_threads: Option<u32>,
}

/// Builds a message.
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// A message with `tag` and `header`.
    pub fn new(tag: u8, header: &Header) -> Writer {
        let mut w = Writer {
            bytes: Vec::with_capacity(256),
        };
        w.bytes.push(tag);
        w.u32(header.new_segments.len() as u32);
        for s in &header.new_segments {
            w.u64(s.id);
            w.u64(s.len);
            w.bytes.push(u8::from(s.single_use));
        }
        for ids in [&header.given_back, &header.forgotten] {
            w.u32(ids.len() as u32);
            for &id in ids {
                w.u64(id);
            }
        }
        w
    }

    /// The finished bytes.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }

    /// Appends a u32.
    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a u64.
    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    fn opt(&mut self, v: Option<u32>) {
        self.u64(v.map_or(u64::MAX, u64::from));
    }

    /// Appends a length-prefixed string.
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.bytes.extend_from_slice(s.as_bytes());
    }

    /// Appends a string cut to [`MAX_TEXT`] bytes, keeping its end.
    fn text(&mut self, s: &str) {
        if s.len() <= MAX_TEXT {
            return self.str(s);
        }
        let mut start = s.len() - MAX_TEXT;
        while !s.is_char_boundary(start) {
            start += 1;
        }
        self.str(&format!("[...]{}", &s[start..]));
    }

    /// Appends a tensor list.
    pub fn tensors(&mut self, tensors: &[TensorDesc]) {
        self.u32(tensors.len() as u32);
        for t in tensors {
            self.str(&t.name);
            self.u32(t.dtype.code());
            self.u32(t.shape.len() as u32);
            for &d in &t.shape {
                self.u64(d as u64);
            }
            self.u64(t.segment);
            self.u64(t.offset);
            self.u64(t.len);
        }
    }

    /// Appends a load message's body.
    pub fn load(&mut self, load: &LoadMessage) {
        self.str(&load.package_root.to_string_lossy());
        self.opt(load.visible_gpu);
        self.opt(load.intra_op_threads);
        self.opt(load.inter_op_threads);
    }

    /// Appends a list of strings (warnings).
    pub fn strings(&mut self, strings: &[String]) {
        self.u32(strings.len() as u32);
        for s in strings {
            self.text(s);
        }
    }

    /// Appends an error, keeping its kind and every field, so that the
    /// caller rebuilds the very error the worker had.
    pub fn error(&mut self, err: &Error) {
        let (code, fields): (u32, Vec<String>) = match err {
            Error::PackageNotFound { path } => (0, vec![path_text(path)]),
            Error::InvalidConfig {
                file,
                field,
                reason,
            } => (1, vec![file.clone(), field.clone(), reason.clone()]),
            Error::InvalidPackage { path, reason } => (2, vec![path_text(path), reason.clone()]),
            Error::InvalidInput(m) => (3, vec![m.clone()]),
            Error::InvalidOption(m) => (4, vec![m.clone()]),
            Error::BackendNotFound {
                platform,
                library,
                searched,
            } => (5, vec![platform.clone(), library.clone(), searched.clone()]),
            Error::FrameworkNotFound {
                platform,
                framework,
                hint,
                detail,
            } => (
                6,
                vec![
                    platform.clone(),
                    framework.clone(),
                    hint.clone(),
                    detail.clone(),
                ],
            ),
            Error::FrameworkVersion { platform, detail } => {
                (7, vec![platform.clone(), detail.clone()])
            }
            Error::RequirementsNotMet(m) => (8, vec![m.clone()]),
            Error::Backend { platform, message } => (9, vec![platform.clone(), message.clone()]),
            Error::UnsafeAfterFork {
                platform,
                pid,
                pools_pid,
                safe_setting,
            } => (
                10,
                vec![
                    platform.clone(),
                    pid.to_string(),
                    pools_pid.to_string(),
                    safe_setting.clone(),
                ],
            ),
            Error::Serialization(m) => (11, vec![m.clone()]),
            Error::Io { path, source } => (12, vec![path_text(path), source.to_string()]),
            Error::Interrupted(m) => (13, vec![m.clone()]),
            Error::Exit(m) => (14, vec![m.clone()]),
            Error::OutOfMemory(m) => (15, vec![m.clone()]),
            Error::Worker { model, detail } => (16, vec![model.clone(), detail.clone()]),
            Error::Internal(m) => (17, vec![m.clone()]),
            // The worker checks no spec (the caller does); anything else
            // is a bug, passed on as one.
            other => (17, vec![other.to_string()]),
        };
        self.u32(code);
        self.u32(fields.len() as u32);
        for f in &fields {
            self.text(f);
        }
    }
}

fn path_text(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Reads a message; every failure says what was malformed.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// A malformed message.
pub type WireError = String;

impl<'a> Reader<'a> {
    /// Reads the tag and header.
    pub fn new(bytes: &'a [u8]) -> Result<(u8, Header, Reader<'a>), WireError> {
        let mut r = Reader { bytes, pos: 0 };
        let tag = r.take(1, "tag")?.first().copied().unwrap_or(0);
        let mut header = Header::default();
        let n = r.count(17, "segments")?;
        for _ in 0..n {
            header.new_segments.push(NewSegment {
                id: r.u64()?,
                len: r.u64()?,
                single_use: r.take(1, "single_use")?.first() == Some(&1),
            });
        }
        for ids in [&mut header.given_back, &mut header.forgotten] {
            let n = r.count(8, "segment ids")?;
            for _ in 0..n {
                ids.push(r.u64()?);
            }
        }
        Ok((tag, header, r))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "message ends inside {what} (at byte {} of {})",
                self.pos,
                self.bytes.len()
            ));
        };
        let slice = self.bytes.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(slice)
    }

    /// Reads a u32.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4, "a u32")?;
        Ok(u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    /// Reads a u64.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8, "a u64")?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn opt(&mut self) -> Result<Option<u32>, WireError> {
        let v = self.u64()?;
        Ok((v != u64::MAX).then(|| u32::try_from(v).unwrap_or(u32::MAX)))
    }

    /// A count of items of at least `min_len` bytes each, checked against
    /// what is left (so that no claimed count allocates more than that).
    fn count(&mut self, min_len: usize, what: &str) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_len) > self.bytes.len() - self.pos {
            return Err(format!("message claims {n} {what}, more than it holds"));
        }
        Ok(n)
    }

    /// Reads a string.
    pub fn str(&mut self) -> Result<String, WireError> {
        let n = self.u32()? as usize;
        let b = self.take(n, "a string")?;
        String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
    }

    /// Reads a tensor list.
    pub fn tensors(&mut self) -> Result<Vec<TensorDesc>, WireError> {
        let n = self.count(4 + 4 + 4 + 24, "tensors")?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str()?;
            let code = self.u32()?;
            let dtype = DType::from_code(code)
                .ok_or_else(|| format!("tensor '{name}' has unknown dtype code {code}"))?;
            let rank = self.count(8, "dims")?;
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                let d = self.u64()?;
                shape.push(usize::try_from(d).map_err(|_| format!("tensor '{name}': dim {d}"))?);
            }
            out.push(TensorDesc {
                name,
                dtype,
                shape,
                segment: self.u64()?,
                offset: self.u64()?,
                len: self.u64()?,
            });
        }
        Ok(out)
    }

    /// Reads a load message's body.
    pub fn load(&mut self) -> Result<LoadMessage, WireError> {
        Ok(LoadMessage {
            package_root: PathBuf::from(self.str()?),
            visible_gpu: self.opt()?,
            intra_op_threads: self.opt()?,
            inter_op_threads: self.opt()?,
        })
    }

    /// Reads a list of strings.
    pub fn strings(&mut self) -> Result<Vec<String>, WireError> {
        let n = self.count(4, "strings")?;
        (0..n).map(|_| self.str()).collect()
    }

    /// Reads an error written by [`Writer::error`].
    pub fn error(&mut self) -> Result<Error, WireError> {
        let code = self.u32()?;
        let n = self.count(4, "error fields")?;
        let mut fields = (0..n).map(|_| self.str()).collect::<Result<Vec<_>, _>>()?;
        let expected = match code {
            0 | 3 | 4 | 8 | 11 | 13 | 14 | 15 | 17 => 1,
            2 | 7 | 9 | 12 | 16 => 2,
            1 | 5 => 3,
            6 | 10 => 4,
            _ => return Err(format!("unknown error kind {code}")),
        };
        if fields.len() != expected {
            return Err(format!(
                "error kind {code} has {} fields, not {expected}",
                fields.len()
            ));
        }
        let mut next = || fields.remove(0);
        let pid = |s: String| s.parse::<u32>().unwrap_or(0);
        Ok(match code {
            0 => Error::PackageNotFound {
                path: next().into(),
            },
            1 => Error::InvalidConfig {
                file: next(),
                field: next(),
                reason: next(),
            },
            2 => Error::InvalidPackage {
                path: next().into(),
                reason: next(),
            },
            3 => Error::InvalidInput(next()),
            4 => Error::InvalidOption(next()),
            5 => Error::BackendNotFound {
                platform: next(),
                library: next(),
                searched: next(),
            },
            6 => Error::FrameworkNotFound {
                platform: next(),
                framework: next(),
                hint: next(),
                detail: next(),
            },
            7 => Error::FrameworkVersion {
                platform: next(),
                detail: next(),
            },
            8 => Error::RequirementsNotMet(next()),
            9 => Error::Backend {
                platform: next(),
                message: next(),
            },
            10 => Error::UnsafeAfterFork {
                platform: next(),
                pid: pid(next()),
                pools_pid: pid(next()),
                safe_setting: next(),
            },
            11 => Error::Serialization(next()),
            12 => Error::Io {
                path: next().into(),
                source: std::io::Error::other(next()),
            },
            13 => Error::Interrupted(next()),
            14 => Error::Exit(next()),
            15 => Error::OutOfMemory(next()),
            16 => Error::Worker {
                model: next(),
                detail: next(),
            },
            _ => Error::Internal(next()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(err: Error) -> Error {
        let mut w = Writer::new(FAILED, &Header::default());
        w.error(&err);
        let bytes = w.finish();
        let (tag, _, mut r) = Reader::new(&bytes).unwrap();
        assert_eq!(tag, FAILED);
        r.error().unwrap()
    }

    #[test]
    fn errors_cross_with_their_kind_and_message() {
        let errors = vec![
            Error::Backend {
                platform: "python".into(),
                message: "Traceback...\nValueError: no".into(),
            },
            Error::InvalidConfig {
                file: "config.json".into(),
                field: "input_spec[0]".into(),
                reason: "bad".into(),
            },
            Error::Exit("3".into()),
            Error::UnsafeAfterFork {
                platform: "tensorflow".into(),
                pid: 5,
                pools_pid: 4,
                safe_setting: "".into(),
            },
            Error::Io {
                path: "/x".into(),
                source: std::io::Error::from_raw_os_error(2),
            },
        ];
        for err in errors {
            let text = err.to_string();
            let back = roundtrip(err);
            assert_eq!(back.to_string(), text);
        }
    }

    #[test]
    fn headers_and_tensors_round_trip() {
        let header = Header {
            new_segments: vec![NewSegment {
                id: 3,
                len: 4096,
                single_use: true,
            }],
            given_back: vec![1, 1],
            forgotten: vec![9],
        };
        let tensor = TensorDesc {
            name: "x".into(),
            dtype: DType::Float32,
            shape: vec![2, 3],
            segment: 3,
            offset: 64,
            len: 24,
        };
        let mut w = Writer::new(INFER, &header);
        w.tensors(std::slice::from_ref(&tensor));
        let bytes = w.finish();
        let (tag, back, mut r) = Reader::new(&bytes).unwrap();
        assert_eq!(tag, INFER);
        assert_eq!(back.new_segments, header.new_segments);
        assert_eq!((back.given_back, back.forgotten), (vec![1, 1], vec![9]));
        assert_eq!(r.tensors().unwrap(), vec![tensor]);
    }

    #[test]
    fn truncated_or_inflated_messages_are_errors() {
        let mut w = Writer::new(OUTPUTS, &Header::default());
        w.u32(1_000_000);
        let bytes = w.finish();
        let (_, _, mut r) = Reader::new(&bytes).unwrap();
        assert!(r.tensors().unwrap_err().contains("more than it holds"));
        assert!(Reader::new(&[INFER, 1, 0]).is_err());
    }
}
