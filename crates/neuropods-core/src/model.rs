//! [`Neuropod`]: a package loaded into its backend, with spec checks around
//! every call.

use std::path::Path;

use crate::backend::{registry, BackendModel, BackendOptions};
use crate::config::{ModelConfig, Platform};
use crate::error::Result;
use crate::fork;
use crate::package::Package;
use crate::spec::{validate, Direction, SymbolBindings, TensorSpec};
use crate::tensor::TensorMap;

/// How to load a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Settings passed to the backend (GPU, threads).
    pub backend: BackendOptions,
    /// Check every file against manifest.json before loading. Off by
    /// default: hashing large weights on every load is slow, and a package
    /// on local disk is as trusted as the code loading it.
    pub verify_manifest: bool,
}

/// A loaded model.
pub struct Neuropod {
    // Dropped first: the backend may hold files of the package open.
    model: BackendModel,
    warnings: Vec<String>,
    options: BackendOptions,
    package: Package,
}

impl Neuropod {
    /// Loads a package (a directory or a zip) into its platform's backend.
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Neuropod> {
        options.backend.validate()?;
        let package = Package::open(path)?;
        if options.verify_manifest {
            package.verify_manifest()?;
        }
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
        )?;
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
        fork::check(config.platform, &self.options)?;
        let mut bindings = SymbolBindings::new();
        validate(&config.input_spec, inputs, Direction::Input, &mut bindings)?;
        let outputs = self.model.infer(inputs)?;
        validate(
            &config.output_spec,
            &outputs,
            Direction::Output,
            &mut bindings,
        )?;
        Ok(outputs)
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
