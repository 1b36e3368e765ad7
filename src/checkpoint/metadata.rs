//! The checkpoint header: the JSON document [`save`](super::save) stores as one string under the key
//! `purestate` of the safetensors `__metadata__` map (which maps strings to strings), and its checks on load.
//!
//! ```text
//! {
//!   "format": "purestate.checkpoint",
//!   "format_version": 2,
//!   "floatx": "float32",
//!   "seed": [0, 0],
//!   "base_version": 42,                        // or null: never committed
//!   "fingerprint": "5d41402abc4b2a76b9719d911017c592",
//!   "variables": [                             // creation order
//!     { "path": "dense/kernel", "name": "kernel", "dtype": "float32", "shape": [64, 128],
//!       "trainable": true, "autocast": true, "aggregation": "none", "synchronization": "auto",
//!       "overwrite_with_gradient": false, "constraint": "NonNeg", "regularizer": null }
//!   ]
//! }
//! ```
//!
//! `constraint` and `regularizer` hold the Keras class names only: they are trait objects, so they are recorded
//! for people and tools but not restored.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::store::StateStore;
use crate::tensor::{Shape, Tensor};
use crate::variable::{Aggregation, Synchronization, VariableSpec};

/// The `__metadata__` key holding the header.
pub(crate) const METADATA_KEY: &str = "purestate";
/// The value of the header's `format` field.
pub(crate) const FORMAT: &str = "purestate.checkpoint";
/// The header version this code writes and the newest it reads. Version 2 records the fingerprint of chunked
/// variable digests (`purestate-fingerprint-v2`); version 1 files, whose fingerprint hashed each value whole,
/// still load and are verified against that older fingerprint.
pub(crate) const FORMAT_VERSION: u32 = 2;

/// The whole header.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) format: String,
    pub(crate) format_version: u32,
    pub(crate) floatx: String,
    pub(crate) seed: [u32; 2],
    pub(crate) base_version: Option<u64>,
    pub(crate) fingerprint: String,
    pub(crate) variables: Vec<VariableRecord>,
}

/// One variable's spec and settable attributes, as saved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct VariableRecord {
    pub(crate) path: String,
    pub(crate) name: String,
    pub(crate) dtype: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) trainable: bool,
    pub(crate) autocast: bool,
    pub(crate) aggregation: String,
    pub(crate) synchronization: String,
    pub(crate) overwrite_with_gradient: bool,
    pub(crate) constraint: Option<String>,
    pub(crate) regularizer: Option<String>,
}

impl Header {
    /// The header of `state`. O(total bytes): it computes the fingerprint.
    pub(crate) fn of(state: &StateStore) -> Header {
        let mut variables = Vec::with_capacity(state.len());
        for entry in state.entries() {
            let var = &entry.var;
            variables.push(VariableRecord {
                path: var.path().to_string(),
                name: var.name().to_string(),
                dtype: var.dtype().name().to_string(),
                shape: var.shape().dims().to_vec(),
                trainable: entry.meta.trainable,
                autocast: var.autocast(),
                aggregation: var.aggregation().name().to_string(),
                synchronization: var.synchronization().name().to_string(),
                overwrite_with_gradient: entry.meta.overwrite_with_gradient,
                constraint: entry.meta.constraint.as_ref().map(|c| c.name().to_string()),
                regularizer: entry.meta.regularizer.as_ref().map(|r| r.name().to_string()),
            });
        }
        Header {
            format: FORMAT.to_string(),
            format_version: FORMAT_VERSION,
            floatx: state.floatx().name().to_string(),
            seed: state.seed().words(),
            base_version: state.base(),
            fingerprint: state.fingerprint().to_string(),
            variables,
        }
    }

    /// The compact JSON text (deterministic: fields in declaration order, variables in creation order).
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a header of strings, numbers and bools always serializes")
    }

    /// Parses and checks the format and version.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for invalid JSON, another format or a newer version.
    pub(crate) fn parse(json: &str, file: &Path) -> Result<Header> {
        let header: Header =
            serde_json::from_str(json).map_err(|e| corrupt(file, format!("invalid `{METADATA_KEY}` header: {e}")))?;
        if header.format != FORMAT {
            return Err(corrupt(file, format!("header format `{}`, expected `{FORMAT}`", header.format)));
        }
        if header.format_version > FORMAT_VERSION {
            return Err(corrupt(
                file,
                format!(
                    "header format version {} is newer than this purestate reads ({FORMAT_VERSION})",
                    header.format_version
                ),
            ));
        }
        Ok(header)
    }

    /// The floatx the header names.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an unknown or non-float dtype name.
    pub(crate) fn floatx(&self, file: &Path) -> Result<DType> {
        match self.floatx.parse::<DType>() {
            Ok(d) if d.is_float() => Ok(d),
            _ => Err(corrupt(file, format!("floatx `{}` is not a float dtype", self.floatx))),
        }
    }
}

impl VariableRecord {
    /// The spec that recreates this variable with `value`, checked against the record.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the value's dtype or shape is not the recorded one, when the name is not the
    /// path's last component, or for an unknown option string.
    pub(crate) fn spec(&self, value: Tensor, file: &Path) -> Result<VariableSpec> {
        let path = &self.path;
        let bad = |what: String| corrupt(file, format!("`{path}`: {what}"));
        let dtype = self.dtype.parse::<DType>().map_err(|_| bad(format!("unknown dtype `{}`", self.dtype)))?;
        if dtype != value.dtype() || self.shape.as_slice() != value.dims() {
            return Err(bad(format!(
                "the header says {} {}, the tensor is {} {}",
                dtype,
                Shape::from(self.shape.as_slice()),
                value.dtype(),
                value.shape()
            )));
        }
        let aggregation = self.aggregation.parse::<Aggregation>().map_err(|e| bad(e.to_string()))?;
        let synchronization = self.synchronization.parse::<Synchronization>().map_err(|e| bad(e.to_string()))?;
        let (scope, name) = split_path(path);
        if name != self.name {
            return Err(bad(format!("name `{}` is not the path's last component", self.name)));
        }
        let mut spec = VariableSpec::new(value)
            .name(name)
            .trainable(self.trainable)
            .autocast(self.autocast)
            .aggregation(aggregation)
            .synchronization(synchronization)
            .overwrite_with_gradient(self.overwrite_with_gradient);
        if let Some(scope) = scope {
            spec = spec.name_scope(scope);
        }
        Ok(spec)
    }
}

/// Splits a path at its last `/` into (name scope, name).
pub(crate) fn split_path(path: &str) -> (Option<&str>, &str) {
    match path.rsplit_once('/') {
        Some((scope, name)) => (Some(scope), name),
        None => (None, path),
    }
}

pub(crate) fn corrupt(file: &Path, reason: impl Into<String>) -> Error {
    Error::Corrupt { file: file.to_path_buf(), reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init;

    #[test]
    fn header_round_trips_through_json() {
        let mut state = StateStore::new();
        state.create(VariableSpec::new(init::Zeros).shape([2]).name("k").name_scope("a/b").trainable(false)).unwrap();
        let header = Header::of(&state);
        let json = header.to_json();
        let back = Header::parse(&json, Path::new("f")).unwrap();
        assert_eq!(back.variables[0].path, "a/b/k");
        assert!(!back.variables[0].trainable);
        assert_eq!(back.fingerprint, state.fingerprint().to_string());
        assert_eq!(back.fingerprint.len(), 32);
    }

    #[test]
    fn newer_format_version_is_refused() {
        let mut header = Header::of(&StateStore::new());
        header.format_version = FORMAT_VERSION + 1;
        let err = Header::parse(&header.to_json(), Path::new("f")).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }));
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn split_path_at_last_slash() {
        assert_eq!(split_path("a/b/c"), (Some("a/b"), "c"));
        assert_eq!(split_path("c"), (None, "c"));
    }
}
