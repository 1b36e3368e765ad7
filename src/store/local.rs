//! [`LocalValues`]: the per-replica values of an `on_read` variable, a side table of the store (see
//! `replica/local.rs` for how replicas record and trust them). The store only keeps them with the state they
//! belong to, so that commits, rollbacks and replays carry them.

use std::sync::Arc;

use crate::tensor::Tensor;

/// One value per replica of an `on_read` variable, and the aggregate they were recorded with.
#[derive(Clone, Debug)]
pub(crate) struct LocalValues {
    /// The entry's value when these were recorded (sharing its buffer).
    pub(crate) aggregate: Tensor,
    /// One value per replica, in replica order.
    pub(crate) values: Arc<[Tensor]>,
}
