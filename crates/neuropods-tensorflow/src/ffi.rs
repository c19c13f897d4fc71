//! Owning handles over the TF C API (`tensorflow-sys`, the `tensorflow`
//! crate's own binding). The `tensorflow` crate's `Session` hides its
//! `TF_Session` and feeds only tensors it allocated and filled itself; running
//! a graph on the caller's memory needs the C API underneath it.
//!
//! Each handle frees its object on drop; every fallible call returns the TF
//! status message as the error.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::ptr::{self, NonNull};

use tensorflow_sys as tf;

extern "C" {
    // Declared with an integer result: the bindings' enum cannot represent
    // the type codes it does not list (newer dtypes), which TF may return
    // for an arbitrary graph.
    #[link_name = "TF_TensorType"]
    fn tensor_type(tensor: *const tf::TF_Tensor) -> c_int;
}

/// A TF status; `check` turns a failure into its message.
struct Status(NonNull<tf::TF_Status>);

impl Status {
    fn new() -> Status {
        // SAFETY: TF_NewStatus has no preconditions and never returns null.
        Status(NonNull::new(unsafe { tf::TF_NewStatus() }).expect("TF_NewStatus returned null"))
    }

    fn ptr(&self) -> *mut tf::TF_Status {
        self.0.as_ptr()
    }

    fn check(&self) -> Result<(), String> {
        // SAFETY: a live status; TF_Message returns a NUL-terminated string
        // owned by it.
        unsafe {
            if tf::TF_GetCode(self.ptr()) == tf::TF_Code::TF_OK {
                Ok(())
            } else {
                Err(CStr::from_ptr(tf::TF_Message(self.ptr()))
                    .to_string_lossy()
                    .into_owned())
            }
        }
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        // SAFETY: owned, deleted once.
        unsafe { tf::TF_DeleteStatus(self.ptr()) }
    }
}

fn c_string(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("'{}' contains a NUL byte", s.escape_debug()))
}

/// Opens a TensorFlow op library (`TF_LoadLibrary`, as the original
/// Neuropod first did): its ops and kernels are registered for good.
pub fn load_op_library(path: &Path) -> Result<(), String> {
    let name = c_string(&path.to_string_lossy())?;
    let status = Status::new();
    // SAFETY: a NUL-terminated path and a live status.
    let handle = unsafe { tf::TF_LoadLibrary(name.as_ptr(), status.ptr()) };
    status.check()?;
    if !handle.is_null() {
        // Frees the handle's record only: the library stays loaded.
        // SAFETY: a handle TF_LoadLibrary returned, freed once.
        unsafe { tf::TF_DeleteLibraryHandle(handle) };
    }
    Ok(())
}

/// An operation of a [`Graph`]; valid while the graph lives.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint(tf::TF_Output);

impl Endpoint {
    /// Whether it is a `Placeholder`'s output: a value that must be fed (a
    /// `PlaceholderWithDefault` need not be).
    pub fn is_placeholder(&self) -> bool {
        // SAFETY: the operation lives as long as its graph, which outlives
        // every endpoint of it; TF returns a NUL-terminated name it owns.
        let op_type = unsafe { CStr::from_ptr(tf::TF_OperationOpType(self.0.oper)) };
        op_type.to_bytes() == b"Placeholder"
    }
}

/// A computation graph.
pub struct Graph(NonNull<tf::TF_Graph>);

impl Graph {
    pub fn new() -> Graph {
        // SAFETY: no preconditions; never returns null.
        Graph(NonNull::new(unsafe { tf::TF_NewGraph() }).expect("TF_NewGraph returned null"))
    }

    /// Adds the nodes of a serialized GraphDef.
    pub fn import(&self, graph_def: &[u8]) -> Result<(), String> {
        let status = Status::new();
        // SAFETY: the buffer borrows `graph_def` only for this call; all
        // handles are live and freed here.
        unsafe {
            let buffer = tf::TF_NewBufferFromString(graph_def.as_ptr().cast(), graph_def.len());
            let options = tf::TF_NewImportGraphDefOptions();
            tf::TF_GraphImportGraphDef(self.0.as_ptr(), buffer, options, status.ptr());
            tf::TF_DeleteImportGraphDefOptions(options);
            tf::TF_DeleteBuffer(buffer);
        }
        status.check()
    }

    /// Output `index` of operation `name`, if the graph has that operation
    /// and output.
    pub fn endpoint(&self, name: &str, index: i32) -> Option<Endpoint> {
        let name = c_string(name).ok()?;
        // SAFETY: live graph; the name outlives the call.
        let op = unsafe { tf::TF_GraphOperationByName(self.0.as_ptr(), name.as_ptr()) };
        if op.is_null() || index < 0 {
            return None;
        }
        // SAFETY: `op` is an operation of this graph.
        let outputs = unsafe { tf::TF_OperationNumOutputs(op) };
        (index < outputs).then_some(Endpoint(tf::TF_Output { oper: op, index }))
    }

    /// The operation `name`, as a run target (e.g. an init op).
    pub fn operation(&self, name: &str) -> Option<*mut tf::TF_Operation> {
        let name = c_string(name).ok()?;
        // SAFETY: live graph; the name outlives the call.
        let op = unsafe { tf::TF_GraphOperationByName(self.0.as_ptr(), name.as_ptr()) };
        (!op.is_null()).then_some(op)
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: owned, deleted once, after every session using it (the
        // model struct declares its session first).
        unsafe { tf::TF_DeleteGraph(self.0.as_ptr()) }
    }
}

/// Session options holding a serialized `ConfigProto`.
struct SessionOptions(NonNull<tf::TF_SessionOptions>);

impl SessionOptions {
    fn new(config_proto: &[u8]) -> Result<SessionOptions, String> {
        // SAFETY: no preconditions; never returns null.
        let options = SessionOptions(
            NonNull::new(unsafe { tf::TF_NewSessionOptions() })
                .expect("TF_NewSessionOptions returned null"),
        );
        let status = Status::new();
        // SAFETY: live options; TF copies the proto.
        unsafe {
            tf::TF_SetConfig(
                options.0.as_ptr(),
                config_proto.as_ptr().cast(),
                config_proto.len(),
                status.ptr(),
            )
        };
        status.check().map(|()| options)
    }
}

impl Drop for SessionOptions {
    fn drop(&mut self) {
        // SAFETY: owned, deleted once.
        unsafe { tf::TF_DeleteSessionOptions(self.0.as_ptr()) }
    }
}

/// A session running one graph.
pub struct Session(NonNull<tf::TF_Session>);

// SAFETY: TF sessions are thread-safe: `TF_SessionRun` may be called from
// many threads at once; closing happens only on drop.
unsafe impl Send for Session {}
// SAFETY: as for Send: runs from many threads at once are TF's contract.
unsafe impl Sync for Session {}

impl Session {
    /// A session over `graph`, configured by a serialized `ConfigProto`.
    pub fn new(graph: &Graph, config_proto: &[u8]) -> Result<Session, String> {
        let options = SessionOptions::new(config_proto)?;
        let status = Status::new();
        // SAFETY: live graph and options.
        let session =
            unsafe { tf::TF_NewSession(graph.0.as_ptr(), options.0.as_ptr(), status.ptr()) };
        status.check()?;
        NonNull::new(session)
            .map(Session)
            .ok_or_else(|| "TF_NewSession returned no session".into())
    }

    /// Loads the SavedModel in `dir` with `tag` into `graph`; returns the
    /// session and the serialized `MetaGraphDef`.
    pub fn load_saved_model(
        dir: &Path,
        tag: &str,
        graph: &Graph,
        config_proto: &[u8],
    ) -> Result<(Session, Vec<u8>), String> {
        let options = SessionOptions::new(config_proto)?;
        let dir = c_string(&dir.to_string_lossy())?;
        let tag = c_string(tag)?;
        let tags = [tag.as_ptr()];
        let status = Status::new();
        // SAFETY: all pointers are live for the call; the meta graph buffer
        // is read, copied and freed here.
        unsafe {
            let meta = tf::TF_NewBuffer();
            let session = tf::TF_LoadSessionFromSavedModel(
                options.0.as_ptr(),
                ptr::null(),
                dir.as_ptr(),
                tags.as_ptr(),
                1,
                graph.0.as_ptr(),
                meta,
                status.ptr(),
            );
            let bytes = if (*meta).data.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts((*meta).data.cast::<u8>(), (*meta).length).to_vec()
            };
            tf::TF_DeleteBuffer(meta);
            status.check()?;
            let session =
                NonNull::new(session).ok_or("TF_LoadSessionFromSavedModel returned no session")?;
            Ok((Session(session), bytes))
        }
    }

    /// The types of the session's devices ("CPU", "GPU", ...).
    pub fn device_types(&self) -> Result<Vec<String>, String> {
        let status = Status::new();
        // SAFETY: live session; the list is read and freed here.
        unsafe {
            let list = tf::TF_SessionListDevices(self.0.as_ptr(), status.ptr());
            status.check()?;
            let mut types = Vec::new();
            for i in 0..tf::TF_DeviceListCount(list) {
                let kind = tf::TF_DeviceListType(list, i, status.ptr());
                if status.check().is_ok() && !kind.is_null() {
                    types.push(CStr::from_ptr(kind).to_string_lossy().into_owned());
                }
            }
            tf::TF_DeleteDeviceList(list);
            Ok(types)
        }
    }

    /// Runs the graph: feeds `inputs`, returns one tensor per `outputs`,
    /// runs `targets`.
    pub fn run(
        &self,
        inputs: &[(Endpoint, Tensor)],
        outputs: &[Endpoint],
        targets: &[*mut tf::TF_Operation],
    ) -> Result<Vec<Tensor>, String> {
        let ports: Vec<tf::TF_Output> = inputs.iter().map(|(e, _)| e.0).collect();
        let values: Vec<*mut tf::TF_Tensor> = inputs.iter().map(|(_, t)| t.0.as_ptr()).collect();
        let fetches: Vec<tf::TF_Output> = outputs.iter().map(|e| e.0).collect();
        let targets: Vec<*const tf::TF_Operation> =
            targets.iter().map(|&t| t.cast_const()).collect();
        let mut results: Vec<*mut tf::TF_Tensor> = vec![ptr::null_mut(); outputs.len()];
        let status = Status::new();
        // SAFETY: every array has the length passed with it; the input
        // tensors stay alive (and keep their memory) until after the call.
        unsafe {
            tf::TF_SessionRun(
                self.0.as_ptr(),
                ptr::null(),
                ports.as_ptr(),
                values.as_ptr(),
                ports.len() as c_int,
                fetches.as_ptr(),
                results.as_mut_ptr(),
                fetches.len() as c_int,
                targets.as_ptr(),
                targets.len() as c_int,
                ptr::null_mut(),
                status.ptr(),
            );
        }
        // Take ownership first, so that results are freed on every path.
        let results: Vec<Option<Tensor>> = results
            .into_iter()
            .map(|t| NonNull::new(t).map(Tensor))
            .collect();
        status.check()?;
        results
            .into_iter()
            .map(|t| t.ok_or_else(|| "TF_SessionRun returned no tensor".to_string()))
            .collect()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let status = Status::new();
        // SAFETY: owned, closed and deleted once.
        unsafe {
            tf::TF_CloseSession(self.0.as_ptr(), status.ptr());
            tf::TF_DeleteSession(self.0.as_ptr(), status.ptr());
        }
    }
}

/// An owned `TF_Tensor`.
pub struct Tensor(NonNull<tf::TF_Tensor>);

// SAFETY: a TF tensor is an immutable, reference-counted buffer once built;
// TF frees it from any thread.
unsafe impl Send for Tensor {}
// SAFETY: as for Send: shared references only read it.
unsafe impl Sync for Tensor {}

/// Frees what a tensor built by [`Tensor::over`] borrowed.
type Release = unsafe extern "C" fn(data: *mut c_void, len: usize, arg: *mut c_void);

impl Tensor {
    /// A tensor over `len` bytes at `data`; TF calls `release(data, len,
    /// arg)` once it no longer uses them (at once if TF had to copy them to
    /// align them).
    ///
    /// # Safety
    /// The bytes must stay valid until `release` is called (TF only reads
    /// them), and `release` must free whatever `arg` holds.
    pub unsafe fn over(
        type_code: tf::TF_DataType,
        dims: &[i64],
        data: *mut c_void,
        len: usize,
        release: Release,
        arg: *mut c_void,
    ) -> Result<Tensor, String> {
        // SAFETY: the caller's contract; the dims are copied by the call.
        let tensor = unsafe {
            tf::TF_NewTensor(
                type_code,
                dims.as_ptr(),
                dims.len() as c_int,
                data,
                len,
                Some(release),
                arg,
            )
        };
        NonNull::new(tensor)
            .map(Tensor)
            .ok_or_else(|| "TF_NewTensor refused the tensor (size does not match shape?)".into())
    }

    /// TF's type code (see [`crate::dtypes`]).
    pub fn type_code(&self) -> c_int {
        // SAFETY: live tensor.
        unsafe { tensor_type(self.0.as_ptr()) }
    }

    pub fn dims(&self) -> Vec<usize> {
        // SAFETY: live tensor; indices below its rank.
        unsafe {
            (0..tf::TF_NumDims(self.0.as_ptr()))
                .map(|i| tf::TF_Dim(self.0.as_ptr(), i) as usize)
                .collect()
        }
    }

    /// The tensor's bytes (for strings: its `TF_TString` array).
    pub fn bytes(&self) -> (*const u8, usize) {
        // SAFETY: live tensor.
        unsafe {
            (
                tf::TF_TensorData(self.0.as_ptr()) as *const u8,
                tf::TF_TensorByteSize(self.0.as_ptr()),
            )
        }
    }

    /// The elements of a string tensor, as bytes.
    pub fn string_elements(&self) -> Vec<&[u8]> {
        let (data, len) = self.bytes();
        let count = len / std::mem::size_of::<tf::TF_TString>();
        (0..count)
            .map(|i| {
                // SAFETY: a TF_STRING tensor's data is `count` initialized
                // TF_TStrings; each points at `size` bytes it owns.
                unsafe {
                    let s = data.cast::<tf::TF_TString>().add(i);
                    let ptr = tf::TF_StringGetDataPointer(s);
                    let size = tf::TF_StringGetSize(s);
                    if size == 0 {
                        &[][..]
                    } else {
                        std::slice::from_raw_parts(ptr.cast::<u8>(), size)
                    }
                }
            })
            .collect()
    }

    /// A string tensor holding copies of `strings`.
    pub fn strings(dims: &[i64], strings: &[String]) -> Result<Tensor, String> {
        let mut elements: Box<[tf::TF_TString]> = strings
            .iter()
            .map(|s| {
                // SAFETY: TF_StringInit prepares the zeroed struct; the copy
                // is owned by it and freed by `release_strings`.
                unsafe {
                    let mut t = std::mem::zeroed::<tf::TF_TString>();
                    tf::TF_StringInit(&mut t);
                    tf::TF_StringCopy(&mut t, s.as_ptr() as *const c_char, s.len());
                    t
                }
            })
            .collect();
        let len = std::mem::size_of_val(&*elements);
        let data = elements.as_mut_ptr().cast::<c_void>();
        let owner = Box::into_raw(Box::new(elements)).cast::<c_void>();
        // SAFETY: the boxed elements live until TF calls `release_strings`,
        // which frees them.
        unsafe { Tensor::over(tf::TF_STRING, dims, data, len, release_strings, owner) }
    }
}

unsafe extern "C" fn release_strings(_data: *mut c_void, _len: usize, arg: *mut c_void) {
    // SAFETY: `arg` is the box made in `Tensor::strings`, released once.
    let mut elements = unsafe { Box::from_raw(arg.cast::<Box<[tf::TF_TString]>>()) };
    for s in elements.iter_mut() {
        // SAFETY: initialized by TF_StringInit.
        unsafe { tf::TF_StringDealloc(s) };
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: owned, deleted once.
        unsafe { tf::TF_DeleteTensor(self.0.as_ptr()) }
    }
}
