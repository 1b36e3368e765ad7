//! The MPI backend of [`Replicas`](super::Replicas) (cargo feature `mpi`): each replica is a rank of
//! `MPI_COMM_WORLD`. The only file that uses the `mpi` crate.
//!
//! Contributions are exchanged as bytes with `MPI_Allgather` (lengths) and `MPI_Allgatherv` (payloads), and
//! every rank combines all of them in rank order with the same code as the in-process runner. MPI's own
//! reductions are not used: OpenMPI's `MPI_Allreduce` does not add in rank order (at 4 ranks its sums differ
//! from `((r0 + r1) + r2) + r3`), and float16/bfloat16 have no MPI datatype.

use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::{Count, Threading};

use super::combine::Contribution;
use super::wire;
use crate::error::{Error, Result};
use crate::store::Fingerprint;

/// The MPI universe (finalized on drop) and the world communicator.
pub(crate) struct MpiBackend {
    world: SimpleCommunicator,
    // Dropped after `world`: finalizes MPI.
    _universe: Universe,
}

impl MpiBackend {
    /// Initializes MPI with `MPI_THREAD_FUNNELED`.
    pub(crate) fn initialize() -> Result<MpiBackend> {
        let (universe, _provided) = mpi::initialize_with_threading(Threading::Funneled).ok_or_else(|| Error::Mpi {
            op: "initialize",
            reason: "MPI is already initialized in this process (one `Replicas::mpi` per process)".into(),
        })?;
        Ok(MpiBackend { world: universe.world(), _universe: universe })
    }

    pub(crate) fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    pub(crate) fn size(&self) -> usize {
        self.world.size() as usize
    }

    /// Every rank's contribution, in rank order, and the bytes this rank sent. Collective: a rank whose step
    /// failed still takes part and sends its message, so that no rank waits forever.
    ///
    /// # Errors
    /// This rank's own step error; [`Error::ReplicaFailed`] for the lowest other rank whose step failed;
    /// [`Error::Mpi`] for a message that cannot be decoded or is too large for MPI's counts.
    pub(crate) fn exchange(&self, mine: Result<Contribution>) -> Result<(Vec<Contribution>, usize)> {
        let bytes = wire::encode(&mine);
        let gathered = self.all_gather_bytes(&bytes)?;
        let own = mine?;
        let mut parts = Vec::with_capacity(gathered.len());
        for (rank, part) in gathered.iter().enumerate() {
            if rank == self.rank() {
                parts.push(own.clone());
                continue;
            }
            match wire::decode(part)? {
                Ok(part) => parts.push(part),
                Err(reason) => return Err(Error::ReplicaFailed { replica: rank, reason }),
            }
        }
        Ok((parts, bytes.len()))
    }

    /// Compares every rank's fingerprint with rank 0's.
    ///
    /// # Errors
    /// [`Error::ReplicaDivergence`] naming the first rank that differs.
    pub(crate) fn verify_fingerprint(&self, mine: Fingerprint) -> Result<Fingerprint> {
        let mut all = vec![0u8; 16 * self.size()];
        self.world.all_gather_into(&mine.0.to_le_bytes()[..], &mut all[..]);
        let of = |rank: usize| {
            let mut raw = [0u8; 16];
            raw.copy_from_slice(&all[16 * rank..16 * rank + 16]);
            Fingerprint(u128::from_le_bytes(raw))
        };
        let expected = of(0);
        match (1..self.size()).find(|&r| of(r) != expected) {
            Some(replica) => Err(Error::ReplicaDivergence { replica, expected, got: of(replica) }),
            None => Ok(mine),
        }
    }

    /// Every rank's bytes, in rank order.
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let too_large = || Error::Mpi { op: "all_gather", reason: "a contribution exceeds 2 GiB".into() };
        let len = u64::try_from(mine.len()).map_err(|_| too_large())?;
        let mut lens = vec![0u64; self.size()];
        self.world.all_gather_into(&len, &mut lens[..]);
        let counts = lens.iter().map(|&l| Count::try_from(l).map_err(|_| too_large())).collect::<Result<Vec<_>>>()?;
        let mut displs = Vec::with_capacity(counts.len());
        let mut total: Count = 0;
        for &c in &counts {
            displs.push(total);
            total = total.checked_add(c).ok_or_else(too_large)?;
        }
        let mut buf = vec![0u8; total as usize];
        {
            let mut partition = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(mine, &mut partition);
        }
        Ok(counts.iter().zip(&displs).map(|(&c, &d)| buf[d as usize..(d + c) as usize].to_vec()).collect())
    }
}
