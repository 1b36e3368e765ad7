//! Moving averages of the weights (Keras's `use_ema`): the average's step, fused into one pass that writes in
//! place when nothing else holds the average's buffer, and the overwrite of the weights with the averages
//! (keras/src/optimizers/base_optimizer.py, `_update_model_variables_moving_average` and
//! `_overwrite_model_variables_with_average_value`, Keras 3.15).

use half::{bf16, f16};

use super::apply::{all_finite, contiguous, put_written, slice_mut, OptReal, WrittenFacts};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels::{self, Moved};
use crate::ops::num::{Float, Real};
use crate::store::fingerprint::{self, chunk_elements};
use crate::store::StateStore;
use crate::tensor::Tensor;
use crate::variable::Variable;

/// `average = m * average + (1 - m) * var` for each `(var, average)` pair, computed as Keras does in the
/// variable's dtype: `m` is the momentum cast to it, `1 - m` is computed in it, and each product is rounded to
/// it before the sum.
///
/// O(size of the variables); each average in place when its buffer is held by this state alone, otherwise into
/// a new buffer in the same pass (the old one stays with the snapshot or history that holds it). The averages
/// leave the store, blend as one task each once they are large in all ([`kernels::map_items`]), and go back.
pub(crate) fn update(state: &mut StateStore, pairs: &[(&Variable, &Variable)], momentum: f64) -> Result<()> {
    let mut jobs = Vec::with_capacity(pairs.len());
    for &(var, average) in pairs {
        jobs.push((var.dtype(), state.get(var)?, state.take_value(average)?));
    }
    let work = jobs.iter().map(|(_, source, _)| 3 * source.size()).sum();
    let blended = kernels::map_items(jobs, work, |(dtype, source, mut target)| {
        let done = match dtype {
            DType::Float16 => blend::<f16>(&mut target, &source, momentum),
            DType::Bfloat16 => blend::<bf16>(&mut target, &source, momentum),
            DType::Float32 => blend::<f32>(&mut target, &source, momentum),
            DType::Float64 => blend::<f64>(&mut target, &source, momentum),
            other => Err(Error::UnsupportedDType { op: "Optimizer::apply", dtype: other }),
        };
        (target, done)
    });
    let mut first_error = Ok(());
    for (&(_, average), (target, done)) in pairs.iter().zip(blended) {
        match done {
            Ok(facts) => put_written(state, average, target, facts)?,
            Err(e) => {
                state.put_value(average, target)?;
                first_error = first_error.and(Err(e));
            }
        }
    }
    first_error
}

/// Each variable takes its average's value (the buffer is shared, not copied). O(log n) per pair.
pub(crate) fn overwrite<'a>(
    state: &mut StateStore,
    pairs: impl IntoIterator<Item = (&'a Variable, &'a Variable)>,
) -> Result<()> {
    for (var, average) in pairs {
        let value = state.get(average)?;
        state.assign(var, value)?;
    }
    Ok(())
}

/// Blends `source` into `target`. In place it returns `None`; into a new buffer (the committed step) it also
/// hashes and scans each chunk it wrote while the chunk is in cache, and returns the chunk digests and whether
/// the average is all finite, so that the commit does not read the average again.
fn blend<T>(target: &mut Tensor, source: &Tensor, momentum: f64) -> Result<Option<WrittenFacts>>
where
    T: Float + bytemuck::NoUninit,
    T::C: OptReal,
{
    // Keras: `momentum = cast(not_first_step, dtype) * ema_momentum`, `1 - momentum`, both in the dtype.
    let m = T::down(<T::C as OptReal>::of(momentum));
    let c = T::down(T::C::ONE - m.up()).up();
    let m = m.up();
    let body = move |a: T, v: T| T::down(T::down(m * a.up()).up() + T::down(c * v.up()).up());
    let src = contiguous::<T>(source)?;
    if target.is_unique() {
        let dst = slice_mut::<T>(target)?;
        kernels::zip_mut((dst, &src[..]), |(a, v)| *a = body(*a, v))?;
        return Ok(None);
    }
    let mut fresh = kernels::buffer::alloc::<T>(src.len());
    let per_chunk = {
        let old = contiguous::<T>(target)?;
        kernels::for_chunks(
            vec![fresh.as_mut_slice()],
            vec![&old[..], &src[..]],
            chunk_elements::<T>(),
            |outs, ins| {
                kernels::zip_mut((Moved::new(ins[0], &mut *outs[0])?, ins[1]), |((new, a), v)| *new = body(a, v))?;
                Ok::<_, Error>((fingerprint::chunk_digest(outs[0]), all_finite(outs[0])))
            },
        )?
    };
    let mut facts: WrittenFacts = (Vec::with_capacity(per_chunk.len()), true);
    for chunk in per_chunk {
        let (digest, finite) = chunk?;
        facts.0.push(digest);
        facts.1 &= finite;
    }
    let dims = target.dims().to_vec();
    *target = Tensor::from_ndarray(fresh.into_arrayd(&dims).into_shared());
    Ok(Some(facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VariableSpec;

    fn pair(state: &mut StateStore, w: &[f32], avg: &[f32]) -> (Variable, Variable) {
        let var = state.create(VariableSpec::new(Tensor::from(w.to_vec())).name("w")).unwrap();
        let average = state.create(VariableSpec::new(Tensor::from(avg.to_vec())).name("w_average")).unwrap();
        (var, average)
    }

    #[test]
    fn the_average_moves_toward_the_variable_with_keras_rounding() {
        let mut state = StateStore::new();
        let (var, average) = pair(&mut state, &[1.0, -2.0, 3.5], &[0.5, 0.5, 0.5]);
        update(&mut state, &[(&var, &average)], 0.9).unwrap();
        let m = 0.9f32;
        let c = 1.0f32 - m;
        let want: Vec<f32> = [1.0f32, -2.0, 3.5].iter().map(|&v| m * 0.5 + c * v).collect();
        assert_eq!(state.get(&average).unwrap().to_vec::<f32>().unwrap(), want);
    }

    #[test]
    fn momentum_zero_copies_the_variable() {
        let mut state = StateStore::new();
        let (var, average) = pair(&mut state, &[1.0, -2.0], &[7.0, 8.0]);
        update(&mut state, &[(&var, &average)], 0.0).unwrap();
        assert_eq!(state.get(&average).unwrap().to_vec::<f32>().unwrap(), [1.0, -2.0]);
    }

    #[test]
    fn a_shared_average_is_written_to_a_new_buffer_and_the_snapshot_keeps_the_old() {
        let mut state = StateStore::new();
        let (var, average) = pair(&mut state, &[1.0, 1.0], &[0.0, 0.0]);
        let snapshot = state.clone();
        update(&mut state, &[(&var, &average)], 0.5).unwrap();
        assert_eq!(state.get(&average).unwrap().to_vec::<f32>().unwrap(), [0.5, 0.5]);
        assert_eq!(snapshot.get(&average).unwrap().to_vec::<f32>().unwrap(), [0.0, 0.0]);
        let ptr = state.get(&average).unwrap().as_ptr();
        drop(snapshot);
        update(&mut state, &[(&var, &average)], 0.5).unwrap();
        assert_eq!(state.get(&average).unwrap().as_ptr(), ptr, "an unshared average is updated in place");
    }

    #[test]
    fn overwrite_shares_the_average_buffer() {
        let mut state = StateStore::new();
        let (var, average) = pair(&mut state, &[1.0], &[2.0]);
        overwrite(&mut state, [(&var, &average)]).unwrap();
        assert!(state.get(&var).unwrap().ptr_eq(&state.get(&average).unwrap()));
    }
}
