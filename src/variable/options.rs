//! [`Aggregation`] and [`Synchronization`]: how a variable behaves when a step runs on several replicas.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// How assignments that several replicas make to one variable combine (Keras: `aggregation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Aggregation {
    /// No combination: an assignment from more than one replica is an error (`"none"`, the default).
    #[default]
    None,
    /// The mean of the replicas' values (`"mean"`).
    Mean,
    /// The sum of the replicas' values (`"sum"`).
    Sum,
    /// Replica 0's value (`"only_first_replica"`).
    OnlyFirstReplica,
}

/// How a variable's replicas are kept in step (Keras: `synchronization`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Synchronization {
    /// Chosen by the runner: mirrored, as on write (`"auto"`, the default).
    #[default]
    Auto,
    /// One value per replica, aggregated when read (`"on_read"`): metrics, counters.
    OnRead,
    /// Identical on every replica, combined at each assignment (`"on_write"`).
    OnWrite,
    /// Not synchronized (`"none"`).
    None,
}

const AGGREGATIONS: [(&str, Aggregation); 4] = [
    ("none", Aggregation::None),
    ("mean", Aggregation::Mean),
    ("sum", Aggregation::Sum),
    ("only_first_replica", Aggregation::OnlyFirstReplica),
];

const SYNCHRONIZATIONS: [(&str, Synchronization); 4] = [
    ("auto", Synchronization::Auto),
    ("on_read", Synchronization::OnRead),
    ("on_write", Synchronization::OnWrite),
    ("none", Synchronization::None),
];

fn parse<T: Copy>(table: &[(&str, T)], option: &'static str, allowed: &'static str, s: &str) -> Result<T> {
    table.iter().find(|(name, _)| *name == s).map(|&(_, v)| v).ok_or_else(|| Error::InvalidOption {
        option,
        got: s.to_string(),
        allowed,
    })
}

fn name_of<T: PartialEq>(table: &[(&'static str, T)], v: &T) -> &'static str {
    table.iter().find(|(_, x)| x == v).map(|(n, _)| *n).expect("every variant is in its table")
}

impl Aggregation {
    /// The Keras string (`"only_first_replica"`).
    pub fn name(&self) -> &'static str {
        name_of(&AGGREGATIONS, self)
    }
}

impl Synchronization {
    /// The Keras string (`"on_read"`).
    pub fn name(&self) -> &'static str {
        name_of(&SYNCHRONIZATIONS, self)
    }
}

impl FromStr for Aggregation {
    type Err = Error;

    /// Accepts exactly Keras's strings; anything else is [`Error::InvalidOption`] listing them.
    fn from_str(s: &str) -> Result<Self> {
        parse(&AGGREGATIONS, "aggregation", "none, mean, sum, only_first_replica", s)
    }
}

impl FromStr for Synchronization {
    type Err = Error;

    /// Accepts exactly Keras's strings; anything else is [`Error::InvalidOption`] listing them.
    fn from_str(s: &str) -> Result<Self> {
        parse(&SYNCHRONIZATIONS, "synchronization", "auto, on_read, on_write, none", s)
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Synchronization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_exactly_the_keras_strings() {
        for (name, v) in AGGREGATIONS {
            assert_eq!(name.parse::<Aggregation>().unwrap(), v);
            assert_eq!(v.to_string(), name);
        }
        for (name, v) in SYNCHRONIZATIONS {
            assert_eq!(name.parse::<Synchronization>().unwrap(), v);
        }
        let err = "MEAN".parse::<Aggregation>().unwrap_err();
        assert_eq!(err.to_string(), "invalid aggregation `MEAN`, expected one of none, mean, sum, only_first_replica");
        assert!(matches!("on-read".parse::<Synchronization>(), Err(Error::InvalidOption { .. })));
    }
}
