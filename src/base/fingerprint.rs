//! [`Fingerprint`]: the value of a store's fingerprint, 128 bits displayed as 32 hex digits. How it is
//! computed (an order-free set hash) is `crate::store`'s business; errors and checkpoints carry the value.

use std::fmt;

/// A stable 128-bit hash of a store's variables: equal contents give equal fingerprints on every machine,
/// process and thread count. Displays as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u128);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(Fingerprint)
    }
}
