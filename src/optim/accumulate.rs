//! Gradient accumulation (Keras's `gradient_accumulation_steps`): the accumulators' updates between two weight
//! updates, and the mean an update applies (keras/src/backend/jax/optimizer.py and
//! keras/src/optimizers/base_optimizer.py, `_overwrite_variables_directly_with_gradients`, Keras 3.15).

use crate::error::Result;
use crate::store::StateStore;
use crate::tensor::Tensor;
use crate::variable::Variable;

/// A call that does not update: `accumulator = grad + accumulator`, computed in the promoted dtype and cast to
/// the accumulator's. In place when the accumulator's buffer is unshared.
pub(crate) fn add(state: &mut StateStore, accumulator: &Variable, grad: &Tensor) -> Result<()> {
    state.assign_add(accumulator, grad.clone())
}

/// The updating call: returns `(grad + accumulator) / steps` (in the promoted dtype) and resets the accumulator
/// to zeros.
pub(crate) fn take_mean(state: &mut StateStore, accumulator: &Variable, grad: &Tensor, steps: i64) -> Result<Tensor> {
    let mean = grad.add(&state.get(accumulator)?)?.div(steps)?;
    reset(state, accumulator)?;
    Ok(mean)
}

/// A variable with `overwrite_with_gradient` keeps the largest gradient of the calls (Keras's
/// `ops.maximum(g, acc_g)`, NaN if either is NaN) and takes it on the updating call, which resets the
/// accumulator.
pub(crate) fn overwrite(
    state: &mut StateStore,
    var: &Variable,
    accumulator: &Variable,
    grad: &Tensor,
    is_update: bool,
) -> Result<()> {
    let largest = grad.maximum(&state.get(accumulator)?)?;
    if is_update {
        state.assign(var, largest)?;
        reset(state, accumulator)
    } else {
        state.assign(accumulator, largest)
    }
}

fn reset(state: &mut StateStore, accumulator: &Variable) -> Result<()> {
    state.assign(accumulator, Tensor::full(accumulator.shape(), accumulator.dtype(), 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VariableSpec;

    #[test]
    fn the_mean_of_the_accumulated_gradients_resets_the_accumulator() {
        let mut state = StateStore::new();
        let acc = state.create(VariableSpec::new(Tensor::from([0.0f32, 0.0])).name("acc")).unwrap();
        add(&mut state, &acc, &Tensor::from([1.0f32, 2.0])).unwrap();
        add(&mut state, &acc, &Tensor::from([3.0f32, -4.0])).unwrap();
        let mean = take_mean(&mut state, &acc, &Tensor::from([2.0f32, 5.0]), 3).unwrap();
        assert_eq!(mean.to_vec::<f32>().unwrap(), [2.0, 1.0]);
        assert_eq!(state.get(&acc).unwrap().to_vec::<f32>().unwrap(), [0.0, 0.0]);
    }

    #[test]
    fn overwrite_keeps_the_largest_gradient_until_the_update() {
        let mut state = StateStore::new();
        let var = state.create(VariableSpec::new(Tensor::from([9.0f32, 9.0])).name("v")).unwrap();
        let acc = state.create(VariableSpec::new(Tensor::from([0.0f32, 0.0])).name("acc")).unwrap();
        overwrite(&mut state, &var, &acc, &Tensor::from([1.0f32, -1.0]), false).unwrap();
        assert_eq!(state.get(&var).unwrap().to_vec::<f32>().unwrap(), [9.0, 9.0]);
        overwrite(&mut state, &var, &acc, &Tensor::from([0.5f32, -3.0]), true).unwrap();
        assert_eq!(state.get(&var).unwrap().to_vec::<f32>().unwrap(), [1.0, 0.0]);
        assert_eq!(state.get(&acc).unwrap().to_vec::<f32>().unwrap(), [0.0, 0.0]);
    }
}
