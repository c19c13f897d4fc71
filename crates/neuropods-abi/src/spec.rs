//! Tensor specs and the validation of tensors against them.
//!
//! A dim is a fixed size, any size, or a symbol; one symbol takes one value
//! everywhere it appears within one call, inputs and outputs together.

use std::fmt;

use std::collections::BTreeMap;

use crate::dtype::DType;

/// What a spec checks of a tensor: its dtype and shape. Implemented by
/// [`crate::Tensor`]; a trait, so that specs need nothing of tensors' storage.
pub trait Shaped {
    /// The element type.
    fn dtype(&self) -> DType;
    /// The dimensions.
    fn shape(&self) -> &[usize];
}

/// One dimension of a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    /// Exactly this size.
    Fixed(usize),
    /// Any size (`null` in config.json).
    Any,
    /// Any size, the same wherever this symbol appears in one call.
    Symbol(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Any => f.write_str("None"),
            Dim::Symbol(s) => write!(f, "'{s}'"),
        }
    }
}

/// The expected name, dtype and shape of one input or output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<Dim>,
}

/// Whether a spec check concerns the model's inputs or its outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Tensors given to `infer`.
    Input,
    /// Tensors the model returned.
    Output,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Input => "input",
            Direction::Output => "output",
        })
    }
}

/// Shows dims as a Python-style tuple: `(2, 'batch', None)`.
struct ShapeDisplay<'a, T>(&'a [T]);
impl<T: fmt::Display> fmt::Display for ShapeDisplay<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str(")")
    }
}

/// A tensor that does not match the spec. Every variant names the tensor.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// A tensor whose name is not in the spec.
    #[error("{direction} '{name}' is not in the spec (expected one of: {})", expected.join(", "))]
    UnknownTensor {
        /// Inputs or outputs.
        direction: Direction,
        /// The unexpected name.
        name: String,
        /// Names the spec has.
        expected: Vec<String>,
    },
    /// Wrong element type.
    #[error("{direction} '{name}': expected dtype {expected}, got {actual}")]
    DTypeMismatch {
        /// Inputs or outputs.
        direction: Direction,
        /// Tensor name.
        name: String,
        /// Spec dtype.
        expected: DType,
        /// Given dtype.
        actual: DType,
    },
    /// Wrong number of dimensions.
    #[error("{direction} '{name}': expected rank {} (shape {}), got rank {} (shape {})",
        expected.len(), ShapeDisplay(expected), actual.len(), ShapeDisplay(actual))]
    RankMismatch {
        /// Inputs or outputs.
        direction: Direction,
        /// Tensor name.
        name: String,
        /// Spec shape.
        expected: Vec<Dim>,
        /// Given shape.
        actual: Vec<usize>,
    },
    /// A fixed dim of the wrong size.
    #[error(
        "{direction} '{name}': dim {dim} expected size {expected}, got {actual} (shape {})",
        ShapeDisplay(shape)
    )]
    DimMismatch {
        /// Inputs or outputs.
        direction: Direction,
        /// Tensor name.
        name: String,
        /// Which dim.
        dim: usize,
        /// Spec size.
        expected: usize,
        /// Given size.
        actual: usize,
        /// Given shape.
        shape: Vec<usize>,
    },
    /// A symbol bound to different sizes within one call.
    #[error("{direction} '{name}': dim {dim} is symbol '{symbol}' = {bound} (set by '{bound_by}'), got {actual}")]
    SymbolMismatch {
        /// Inputs or outputs.
        direction: Direction,
        /// Tensor name.
        name: String,
        /// Which dim.
        dim: usize,
        /// The symbol.
        symbol: String,
        /// The value it already has.
        bound: usize,
        /// The tensor that bound it.
        bound_by: String,
        /// The conflicting size.
        actual: usize,
    },
}

impl SpecError {
    /// Whether the tensor at fault was an input (the caller's) or an output
    /// (the model's).
    pub fn direction(&self) -> Direction {
        match self {
            SpecError::UnknownTensor { direction, .. }
            | SpecError::DTypeMismatch { direction, .. }
            | SpecError::RankMismatch { direction, .. }
            | SpecError::DimMismatch { direction, .. }
            | SpecError::SymbolMismatch { direction, .. } => *direction,
        }
    }
}

/// Values that symbols took in one call, with the tensor that set each;
/// borrowed from the specs. A model has a few symbols at most: a list
/// searched in order costs less than hashing (this runs on every call).
#[derive(Default, Debug)]
pub struct SymbolBindings<'s> {
    values: Vec<Binding<'s>>,
}

#[derive(Debug)]
struct Binding<'s> {
    symbol: &'s str,
    value: usize,
    bound_by: &'s str,
}

impl<'s> SymbolBindings<'s> {
    /// No symbol bound yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of a symbol, if bound.
    pub fn get(&self, symbol: &str) -> Option<usize> {
        self.binding(symbol).map(|b| b.value)
    }

    fn binding(&self, symbol: &str) -> Option<&Binding<'s>> {
        self.values.iter().find(|b| b.symbol == symbol)
    }
}

impl TensorSpec {
    /// Checks one tensor against this spec, binding symbols as they appear.
    pub fn check<'s>(
        &'s self,
        tensor: &impl Shaped,
        direction: Direction,
        bindings: &mut SymbolBindings<'s>,
    ) -> Result<(), SpecError> {
        if tensor.dtype() != self.dtype {
            return Err(SpecError::DTypeMismatch {
                direction,
                name: self.name.clone(),
                expected: self.dtype,
                actual: tensor.dtype(),
            });
        }
        let shape = tensor.shape();
        if shape.len() != self.shape.len() {
            return Err(SpecError::RankMismatch {
                direction,
                name: self.name.clone(),
                expected: self.shape.clone(),
                actual: shape.to_vec(),
            });
        }
        for (dim, (want, &got)) in self.shape.iter().zip(shape).enumerate() {
            match want {
                Dim::Any => {}
                Dim::Fixed(n) if *n == got => {}
                Dim::Fixed(n) => {
                    return Err(SpecError::DimMismatch {
                        direction,
                        name: self.name.clone(),
                        dim,
                        expected: *n,
                        actual: got,
                        shape: shape.to_vec(),
                    })
                }
                Dim::Symbol(symbol) => match bindings.binding(symbol) {
                    Some(bound) if bound.value == got => {}
                    Some(bound) => {
                        return Err(SpecError::SymbolMismatch {
                            direction,
                            name: self.name.clone(),
                            dim,
                            symbol: symbol.clone(),
                            bound: bound.value,
                            bound_by: bound.bound_by.to_string(),
                            actual: got,
                        })
                    }
                    None => bindings.values.push(Binding {
                        symbol,
                        value: got,
                        bound_by: &self.name,
                    }),
                },
            }
        }
        Ok(())
    }
}

/// Checks every tensor in `tensors` against `specs`.
///
/// Tensors missing from the map are allowed (models may have optional
/// inputs, as in the original Neuropod); unknown names are not.
pub fn validate<'s>(
    specs: &'s [TensorSpec],
    tensors: &BTreeMap<String, impl Shaped>,
    direction: Direction,
    bindings: &mut SymbolBindings<'s>,
) -> Result<(), SpecError> {
    // Check in spec order so that error messages and symbol binding are
    // deterministic regardless of the map's order.
    for name in tensors.keys() {
        if !specs.iter().any(|s| &s.name == name) {
            return Err(SpecError::UnknownTensor {
                direction,
                name: name.clone(),
                expected: specs.iter().map(|s| s.name.clone()).collect(),
            });
        }
    }
    for spec in specs {
        if let Some(tensor) = tensors.get(&spec.name) {
            spec.check(tensor, direction, bindings)?;
        }
    }
    Ok(())
}
