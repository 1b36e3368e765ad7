//! [`VariableSpec`]: a builder carrying every `keras.Variable` constructor argument, checked in one place by
//! [`StateStore::create`](crate::StateStore::create).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{Aggregation, Synchronization, VariableInfo};
use crate::constraint::Constraint;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::init::Initializer;
use crate::random::Key;
use crate::regularizer::Regularizer;
use crate::tensor::{Shape, Tensor};

/// Where a variable's first value comes from: a value, or an initializer called with (shape, dtype, key).
#[derive(Clone, Debug)]
pub enum InitialValue {
    /// A concrete value (its shape is the variable's; its dtype too unless the spec names one).
    Value(Tensor),
    /// An initializer called with the spec's shape and dtype.
    Initializer(Arc<dyn Initializer>),
}

impl<I: Initializer + 'static> From<I> for InitialValue {
    fn from(init: I) -> Self {
        InitialValue::Initializer(Arc::new(init))
    }
}

impl From<Tensor> for InitialValue {
    fn from(value: Tensor) -> Self {
        InitialValue::Value(value)
    }
}

impl From<Arc<dyn Initializer>> for InitialValue {
    fn from(init: Arc<dyn Initializer>) -> Self {
        InitialValue::Initializer(init)
    }
}

/// An option given either as its typed value or as its Keras string (`DType::Float16` or `"float16"`); a
/// string is parsed when the spec is checked, so a bad one is an error from
/// [`StateStore::create`](crate::StateStore::create).
pub trait OptionValue<T> {
    /// The typed value.
    ///
    /// # Errors
    /// The parse error of a string that names no value.
    fn resolve(self) -> Result<T>;
}

macro_rules! option_value {
    ($($t:ty),*) => {$(
        impl OptionValue<$t> for $t {
            fn resolve(self) -> Result<$t> {
                Ok(self)
            }
        }
        impl OptionValue<$t> for &str {
            fn resolve(self) -> Result<$t> {
                <$t>::from_str(self)
            }
        }
    )*};
}
option_value!(DType, Aggregation, Synchronization);

/// Every argument of a `keras.Variable`, as a builder. Nothing is checked until
/// [`StateStore::create`](crate::StateStore::create), which returns the first problem as an [`Error`].
///
/// Defaults follow Keras: trainable, autocast, no overwrite_with_gradient, aggregation `none`,
/// synchronization `auto`, dtype the store's floatx for an initializer and the value's own dtype for a value.
///
/// One deliberate difference: a value whose shape differs from an explicit [`shape`](Self::shape) is an
/// error (Keras silently keeps the value's shape).
///
/// # Examples
/// ```
/// use purestate::{init, StateStore, Tensor, VariableSpec};
/// let mut state = StateStore::new();
/// let w = state.create(VariableSpec::new(init::Ones).shape([2, 3]).name("kernel").name_scope("dense"))?;
/// assert_eq!(w.path(), "dense/kernel");
/// let c = state.create(VariableSpec::new(Tensor::from([1i32, 2])).trainable(false).aggregation("sum"))?;
/// assert_eq!(c.name(), "variable");
/// assert!(state.create(VariableSpec::new(init::Zeros)).is_err()); // an initializer needs a shape
/// # Ok::<(), purestate::Error>(())
/// ```
pub struct VariableSpec {
    pub(crate) initial: InitialValue,
    shape: Option<Shape>,
    dtype: Option<Result<DType>>,
    pub(crate) trainable: bool,
    autocast: bool,
    pub(crate) overwrite_with_gradient: bool,
    aggregation: Result<Aggregation>,
    synchronization: Result<Synchronization>,
    name: Option<String>,
    name_scope: Option<String>,
    pub(crate) constraint: Option<Arc<dyn Constraint>>,
    pub(crate) regularizer: Option<Arc<dyn Regularizer>>,
    seed: Option<Key>,
}

impl VariableSpec {
    /// A spec whose first value comes from `initial`: an initializer (`init::GlorotUniform::default()`) or a
    /// value ([`Tensor`]).
    pub fn new(initial: impl Into<InitialValue>) -> Self {
        VariableSpec {
            initial: initial.into(),
            shape: None,
            dtype: None,
            trainable: true,
            autocast: true,
            overwrite_with_gradient: false,
            aggregation: Ok(Aggregation::None),
            synchronization: Ok(Synchronization::Auto),
            name: None,
            name_scope: None,
            constraint: None,
            regularizer: None,
            seed: None,
        }
    }

    /// The shape: required with an initializer; with a value it must equal the value's shape.
    pub fn shape(mut self, shape: impl Into<Shape>) -> Self {
        self.shape = Some(shape.into());
        self
    }

    /// The dtype, as a [`DType`] or a Keras name (`"bfloat16"`).
    pub fn dtype(mut self, dtype: impl OptionValue<DType>) -> Self {
        self.dtype = Some(dtype.resolve());
        self
    }

    /// Whether optimizers update it and gradients are taken for it (default true; settable later with
    /// [`StateStore::set_trainable`](crate::StateStore::set_trainable)).
    pub fn trainable(mut self, trainable: bool) -> Self {
        self.trainable = trainable;
        self
    }

    /// Whether a float variable is read in the scope's compute dtype under mixed precision (default true).
    pub fn autocast(mut self, autocast: bool) -> Self {
        self.autocast = autocast;
        self
    }

    /// Whether the optimizer replaces the value with the gradient passed for it instead of applying its rule
    /// (default false; used for float8 scaling factors in Keras).
    pub fn overwrite_with_gradient(mut self, overwrite: bool) -> Self {
        self.overwrite_with_gradient = overwrite;
        self
    }

    /// How replicas' assignments combine: [`Aggregation`] or `"none"`, `"mean"`, `"sum"`,
    /// `"only_first_replica"`.
    pub fn aggregation(mut self, aggregation: impl OptionValue<Aggregation>) -> Self {
        self.aggregation = aggregation.resolve();
        self
    }

    /// How replicas stay in step: [`Synchronization`] or `"auto"`, `"on_read"`, `"on_write"`, `"none"`.
    pub fn synchronization(mut self, synchronization: impl OptionValue<Synchronization>) -> Self {
        self.synchronization = synchronization.resolve();
        self
    }

    /// The variable's name (no `/`). Without one the store picks `variable`, `variable_1`, ...
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The name scope the name lives under: `"dense"` gives the path `dense/<name>`; scopes nest with `/`
    /// (`"model/dense"`).
    pub fn name_scope(mut self, scope: impl Into<String>) -> Self {
        self.name_scope = Some(scope.into());
        self
    }

    /// A constraint applied after each optimizer update.
    pub fn constraint(mut self, constraint: impl Constraint + 'static) -> Self {
        self.constraint = Some(Arc::new(constraint));
        self
    }

    /// A regularizer whose penalty scopes collect as a loss.
    pub fn regularizer(mut self, regularizer: impl Regularizer + 'static) -> Self {
        self.regularizer = Some(Arc::new(regularizer));
        self
    }

    /// The key a random initializer draws from. Without one, the store derives a key from its own seed and the
    /// variable's creation index, so creation is deterministic either way.
    pub fn seed(mut self, key: Key) -> Self {
        self.seed = Some(key);
        self
    }

    /// The path this spec asks for, if it names itself.
    pub(crate) fn requested_path(&self) -> Option<String> {
        self.name.as_ref().map(|n| self.path_with_name(n))
    }

    /// The path of a variable of this spec called `name`.
    pub(crate) fn path_with_name(&self, name: &str) -> String {
        join_path(self.name_scope.as_deref(), name)
    }

    /// Checks the spec and computes the first value. Automatic names count up from `auto_names`, skipping
    /// paths for which `taken` holds; `default_key` gives the key of an unseeded initializer from the path.
    pub(crate) fn resolve(
        self,
        floatx: DType,
        auto_names: &mut usize,
        taken: impl Fn(&str) -> bool,
        default_key: impl FnOnce(&str) -> Key,
    ) -> Result<(VariableInfo, Tensor)> {
        if let Some(scope) = &self.name_scope {
            check_scope(scope)?;
        }
        let name = match &self.name {
            Some(name) => {
                check_name(name)?;
                name.clone()
            }
            None => loop {
                let n = *auto_names;
                *auto_names += 1;
                let name = if n == 0 { "variable".to_string() } else { format!("variable_{n}") };
                if !taken(&self.path_with_name(&name)) {
                    break name;
                }
            },
        };
        let path = join_path(self.name_scope.as_deref(), &name);
        let invalid = |reason: String| Error::InvalidSpec { path: path.clone(), reason };
        let dtype = self.dtype.transpose()?;
        let aggregation = self.aggregation?;
        let synchronization = self.synchronization?;
        let value = match &self.initial {
            InitialValue::Value(value) => {
                if let Some(shape) = &self.shape {
                    if shape.dims() != value.dims() {
                        return Err(Error::ShapeMismatch { path, expected: shape.clone(), got: value.shape() });
                    }
                }
                match dtype {
                    Some(d) => value.cast(d),
                    None => value.clone(),
                }
            }
            InitialValue::Initializer(init) => {
                let shape = self.shape.ok_or_else(|| {
                    invalid(format!("the initializer {} needs a shape; give one with `.shape(..)`", init.name()))
                })?;
                let dtype = dtype.unwrap_or(floatx);
                let value = init.initialize(&shape, dtype, self.seed.unwrap_or_else(|| default_key(&path)))?;
                if value.dims() != shape.dims() {
                    return Err(invalid(format!(
                        "the initializer {} returned shape {}, expected {}",
                        init.name(),
                        value.shape(),
                        shape
                    )));
                }
                // Keras converts what an initializer returns to the variable's dtype
                // (`convert_to_tensor(value, dtype=self.dtype)` in keras/src/backend/common/variables.py).
                value.cast(dtype)
            }
        };
        let info = VariableInfo {
            path,
            name,
            shape: value.shape(),
            dtype: value.dtype(),
            autocast: self.autocast,
            aggregation,
            synchronization,
        };
        Ok((info, value))
    }
}

impl fmt::Debug for VariableSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VariableSpec")
            .field("initial", &self.initial)
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .field("trainable", &self.trainable)
            .field("name", &self.name)
            .field("name_scope", &self.name_scope)
            .finish_non_exhaustive()
    }
}

pub(crate) fn join_path(scope: Option<&str>, name: &str) -> String {
    match scope {
        Some(scope) if !scope.is_empty() => format!("{scope}/{name}"),
        _ => name.to_string(),
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidName { name: name.into(), reason: "a name cannot be empty" });
    }
    if name.contains('/') {
        return Err(Error::InvalidName {
            name: name.into(),
            reason: "a name cannot contain `/`; use a name scope for nesting",
        });
    }
    Ok(())
}

fn check_scope(scope: &str) -> Result<()> {
    if scope.is_empty() || scope.split('/').any(str::is_empty) {
        return Err(Error::InvalidName {
            name: scope.into(),
            reason: "a name scope is one or more non-empty names joined by `/`",
        });
    }
    Ok(())
}
