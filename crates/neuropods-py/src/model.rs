//! The `Neuropod` class: load options from keyword arguments, dict in and
//! dict out, the GIL released while the backend runs.

use std::sync::{Arc, Mutex};

use neuropods_core::{Buffer, DType, Dim, LoadOptions, Tensor, TensorMap, TensorSpec};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::convert::{tensor_from_numpy, tensor_name, tensor_to_numpy, type_error, Access};
use crate::errors::{guard, raise, to_py};

/// Load options accepted as keyword arguments, besides `visible_gpu`.
const OPTIONS: [&str; 5] = [
    "intra_op_threads",
    "inter_op_threads",
    "verify_manifest",
    "use_ope",
    "ope_python",
];

pub(crate) fn parse_options(
    py: Python<'_>,
    visible_gpu: Option<&Bound<'_, PyAny>>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<LoadOptions> {
    let mut load = LoadOptions::default();
    let count = |name: &str, v: &Bound<'_, PyAny>| -> PyResult<Option<u32>> {
        if v.is_none() {
            return Ok(None);
        }
        match v.extract::<i64>() {
            Ok(n)
                if n >= 0 && n <= u32::MAX as i64 && !v.is_instance_of::<pyo3::types::PyBool>() =>
            {
                Ok(Some(n as u32))
            }
            _ => Err(raise(
                py,
                "InvalidOptionError",
                format!(
                    "{name} must be None or a non-negative int, got {}",
                    v.repr()?
                ),
            )),
        }
    };
    if let Some(v) = visible_gpu {
        load.backend.visible_gpu = count("visible_gpu", v)?;
    }
    if let Some(options) = options {
        for (key, value) in options.iter() {
            let key: String = key.extract()?;
            match key.as_str() {
                "intra_op_threads" => load.backend.intra_op_threads = count(&key, &value)?,
                "inter_op_threads" => load.backend.inter_op_threads = count(&key, &value)?,
                "verify_manifest" => load.verify_manifest = value.is_truthy()?,
                "use_ope" => load.use_ope = value.is_truthy()?,
                "ope_python" if value.is_none() => load.ope_python = None,
                "ope_python" => {
                    load.ope_python = Some(value.extract::<std::path::PathBuf>().map_err(|_| {
                        raise(
                            py,
                            "InvalidOptionError",
                            format!(
                                "ope_python must be the path of a Python executable, got {}",
                                value.repr().map(|r| r.to_string()).unwrap_or_default()
                            ),
                        )
                    })?)
                }
                _ => {
                    return Err(raise(
                        py,
                        "InvalidOptionError",
                        format!(
                            "unknown load option '{key}' (known: visible_gpu, {})",
                            OPTIONS.join(", ")
                        ),
                    ))
                }
            }
        }
    }
    if load.use_ope && load.ope_python.is_none() {
        // A python model in a worker runs on the caller's own interpreter
        // (and environment), as it would in-process.
        let executable: Option<std::path::PathBuf> =
            py.import("sys")?.getattr("executable")?.extract().ok();
        load.ope_python = executable.filter(|p| !p.as_os_str().is_empty());
    } else if !load.use_ope && load.ope_python.is_some() {
        return Err(raise(
            py,
            "InvalidOptionError",
            "ope_python applies only to models run out of process: pass use_ope=True too".into(),
        ));
    }
    Ok(load)
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
/// `Neuropod(path, visible_gpu=None, **options)` loads a package (a folder or
/// a zip). Options: `intra_op_threads`, `inter_op_threads`,
/// `verify_manifest`, `use_ope` (run the model in a worker process) and
/// `ope_python` (the interpreter a python model's worker runs). Usable as a
/// context manager; `infer` may be called from many threads at once.
#[pyclass(frozen, module = "neuropods_native")]
pub struct Neuropod {
    // None once closed. Calls clone the Arc, so closing while another
    // thread is inside `infer` is safe: the model goes when that call ends.
    model: Mutex<Option<Arc<neuropods_core::Neuropod>>>,
}

impl Neuropod {
    fn model(&self, py: Python<'_>) -> PyResult<Arc<neuropods_core::Neuropod>> {
        let guard = self.model.lock().unwrap_or_else(|p| p.into_inner());
        guard.clone().ok_or_else(|| {
            raise(
                py,
                "ModelClosedError",
                "this neuropod has been closed".into(),
            )
        })
    }
}

#[pymethods]
impl Neuropod {
    #[new]
    #[pyo3(signature = (neuropod_path, visible_gpu = None, **options))]
    fn new(
        py: Python<'_>,
        neuropod_path: std::path::PathBuf,
        visible_gpu: Option<&Bound<'_, PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        guard(py, || {
            let options = parse_options(py, visible_gpu, options)?;
            let model = py
                .detach(|| neuropods_core::Neuropod::load(&neuropod_path, &options))
                .map_err(|e| to_py(py, e))?;
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
        guard(py, || {
            let model = self.model(py)?;
            let Ok(inputs) = inputs.cast::<PyDict>() else {
                return Err(type_error(
                    py,
                    format!(
                        "infer takes a dict of input name to numpy array, got {}",
                        inputs.get_type().name()?
                    ),
                ));
            };
            let mut tensors = TensorMap::new();
            for (key, value) in inputs.iter() {
                let name = tensor_name(py, &key)?;
                let tensor = tensor_from_numpy(py, &name, &value)?;
                tensors.insert(name, tensor);
            }
            let outputs = py.detach(|| model.infer(&tensors));
            // Inputs borrow numpy memory; drop them while attached.
            drop(tensors);
            let outputs = outputs.map_err(|e| to_py(py, e))?;
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
    /// memory, and `infer` hands it to the worker without copying it.
    #[pyo3(signature = (name, shape, dtype = None))]
    fn allocate<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        shape: Vec<usize>,
        dtype: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            let model = self.model(py)?;
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
                        .map_err(|e| type_error(py, format!("dtype {d}: {e}")))?;
                    DType::from_name(&numpy_name).ok_or_else(|| {
                        type_error(py, format!("dtype {numpy_name} is not one Neuropods takes"))
                    })?
                }
            };
            let allocation = model
                .allocate(name, dtype, &shape)
                .map_err(|e| to_py(py, e))?;
            // SAFETY: the allocation's owner keeps its bytes alive; the
            // array is the only writer, as for any array a caller fills.
            let buffer = unsafe {
                Buffer::from_raw_parts(
                    allocation.as_mut_ptr(),
                    allocation.len(),
                    allocation.owner().clone(),
                )
            };
            let tensor = Tensor::from_buffer(dtype, shape, buffer).map_err(|e| to_py(py, e))?;
            tensor_to_numpy(py, name, tensor, Access::Writable)
        })
    }

    /// The process id of the worker running this model (None in-process,
    /// and after a worker was lost until the next call starts another).
    #[getter]
    fn worker_pid(&self, py: Python<'_>) -> PyResult<Option<u32>> {
        Ok(self.model(py)?.worker_pid())
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
    fn name(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.model(py)?.name().to_string())
    }

    /// Platform: "torchscript", "tensorflow" or "python".
    #[getter]
    fn platform(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(self.model(py)?.platform().name())
    }

    /// Input specs: a list of {"name", "dtype", "shape"}.
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        spec_to_py(py, self.model(py)?.inputs())
    }

    /// Output specs: a list of {"name", "dtype", "shape"}.
    #[getter]
    fn outputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        spec_to_py(py, self.model(py)?.outputs())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.model(py) {
            Ok(m) => format!("<Neuropod '{}' ({})>", m.name(), m.platform()),
            Err(_) => "<Neuropod (closed)>".to_string(),
        }
    }
}
