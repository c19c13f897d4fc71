//! One call of a session, through ONNX Runtime's C API.
//!
//! ort's `Session::run` gives every value its own memory description,
//! value type and reference count, and every output a map entry: for a
//! small model that costs about a third of the call (2.7 us against 2.0 us
//! through the C functions, a 4-element Add; benchmark case 17). Here the
//! names are C strings made once at load, the CPU memory description too,
//! and values are created, run and released with the C functions alone.
//! Loading, session options and the graph's signature stay with ort.

use std::ffi::{c_char, c_void, CString};
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex};

use neuropods_abi::plugin::points_into_inputs;
use neuropods_abi::{Buffer, DType, Error, Result, Tensor, TensorMap};
use ort::memory::MemoryInfo;
use ort::session::Session;
use ort::sys;
use ort::value::TensorElementType;
use ort::AsPointer;

use crate::dtypes;

fn api() -> &'static sys::OrtApi {
    ort::api()
}

/// A status from ONNX Runtime as a result (the status is released).
fn check(status: sys::OrtStatusPtr) -> Result<()> {
    // SAFETY: `status` was just returned by an ONNX Runtime function.
    unsafe { ort::Error::result_from_status(status) }.map_err(Error::framework)
}

/// An ONNX Runtime value owned here, released when dropped.
struct Value(NonNull<sys::OrtValue>);

// SAFETY: ONNX Runtime values are plain heap objects that may be read and
// released from any thread; nothing writes to one once a run returned it.
unsafe impl Send for Value {}
// SAFETY: as for Send: shared references only read a value.
unsafe impl Sync for Value {}

impl Value {
    /// Takes over a value a function just returned (an error if null).
    fn take(ptr: *mut sys::OrtValue) -> Result<Value> {
        NonNull::new(ptr)
            .map(Value)
            .ok_or_else(|| Error::framework("ONNX Runtime returned no value"))
    }

    fn ptr(&self) -> *mut sys::OrtValue {
        self.0.as_ptr()
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        // SAFETY: the value is owned here and released once.
        unsafe { (api().ReleaseValue)(self.ptr()) }
    }
}

/// An input value, with the aligned copy it views when the caller's memory
/// was not aligned for its dtype (declared after the value: released first).
struct Fed {
    value: Value,
    copy: Option<Buffer>,
}

/// A session and what its calls need, made once at load.
pub(crate) struct Runner {
    // ort's own `run` takes `&mut Session` (its authors hold concurrent
    // runs of one session unsafe with some execution providers, e.g.
    // CUDA); the same rule holds here. Calls on one model take turns; each
    // uses the session's intra-op pool, and `neuropods serve --instances
    // N` runs N sessions side by side.
    session: Mutex<Session>,
    /// The graph's inputs, by name.
    inputs: Vec<(String, CString)>,
    /// The spec's outputs, in its order: the outputs asked for.
    outputs: Vec<(String, CString)>,
    /// Where input values live: the CPU.
    cpu: MemoryInfo<'static>,
}

fn c_names<'a>(names: impl Iterator<Item = &'a str>) -> Result<Vec<(String, CString)>> {
    names
        .map(|name| {
            let c = CString::new(name)
                .map_err(|_| Error::InvalidInput(format!("tensor name {name:?} holds a NUL")))?;
            Ok((name.to_string(), c))
        })
        .collect()
}

impl Runner {
    /// Calls of `session` that feed the graph inputs named `inputs` and ask
    /// for `outputs` (the spec's, checked against the graph at load).
    pub fn new<'a>(
        session: Session,
        inputs: impl Iterator<Item = &'a str>,
        outputs: impl Iterator<Item = &'a str>,
    ) -> Result<Runner> {
        Ok(Runner {
            inputs: c_names(inputs)?,
            outputs: c_names(outputs)?,
            cpu: MemoryInfo::default(),
            session: Mutex::new(session),
        })
    }

    /// Runs the model on `inputs`; returns the spec's outputs.
    pub fn run(&self, inputs: &TensorMap) -> Result<TensorMap> {
        let mut names = Vec::with_capacity(inputs.len());
        let mut fed = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            let Some((_, c_name)) = self.inputs.iter().find(|(n, _)| n == name) else {
                return Err(Error::InvalidInput(format!(
                    "'{name}' is not an input of the ONNX graph"
                )));
            };
            names.push(c_name.as_ptr());
            fed.push(self.feed(name, tensor)?);
        }
        // ONNX Runtime needs every graph input (each has a spec, checked at
        // load): one left out is the caller's mistake, named here rather
        // than by ONNX Runtime's failed run.
        if fed.len() < self.inputs.len() {
            if let Some((missing, _)) = self.inputs.iter().find(|(n, _)| !inputs.contains_key(n)) {
                return Err(Error::InvalidInput(format!(
                    "missing input '{missing}': the ONNX graph requires every input"
                )));
            }
        }
        let values: Vec<*const sys::OrtValue> =
            fed.iter().map(|f| f.value.ptr().cast_const()).collect();
        let output_names: Vec<*const c_char> =
            self.outputs.iter().map(|(_, c)| c.as_ptr()).collect();
        let mut results: Vec<*mut sys::OrtValue> = vec![ptr::null_mut(); self.outputs.len()];
        let status = {
            let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
            // SAFETY: every pointer is valid for the call: the names live
            // in `self`, the values in `fed` (and the memory they view in
            // `inputs`); `results` has room for every output; the lock
            // gives the call the session to itself.
            unsafe {
                (api().Run)(
                    session.ptr().cast_mut(),
                    ptr::null(),
                    names.as_ptr(),
                    values.as_ptr(),
                    values.len(),
                    output_names.as_ptr(),
                    output_names.len(),
                    results.as_mut_ptr(),
                )
            }
        };
        // On success every output is a value now owned here; on failure
        // ONNX Runtime filled none.
        check(status)?;
        let results: Vec<Option<Value>> = results
            .into_iter()
            .map(|ptr| NonNull::new(ptr).map(Value))
            .collect();
        // An output may not keep memory it shares with an input: the
        // caller's (which it may write to after the call) or a copy made
        // here (freed with `fed`).
        let aliases_input = |ptr: *const u8| {
            points_into_inputs(inputs, ptr)
                || fed
                    .iter()
                    .filter_map(|f| f.copy.as_ref())
                    .any(|b| b.contains(ptr))
        };
        self.outputs
            .iter()
            .zip(results)
            .map(|((name, _), value)| {
                let value = value.ok_or_else(|| {
                    Error::framework(format!("the run returned no output '{name}'"))
                })?;
                Ok((name.clone(), fetched(name, value, &aliases_input)?))
            })
            .collect()
    }

    /// An ONNX Runtime value for input `name`. Numeric inputs are views of
    /// the caller's memory (which `inputs` keeps alive past the run);
    /// strings are copied, as ONNX Runtime keeps its own, and so is memory
    /// a Rust caller lent unaligned for its dtype.
    fn feed(&self, name: &str, tensor: &Tensor) -> Result<Fed> {
        let dims: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
        let element = sys::ONNXTensorElementDataType::from(dtypes::to_ort(tensor.dtype()));
        let Some((mut data, len)) = tensor.numeric_bytes() else {
            let strings = tensor.strings().unwrap_or_default();
            return Ok(Fed {
                value: string_value(name, strings, &dims)?,
                copy: None,
            });
        };
        let aligned = (data as usize).is_multiple_of(tensor.dtype().item_size().unwrap_or(1));
        let copy = if aligned { None } else { tensor.copy_bytes() };
        if let Some(copy) = &copy {
            data = copy.as_ptr();
        }
        let mut value = ptr::null_mut();
        // SAFETY: `data` holds `len` bytes of the shape's elements and
        // outlives the value (see `Fed`); the shape is copied by the call.
        // ONNX Runtime only reads an input, so frozen bytes stay frozen.
        check(unsafe {
            (api().CreateTensorWithDataAsOrtValue)(
                self.cpu.ptr(),
                data.cast_mut().cast::<c_void>(),
                len,
                dims.as_ptr(),
                dims.len(),
                element,
                &mut value,
            )
        })?;
        Ok(Fed {
            value: Value::take(value)?,
            copy,
        })
    }
}

/// A string tensor ONNX Runtime owns, filled with a copy of `strings`.
fn string_value(name: &str, strings: &[String], dims: &[i64]) -> Result<Value> {
    // ONNX Runtime takes strings as C strings.
    let strings = strings
        .iter()
        .enumerate()
        .map(|(i, s)| {
            CString::new(s.as_str()).map_err(|_| {
                Error::InvalidInput(format!(
                    "input '{name}': element {i} holds a NUL character, which ONNX Runtime's \
                     strings cannot"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let pointers: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    let mut allocator = ptr::null_mut();
    let mut value = ptr::null_mut();
    // SAFETY: the default allocator is ONNX Runtime's own (never released);
    // the shape and strings are copied by the calls.
    unsafe {
        check((api().GetAllocatorWithDefaultOptions)(&mut allocator))?;
        check((api().CreateTensorAsOrtValue)(
            allocator,
            dims.as_ptr(),
            dims.len(),
            sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING,
            &mut value,
        ))?;
        let value = Value::take(value)?;
        check((api().FillStringTensor)(
            value.ptr(),
            pointers.as_ptr(),
            pointers.len(),
        ))?;
        Ok(value)
    }
}

/// An output's element type and dims.
fn type_and_shape(value: &Value) -> Result<(TensorElementType, Vec<i64>)> {
    let mut info = ptr::null_mut();
    // SAFETY: `value` is a live tensor; `info` is released below.
    check(unsafe { (api().GetTensorTypeAndShape)(value.ptr(), &mut info) })?;
    let read = || -> Result<(TensorElementType, Vec<i64>)> {
        let mut element = sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
        let mut rank = 0;
        // SAFETY: `info` is live; `dims` has room for `rank` dims.
        unsafe {
            check((api().GetTensorElementType)(info, &mut element))?;
            check((api().GetDimensionsCount)(info, &mut rank))?;
            let mut dims = vec![0i64; rank];
            check((api().GetDimensions)(info, dims.as_mut_ptr(), rank))?;
            Ok((element.into(), dims))
        }
    };
    let result = read();
    // SAFETY: `info` came from GetTensorTypeAndShape; released once.
    unsafe { (api().ReleaseTensorTypeAndShapeInfo)(info) };
    result
}

/// The strings of a string tensor.
fn read_strings(name: &str, value: &Value, count: usize) -> Result<Vec<String>> {
    let mut total = 0;
    // SAFETY: `value` is a live string tensor of `count` elements; `bytes`
    // and `offsets` have the room the calls are told of.
    let (bytes, offsets) = unsafe {
        check((api().GetStringTensorDataLength)(value.ptr(), &mut total))?;
        let mut bytes = vec![0u8; total];
        let mut offsets = vec![0usize; count];
        check((api().GetStringTensorContent)(
            value.ptr(),
            bytes.as_mut_ptr().cast::<c_void>(),
            total,
            offsets.as_mut_ptr(),
            count,
        ))?;
        (bytes, offsets)
    };
    let ends = offsets.iter().skip(1).copied().chain([total]);
    offsets
        .iter()
        .zip(ends)
        .enumerate()
        .map(|(i, (&start, end))| {
            let text = bytes.get(start..end).ok_or_else(|| {
                Error::framework(format!("output '{name}': string {i} is out of bounds"))
            })?;
            String::from_utf8(text.to_vec()).map_err(|_| {
                Error::framework(format!("output '{name}': string {i} is not valid UTF-8"))
            })
        })
        .collect()
}

fn kind_name(kind: sys::ONNXType) -> &'static str {
    match kind {
        sys::ONNXType::ONNX_TYPE_TENSOR => "tensor",
        sys::ONNXType::ONNX_TYPE_SEQUENCE => "sequence",
        sys::ONNXType::ONNX_TYPE_MAP => "map",
        sys::ONNXType::ONNX_TYPE_OPAQUE => "opaque value",
        sys::ONNXType::ONNX_TYPE_SPARSETENSOR => "sparse tensor",
        sys::ONNXType::ONNX_TYPE_OPTIONAL => "optional",
        sys::ONNXType::ONNX_TYPE_UNKNOWN => "value of unknown type",
    }
}

/// Whether a tensor's memory is the CPU's.
fn on_cpu(value: &Value) -> Result<bool> {
    let mut info = ptr::null();
    let mut device = sys::OrtMemoryInfoDeviceType::OrtMemoryInfoDeviceType_CPU;
    // SAFETY: `value` is a live tensor; the memory info is borrowed from it.
    unsafe {
        check((api().GetTensorMemoryInfo)(value.ptr(), &mut info))?;
        (api().MemoryInfoGetDeviceType)(info, &mut device);
    }
    Ok(device == sys::OrtMemoryInfoDeviceType::OrtMemoryInfoDeviceType_CPU)
}

/// An output tensor; numeric ones are handed on without a copy, kept alive
/// by their ONNX Runtime value, unless they alias an input.
fn fetched(name: &str, value: Value, aliases_input: &dyn Fn(*const u8) -> bool) -> Result<Tensor> {
    let mut kind = sys::ONNXType::ONNX_TYPE_UNKNOWN;
    // SAFETY: `value` is live.
    check(unsafe { (api().GetValueType)(value.ptr(), &mut kind) })?;
    if kind != sys::ONNXType::ONNX_TYPE_TENSOR {
        return Err(Error::framework(format!(
            "output '{name}' is a {}, not a tensor",
            kind_name(kind)
        )));
    }
    let (element, dims) = type_and_shape(&value)?;
    let dtype = dtypes::from_ort(element).ok_or_else(|| {
        Error::framework(format!(
            "output '{name}' is of type {element:?}, which Neuropods does not support"
        ))
    })?;
    let shape: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
    let numel = neuropods_abi::tensor::checked_numel(&shape)
        .ok_or_else(|| Error::framework(format!("output '{name}' has too many elements")))?;
    if dtype == DType::String {
        let strings = read_strings(name, &value, numel)?;
        return Tensor::from_strings(shape, strings);
    }
    if !on_cpu(&value)? {
        return Err(Error::framework(format!(
            "output '{name}' is not in CPU memory"
        )));
    }
    let len = numel * dtype.item_size().unwrap_or(0);
    let mut data = ptr::null_mut();
    // SAFETY: `value` is a live tensor.
    check(unsafe { (api().GetTensorMutableData)(value.ptr(), &mut data) })?;
    let data = data.cast::<u8>().cast_const();
    let buffer = if len == 0 {
        Buffer::from_vec::<u8>(Vec::new())
    } else if aliases_input(data) {
        // SAFETY: the value holds `len` bytes at `data`, which may be a
        // caller's lent input: copied through raw pointers.
        unsafe { Buffer::copy_from_raw(data, len) }
    } else {
        // SAFETY: the value owns `len` bytes at `data` and lives in the
        // owner; nothing writes an output once the run returned it.
        unsafe { Buffer::from_raw_parts(data, len, Arc::new(value)) }
    };
    Tensor::from_buffer(dtype, shape, buffer)
}
