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

use crate::bytes::ByteReader;
use crate::error::{Error, ErrorKind};
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

    /// Appends an error: its kind's code ([`ErrorKind`]) and its fields,
    /// so that the caller rebuilds the very error the worker had.
    pub fn error(&mut self, err: &Error) {
        let text = |s: &str| s.to_string();
        let fields: Vec<String> = match err {
            Error::PackageNotFound { path } => vec![path_text(path)],
            Error::InvalidConfig {
                file,
                field,
                reason,
            } => vec![text(file), text(field), text(reason)],
            Error::InvalidPackage { path, reason } => vec![path_text(path), text(reason)],
            Error::InvalidInput(m)
            | Error::InvalidOption(m)
            | Error::RequirementsNotMet(m)
            | Error::Serialization(m)
            | Error::Interrupted(m)
            | Error::Exit(m)
            | Error::OutOfMemory(m)
            | Error::Internal(m) => vec![text(m)],
            Error::BackendNotFound {
                platform,
                library,
                searched,
            } => vec![text(platform), text(library), text(searched)],
            Error::FrameworkNotFound {
                platform,
                framework,
                hint,
                detail,
            } => vec![text(platform), text(framework), text(hint), text(detail)],
            Error::FrameworkVersion { platform, detail } => vec![text(platform), text(detail)],
            Error::Backend {
                platform,
                message,
                detail,
            } => vec![text(platform), text(message), text(detail)],
            Error::UnsafeAfterFork {
                platform,
                pid,
                pools_pid,
                safe_setting,
            } => vec![
                text(platform),
                pid.to_string(),
                pools_pid.to_string(),
                text(safe_setting),
            ],
            Error::Io { path, source } => vec![path_text(path), source.to_string()],
            Error::Worker { model, detail } => vec![text(model), text(detail)],
            // The worker checks no spec (the caller does): one here is a
            // bug, passed on as one.
            Error::Spec(spec) => {
                self.u32(ErrorKind::Internal.code());
                self.strings(&[spec.to_string()]);
                return;
            }
        };
        self.u32(err.kind().code());
        self.strings(&fields);
    }
}

fn path_text(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Reads a message; every failure says what was malformed.
pub struct Reader<'a> {
    bytes: ByteReader<'a>,
}

/// A malformed message.
pub type WireError = String;

impl<'a> Reader<'a> {
    /// Reads the tag and header.
    pub fn new(bytes: &'a [u8]) -> Result<(u8, Header, Reader<'a>), WireError> {
        let mut r = Reader {
            bytes: ByteReader::new(bytes),
        };
        let tag = r.bytes.u8("tag")?;
        let mut header = Header::default();
        let n = r.count(17, "segments")?;
        for _ in 0..n {
            header.new_segments.push(NewSegment {
                id: r.u64()?,
                len: r.u64()?,
                single_use: r.bytes.u8("single_use")? == 1,
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

    /// Reads a u32.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        self.bytes.u32("a u32")
    }

    /// Reads a u64.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        self.bytes.u64("a u64")
    }

    fn opt(&mut self) -> Result<Option<u32>, WireError> {
        let v = self.u64()?;
        Ok((v != u64::MAX).then(|| u32::try_from(v).unwrap_or(u32::MAX)))
    }

    fn count(&mut self, min_len: usize, what: &str) -> Result<usize, WireError> {
        self.bytes.count(min_len, what)
    }

    /// Reads a string.
    pub fn str(&mut self) -> Result<String, WireError> {
        let n = self.u32()? as usize;
        let b = self.bytes.take(n, "a string")?;
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

    /// Reads an error written by [`Writer::error`]. A kind this side does
    /// not know becomes [`Error::Internal`] naming it; fields missing or
    /// left over are a malformed message.
    pub fn error(&mut self) -> Result<Error, WireError> {
        let code = self.u32()?;
        let mut fields = self.strings()?.into_iter();
        let Ok(kind) = ErrorKind::try_from(code) else {
            let message = fields.next().unwrap_or_default();
            return Ok(Error::Internal(format!(
                "the worker sent error kind {code}: {message}"
            )));
        };
        let mut next = || {
            fields
                .next()
                .ok_or_else(|| format!("error kind {code} has too few fields"))
        };
        let pid = |s: String| s.parse::<u32>().unwrap_or(0);
        let err = match kind {
            ErrorKind::PackageNotFound => Error::PackageNotFound {
                path: next()?.into(),
            },
            ErrorKind::InvalidConfig => Error::InvalidConfig {
                file: next()?,
                field: next()?,
                reason: next()?,
            },
            ErrorKind::InvalidPackage => Error::InvalidPackage {
                path: next()?.into(),
                reason: next()?,
            },
            // Never sent (see `Writer::error`): read as what it says.
            ErrorKind::UnknownTensor
            | ErrorKind::DTypeMismatch
            | ErrorKind::ShapeMismatch
            | ErrorKind::InvalidInput => Error::InvalidInput(next()?),
            ErrorKind::InvalidOption => Error::InvalidOption(next()?),
            ErrorKind::BackendNotFound => Error::BackendNotFound {
                platform: next()?,
                library: next()?,
                searched: next()?,
            },
            ErrorKind::FrameworkNotFound => Error::FrameworkNotFound {
                platform: next()?,
                framework: next()?,
                hint: next()?,
                detail: next()?,
            },
            ErrorKind::FrameworkVersion => Error::FrameworkVersion {
                platform: next()?,
                detail: next()?,
            },
            ErrorKind::RequirementsNotMet => Error::RequirementsNotMet(next()?),
            ErrorKind::Backend => Error::Backend {
                platform: next()?,
                message: next()?,
                detail: next()?,
            },
            ErrorKind::UnsafeAfterFork => Error::UnsafeAfterFork {
                platform: next()?,
                pid: pid(next()?),
                pools_pid: pid(next()?),
                safe_setting: next()?,
            },
            ErrorKind::Serialization => Error::Serialization(next()?),
            ErrorKind::Io => Error::Io {
                path: next()?.into(),
                source: std::io::Error::other(next()?),
            },
            ErrorKind::Interrupted => Error::Interrupted(next()?),
            ErrorKind::Exit => Error::Exit(next()?),
            ErrorKind::OutOfMemory => Error::OutOfMemory(next()?),
            ErrorKind::Worker => Error::Worker {
                model: next()?,
                detail: next()?,
            },
            ErrorKind::Internal => Error::Internal(next()?),
        };
        if fields.next().is_some() {
            return Err(format!("error kind {code} has too many fields"));
        }
        Ok(err)
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
                message: "ValueError: no".into(),
                detail: "Traceback...\nValueError: no".into(),
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
            let (text, kind) = (err.to_string(), err.kind());
            let detail = err.detail().map(str::to_string);
            let back = roundtrip(err);
            assert_eq!(back.to_string(), text);
            assert_eq!(
                (back.kind(), back.detail().map(str::to_string)),
                (kind, detail)
            );
        }
    }

    fn read_error(code: u32, fields: &[&str]) -> Result<Error, WireError> {
        let mut w = Writer::new(FAILED, &Header::default());
        w.u32(code);
        w.strings(&fields.iter().map(|f| f.to_string()).collect::<Vec<_>>());
        let bytes = w.finish();
        let (_, _, mut r) = Reader::new(&bytes).unwrap();
        r.error()
    }

    #[test]
    fn an_error_with_fields_missing_or_left_over_or_an_unknown_kind_is_named() {
        let code = ErrorKind::Backend.code();
        let few = read_error(code, &["python", "no"]).unwrap_err();
        assert!(few.contains("too few fields"), "{few}");
        let many = read_error(ErrorKind::Exit.code(), &["3", "4"]).unwrap_err();
        assert!(many.contains("too many fields"), "{many}");
        match read_error(999, &["from the future"]).unwrap() {
            Error::Internal(m) => assert!(m.contains("kind 999: from the future"), "{m}"),
            other => panic!("{other:?}"),
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
