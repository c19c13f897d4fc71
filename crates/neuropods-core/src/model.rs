//! [`Neuropod`]: a package loaded into its backend, in this process or in a
//! worker process of its own, with spec checks around every call.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::abi::SharedAllocatorRef;
use crate::backend::{registry, BackendModel, BackendOptions};
use crate::config::{ModelConfig, Platform};
use crate::error::{Error, Result};
use crate::fork;
use crate::package::Package;
use crate::spec::{validate, Direction, SpecError, SymbolBindings, TensorSpec};
use crate::tensor::{check_shape, checked_numel, AlignedBufferWriter, DType, TensorMap};
use crate::worker::{Allocation, WorkerModel, WorkerSetup};

/// How to load a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Settings passed to the backend (GPU, threads).
    pub backend: BackendOptions,
    /// Check every file against manifest.json before loading. Off by
    /// default: hashing large weights on every load is slow, and a package
    /// on local disk is as trusted as the code loading it.
    pub verify_manifest: bool,
    /// Run the model in a worker process of its own (out-of-process
    /// execution): a model that crashes, exits or hangs fails its call
    /// with [`crate::Error::Worker`] instead of taking the caller down,
    /// and the next call starts a new worker.
    pub use_ope: bool,
    /// With `use_ope`, the Python executable whose interpreter (and
    /// environment: packages, requirements) runs a python-platform model.
    /// None: `NEUROPODS_PYTHON`, else `python3` on `PATH`.
    pub ope_python: Option<PathBuf>,
}

/// Where the model runs.
enum Runner {
    InProcess(BackendModel),
    Worker(Box<WorkerModel>),
}

/// A loaded model.
pub struct Neuropod {
    // Dropped first: the backend may hold files of the package open.
    model: Runner,
    warnings: Vec<String>,
    options: BackendOptions,
    package: Package,
}

impl Neuropod {
    /// Loads a package (a directory or a zip) into its platform's backend.
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Neuropod> {
        Neuropod::load_with(path, options, SharedAllocatorRef::NONE)
    }

    /// [`Neuropod::load`], giving an in-process backend shared memory for
    /// its large allocations (an out-of-process worker does).
    pub(crate) fn load_with(
        path: impl AsRef<Path>,
        options: &LoadOptions,
        shared_allocator: SharedAllocatorRef,
    ) -> Result<Neuropod> {
        options.backend.validate()?;
        let package = Package::open(path)?;
        if options.verify_manifest {
            package.verify_manifest()?;
        }
        let (model, warnings) = if options.use_ope {
            let (model, warnings) = WorkerModel::start(WorkerSetup {
                model_name: package.config().name.clone(),
                package_root: package.root().to_path_buf(),
                options: options.backend.clone(),
                python: options.ope_python.clone(),
            })?;
            (Runner::Worker(Box::new(model)), warnings)
        } else {
            let platform = package.config().platform;
            let vtable = registry::backend(platform)?;
            fork::before_load(platform, &options.backend)?;
            let backend_config = package.backend_config()?;
            let (model, warnings) = BackendModel::load(
                vtable,
                platform,
                package.root(),
                package.config(),
                backend_config.as_deref(),
                &options.backend,
                shared_allocator,
            )?;
            (Runner::InProcess(model), warnings)
        };
        Ok(Neuropod {
            model,
            warnings,
            options: options.backend.clone(),
            package,
        })
    }

    /// Runs the model. Inputs are checked against the input spec before the
    /// backend sees them, outputs against the output spec after; a symbol
    /// takes one value across both. In a forked process, a model whose
    /// framework would hang there is refused ([`crate::Error::UnsafeAfterFork`]).
    pub fn infer(&self, inputs: &TensorMap) -> Result<TensorMap> {
        let config = self.package.config();
        let mut bindings = SymbolBindings::new();
        validate(&config.input_spec, inputs, Direction::Input, &mut bindings)?;
        let outputs = self.infer_unchecked(inputs)?;
        validate(
            &config.output_spec,
            &outputs,
            Direction::Output,
            &mut bindings,
        )?;
        Ok(outputs)
    }

    /// Runs the model without spec checks (the worker's side of an
    /// out-of-process model: its caller checks).
    pub(crate) fn infer_unchecked(&self, inputs: &TensorMap) -> Result<TensorMap> {
        match &self.model {
            Runner::InProcess(model) => {
                fork::check(self.platform(), &self.options)?;
                model.infer(inputs)
            }
            Runner::Worker(worker) => worker.infer(inputs),
        }
    }

    /// Zero-filled memory for input `name` of `dtype` and `shape`, to fill
    /// and pass to [`Neuropod::infer`]. For a model in a worker it is
    /// shared memory, which the call passes to the worker without copying
    /// it; in-process it is ordinary memory. The name and dtype are checked
    /// against the input spec now, the shape when the call is made.
    pub fn allocate(&self, name: &str, dtype: DType, shape: &[usize]) -> Result<Allocation> {
        let Some(spec) = self.inputs().iter().find(|s| s.name == name) else {
            return Err(SpecError::UnknownTensor {
                direction: Direction::Input,
                name: name.to_string(),
                expected: self.inputs().iter().map(|s| s.name.clone()).collect(),
            }
            .into());
        };
        if spec.dtype != dtype {
            return Err(SpecError::DTypeMismatch {
                direction: Direction::Input,
                name: name.to_string(),
                expected: spec.dtype,
                actual: dtype,
            }
            .into());
        }
        let Some(item) = dtype.item_size() else {
            return Err(Error::InvalidInput(format!(
                "input '{name}' is a string tensor: only numeric tensors can be allocated"
            )));
        };
        check_shape(shape)?;
        let len = checked_numel(shape)
            .and_then(|n| n.checked_mul(item))
            .ok_or_else(|| Error::InvalidInput(format!("shape {shape:?} is too large")))?;
        match &self.model {
            Runner::Worker(worker) => worker.allocate(len),
            Runner::InProcess(_) => {
                let mut memory = AlignedBufferWriter::new(len);
                let ptr = memory.as_mut_slice().as_mut_ptr();
                // The heap block does not move with the writer.
                Ok(Allocation::new(ptr, len, Arc::new(memory)))
            }
        }
    }

    /// The worker process running the model (None in-process, and between
    /// a lost worker and the call that starts the next).
    pub fn worker_pid(&self) -> Option<u32> {
        match &self.model {
            Runner::Worker(worker) => worker.worker_pid(),
            Runner::InProcess(_) => None,
        }
    }

    /// The parsed config.json.
    pub fn config(&self) -> &ModelConfig {
        self.package.config()
    }

    /// Model name.
    pub fn name(&self) -> &str {
        &self.config().name
    }

    /// Platform.
    pub fn platform(&self) -> Platform {
        self.config().platform
    }

    /// Input specs.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.config().input_spec
    }

    /// Output specs.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.config().output_spec
    }

    /// The folder the package was read from: the package itself, or the
    /// private temporary folder a zip was extracted to (removed on drop).
    pub fn package_root(&self) -> &Path {
        self.package.root()
    }

    /// Warnings the backend gave while loading (e.g. a fallback to CPU).
    pub fn load_warnings(&self) -> &[String] {
        &self.warnings
    }
}
