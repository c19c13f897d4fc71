//! The `Neuropod` class: load options from keyword arguments, dict in and
//! dict out, the GIL released while the backend runs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use neuropods_core::{DType, Dim, ForeignBuffer, LoadOptions, Tensor, TensorMap, TensorSpec};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::convert::{tensor_from_numpy, tensor_name, tensor_to_numpy, type_error, Access};
use crate::errors::{guard, CoreError, ErrorClass};

/// The load options as `Neuropod(...)` and `serve(...)` take them: keyword
/// arguments with defaults (an unknown one is Python's own `TypeError`).
/// Values are checked here, naming the option, into the core's
/// [`LoadOptions`].
pub(crate) struct LoadArgs<'a, 'py> {
    pub visible_gpu: Option<&'a Bound<'py, PyAny>>,
    pub intra_op_threads: Option<&'a Bound<'py, PyAny>>,
    pub inter_op_threads: Option<&'a Bound<'py, PyAny>>,
    pub verify_manifest: bool,
    pub use_ope: bool,
    pub ope_python: Option<&'a Bound<'py, PyAny>>,
}

impl LoadArgs<'_, '_> {
    pub fn into_options(self, py: Python<'_>) -> PyResult<LoadOptions> {
        let mut load = LoadOptions {
            verify_manifest: self.verify_manifest,
            use_ope: self.use_ope,
            ..LoadOptions::default()
        };
        load.backend.visible_gpu = count("visible_gpu", self.visible_gpu)?;
        load.backend.intra_op_threads = count("intra_op_threads", self.intra_op_threads)?;
        load.backend.inter_op_threads = count("inter_op_threads", self.inter_op_threads)?;
        load.ope_python = match self.ope_python {
            Some(path) if !path.is_none() => Some(path.extract::<PathBuf>().map_err(|_| {
                ErrorClass::InvalidOption.new_err(format!(
                    "ope_python must be the path of a Python executable, got {}",
                    path.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?),
            _ => None,
        };
        if load.use_ope && load.ope_python.is_none() {
            // A python model in a worker runs on the caller's own interpreter
            // (and environment), as it would in-process.
            let executable: Option<PathBuf> =
                py.import("sys")?.getattr("executable")?.extract().ok();
            load.ope_python = executable.filter(|p| !p.as_os_str().is_empty());
        } else if !load.use_ope && load.ope_python.is_some() {
            return Err(ErrorClass::InvalidOption.new_err(
                "ope_python applies only to models run out of process: pass use_ope=True too",
            ));
        }
        Ok(load)
    }
}

/// A count option: None, or an int that fits a u32 (not a bool).
/// A flag option, as pyo3 reads a `bool` (numpy's too), with a `TypeError`
/// that names it: pyo3 0.30 names the argument in an exception note, which
/// Python 3.10 does not have.
fn flag(name: &str, value: &Bound<'_, PyAny>) -> PyResult<bool> {
    value.extract::<bool>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "argument '{name}' must be True or False, got {}",
            value.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })
}

/// `verify_manifest=` of `Neuropod(...)` and `serve(...)`.
pub(crate) fn verify_manifest_flag(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    flag("verify_manifest", value)
}

/// `use_ope=` of `Neuropod(...)` and `serve(...)`.
pub(crate) fn use_ope_flag(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    flag("use_ope", value)
}

fn count(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u32>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    match value.extract::<u32>() {
        Ok(n) if !value.is_instance_of::<pyo3::types::PyBool>() => Ok(Some(n)),
        _ => Err(ErrorClass::InvalidOption.new_err(format!(
            "{name} must be None or a non-negative int, got {}",
            value.repr()?
        ))),
    }
}

pub(crate) fn spec_to_py<'py>(
    py: Python<'py>,
    specs: &[TensorSpec],
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for spec in specs {
        let shape = PyList::empty(py);
        for dim in &spec.shape {
            match dim {
                Dim::Fixed(n) => shape.append(n)?,
                Dim::Any => shape.append(py.None())?,
                Dim::Symbol(s) => shape.append(s)?,
            }
        }
        let entry = PyDict::new(py);
        entry.set_item("name", &spec.name)?;
        entry.set_item("dtype", spec.dtype.name())?;
        entry.set_item("shape", shape)?;
        list.append(entry)?;
    }
    Ok(list)
}

/// A loaded model.
///
/// `Neuropod(path, visible_gpu=None, *, intra_op_threads=None,
/// inter_op_threads=None, verify_manifest=False, use_ope=False,
/// ope_python=None)` loads a package (a folder or a zip); `use_ope` runs the
/// model in a worker process, `ope_python` names the interpreter a python
/// model's worker runs. Usable as a context manager; `infer` may be called
/// from many threads at once.
#[pyclass(frozen, module = "neuropods_native")]
pub struct Neuropod {
    // None once closed. Calls clone the Arc, so closing while another
    // thread is inside `infer` is safe: the model goes when that call ends.
    model: Mutex<Option<Arc<neuropods_core::Neuropod>>>,
}

impl Neuropod {
    fn model(&self) -> PyResult<Arc<neuropods_core::Neuropod>> {
        let guard = self.model.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .clone()
            .ok_or_else(|| ErrorClass::ModelClosed.new_err("this neuropod has been closed"))
    }
}

#[pymethods]
impl Neuropod {
    #[new]
    #[pyo3(signature = (
        neuropod_path, visible_gpu = None, *, intra_op_threads = None, inter_op_threads = None,
        verify_manifest = false, use_ope = false, ope_python = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        neuropod_path: PathBuf,
        visible_gpu: Option<&Bound<'_, PyAny>>,
        intra_op_threads: Option<&Bound<'_, PyAny>>,
        inter_op_threads: Option<&Bound<'_, PyAny>>,
        #[pyo3(from_py_with = verify_manifest_flag)] verify_manifest: bool,
        #[pyo3(from_py_with = use_ope_flag)] use_ope: bool,
        ope_python: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        guard(|| {
            let options = LoadArgs {
                visible_gpu,
                intra_op_threads,
                inter_op_threads,
                verify_manifest,
                use_ope,
                ope_python,
            }
            .into_options(py)?;
            let model = py
                .detach(|| neuropods_core::Neuropod::load(&neuropod_path, &options))
                .map_err(CoreError)?;
            if !model.load_warnings().is_empty() {
                let logger = py
                    .import("logging")?
                    .call_method1("getLogger", ("neuropods",))?;
                for warning in model.load_warnings() {
                    logger.call_method1("warning", (warning,))?;
                }
            }
            Ok(Neuropod {
                model: Mutex::new(Some(Arc::new(model))),
            })
        })
    }

    /// Runs the model on a dict of numpy arrays; returns a dict of arrays.
    fn infer<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            let model = self.model()?;
            let Ok(inputs) = inputs.cast::<PyDict>() else {
                return Err(type_error(format!(
                    "infer takes a dict of input name to numpy array, got {}",
                    inputs.get_type().name()?
                )));
            };
            let mut tensors = TensorMap::new();
            for (key, value) in inputs.iter() {
                let name = tensor_name(&key)?;
                let tensor = tensor_from_numpy(py, &name, &value)?;
                tensors.insert(name, tensor);
            }
            let outputs = py.detach(|| model.infer(&tensors));
            // Inputs borrow numpy memory; drop them while attached.
            drop(tensors);
            let outputs = outputs.map_err(CoreError)?;
            let dict = PyDict::new(py);
            for (name, tensor) in outputs {
                let array = tensor_to_numpy(py, &name, tensor, Access::ReadOnly)?;
                dict.set_item(name, array)?;
            }
            Ok(dict)
        })
    }

    /// A zero-filled, writable array for input `name` (dtype from the spec
    /// unless given). For a model run out of process it lives in shared
    /// memory, and `infer` hands it to the worker without copying it (bool
    /// arrays excepted: bools are copied where they are checked).
    #[pyo3(signature = (name, shape, dtype = None))]
    fn allocate<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        shape: Vec<usize>,
        dtype: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(|| {
            let model = self.model()?;
            let dtype = match dtype {
                None => model
                    .inputs()
                    .iter()
                    .find(|s| s.name == name)
                    .map_or(DType::Float32, |s| s.dtype),
                Some(d) => {
                    let numpy_name: String = py
                        .import("numpy")?
                        .call_method1("dtype", (d,))
                        .and_then(|d| d.getattr("name"))
                        .and_then(|n| n.extract())
                        .map_err(|e| type_error(format!("dtype {d}: {e}")))?;
                    DType::from_name(&numpy_name).ok_or_else(|| {
                        type_error(format!("dtype {numpy_name} is not one Neuropods takes"))
                    })?
                }
            };
            let allocation = model.allocate(name, dtype, &shape).map_err(CoreError)?;
            // SAFETY: the allocation's owner keeps its bytes alive; they
            // are lent memory, which the caller writes through the array.
            let lent = unsafe {
                ForeignBuffer::from_raw_parts(
                    allocation.as_mut_ptr(),
                    allocation.len(),
                    allocation.owner().clone(),
                )
            };
            let tensor = Tensor::from_foreign(dtype, shape, lent).map_err(CoreError)?;
            tensor_to_numpy(py, name, tensor, Access::Writable)
        })
    }

    /// The process id of the worker running this model (None in-process,
    /// and after a worker was lost until the next call starts another).
    #[getter]
    fn worker_pid(&self) -> PyResult<Option<u32>> {
        Ok(self.model()?.worker_pid())
    }

    /// Frees the model now (also done by `with` and by garbage collection).
    fn close(&self) {
        let model = self.model.lock().unwrap_or_else(|p| p.into_inner()).take();
        // Dropped after the lock: freeing a model may take a while.
        drop(model);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }

    /// Model name from config.json.
    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(self.model()?.name().to_string())
    }

    /// Platform: "torchscript", "tensorflow", "python" or "onnx".
    #[getter]
    fn platform(&self) -> PyResult<&'static str> {
        Ok(self.model()?.platform().name())
    }

    /// Input specs: a list of {"name", "dtype", "shape"}.
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        spec_to_py(py, self.model()?.inputs())
    }

    /// Output specs: a list of {"name", "dtype", "shape"}.
    #[getter]
    fn outputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        spec_to_py(py, self.model()?.outputs())
    }

    fn __repr__(&self) -> String {
        match self.model() {
            Ok(m) => format!("<Neuropod '{}' ({})>", m.name(), m.platform()),
            Err(_) => "<Neuropod (closed)>".to_string(),
        }
    }
}
