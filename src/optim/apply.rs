//! The driver every optimizer shares: slot creation (`build`), argument checks, clipping, weight decay, the
//! fused per-variable update, gradient accumulation, moving averages, the iteration counter and constraints
//! (`apply`).

use std::collections::HashMap;
use std::fmt;

use half::{bf16, f16};

use super::{accumulate, ema, LearningRate, Options};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::grad::Grads;
use crate::kernels;
use crate::kernels::buffer::Buffer;
use crate::ops::num::{Float, Real};
use crate::store::{fingerprint, StateStore};
use crate::tensor::{Element, Tensor};
use crate::variable::{Variable, VariableSpec};

/// `f32` and `f64`, the types updates compute in, with what the rules need beyond [`Real`].
pub(crate) trait OptReal: Real {
    fn of(x: f64) -> Self;
    fn powf(self, e: Self) -> Self;
    fn max(self, o: Self) -> Self;
}

macro_rules! opt_real {
    ($($t:ident),*) => {$(
        impl OptReal for $t {
            #[inline(always)]
            fn of(x: f64) -> Self { x as $t }
            #[inline(always)]
            fn powf(self, e: Self) -> Self { $t::powf(self, e) }
            #[inline(always)]
            fn max(self, o: Self) -> Self { if self >= o || self.is_nan() { self } else { o } }
        }
    )*};
}
opt_real!(f32, f64);

/// Constants of one variable's update, in the precision it computes in (the variable's dtype, as Keras casts
/// the learning rate and hyper-parameters to it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct UpdateConsts<C> {
    /// The learning rate of this iteration.
    pub(crate) lr: C,
    /// The 1-based step (`iterations + 1`), Keras's `local_step`.
    pub(crate) local_step: C,
}

/// One buffer of a variable's update (the parameter or a slot): written in place (`src: None`), or read from
/// the old buffer `src` and written to the new buffer `dst` (the committed step, whose old state a snapshot or
/// the trainer's history keeps).
#[derive(Debug)]
pub(crate) struct VarLane<'a, T> {
    pub(crate) dst: &'a mut [T],
    pub(crate) src: Option<&'a [T]>,
}

/// The error of lanes of one update that are neither all in place nor all out of place (a bug in the driver).
pub(crate) fn mixed_lanes() -> Error {
    Error::InvalidArgument {
        op: "Optimizer::apply",
        arg: "lanes",
        reason: "a variable's buffers must be updated all in place or all out of place".into(),
    }
}

/// Runs a rule's element update over a variable's [`VarLane`]s and its gradient, in one pass:
/// `fused!(g; p, m, v; |p: &mut T, m: &mut T, v: &mut T, g: T| { ... })`. The body reads and writes each
/// element through `&mut`; in place these point into the buffers, out of place they point to copies of the old
/// elements, written to the new buffers after the body (one loop reading the old state and writing the new,
/// vectorized like the in-place one).
macro_rules! fused {
    ($g:expr; $($lane:ident),+; $body:expr) => {{
        let body = $body;
        if true $(&& $lane.src.is_none())+ {
            $crate::kernels::zip_mut(($(&mut *$lane.dst,)+ $g), |($($lane,)+ g)| body($($lane,)+ g))
        } else {
            (|| {
                $crate::kernels::zip_mut(
                    (
                        $($crate::kernels::Moved::new(
                            $lane.src.ok_or_else($crate::optim::apply::mixed_lanes)?,
                            &mut *$lane.dst,
                        )?,)+
                        $g,
                    ),
                    |($(mut $lane,)+ g)| {
                        body($(&mut $lane.1,)+ g);
                        $(*$lane.0 = $lane.1;)+
                    },
                )
            })()
        }
    }};
}
pub(crate) use fused;

/// An optimizer's update rule, run on one variable's contiguous buffers.
pub(crate) trait Rule: Send + Sync + fmt::Debug {
    /// The slots each variable gets: Keras's name and initial value.
    fn slots(&self) -> Vec<(&'static str, f64)>;

    /// Updates `p` and its slots (in the order [`Rule::slots`] names them) in one pass from the gradient `g`,
    /// each gradient element first mapped by `gmap` (clipping). The lanes are all in place or all out of place
    /// ([`VarLane`]); a rule writes its element update once, through `fused!`.
    fn update<T, G, D>(
        &self,
        p: &mut VarLane<'_, T>,
        slots: &mut [VarLane<'_, T>],
        g: &[T],
        k: &UpdateConsts<T::C>,
        gmap: G,
        decay: D,
    ) -> Result<()>
    where
        T: Float,
        T::C: OptReal,
        G: Fn(T::C) -> T::C + Sync + Send + Copy,
        D: Fn(T::C) -> T::C + Sync + Send + Copy;
}

/// What `build` created.
#[derive(Clone, Debug)]
struct Built {
    iteration: Variable,
    learning_rate: Option<Variable>,
    /// The built variables, in build order.
    order: Vec<Variable>,
    slots: HashMap<Variable, Vec<Variable>>,
    /// Moving averages (`use_ema`), for the built variables without `overwrite_with_gradient`.
    averages: HashMap<Variable, Variable>,
    /// Gradient accumulators (`gradient_accumulation_steps`), for every built variable.
    accumulators: HashMap<Variable, Variable>,
    /// The optimizer variables after `iteration` and `learning_rate`, in creation order.
    created: Vec<Variable>,
}

/// The state and options every optimizer shares.
#[derive(Clone, Debug)]
pub(crate) struct Core {
    pub(crate) name: &'static str,
    pub(crate) options: Options,
    built: Option<Built>,
}

/// How each gradient element is mapped before the update: `clamp(g * mul / div, lo, hi)`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct GradMap {
    mul: f64,
    div: f64,
    lo: f64,
    hi: f64,
}

impl GradMap {
    const IDENTITY: GradMap = GradMap { mul: 1.0, div: 1.0, lo: f64::NEG_INFINITY, hi: f64::INFINITY };
}

impl Core {
    pub(crate) fn new(name: &'static str, learning_rate: LearningRate) -> Self {
        Core { name, options: Options::new(learning_rate), built: None }
    }

    fn not_built(&self) -> Error {
        Error::NotBuilt { optimizer: self.name.to_string() }
    }

    fn invalid(&self, arg: &'static str, reason: String) -> Error {
        Error::InvalidArgument { op: "Optimizer::build", arg, reason }
    }

    /// Checks the options (Keras's constructor checks, plus the combinations Keras would silently ignore).
    fn check_options(&self, op: &'static str) -> Result<()> {
        let invalid = |arg: &'static str, reason: String| Error::InvalidArgument {
            op,
            arg,
            reason: format!("optimizer `{}`: {reason}", self.name),
        };
        let o = &self.options;
        let clips = [o.clipnorm, o.clipvalue, o.global_clipnorm].iter().filter(|c| c.is_some()).count();
        if clips > 1 {
            return Err(invalid("clipnorm", "set at most one of clipnorm, clipvalue and global_clipnorm".to_string()));
        }
        for (arg, value) in
            [("clipnorm", o.clipnorm), ("clipvalue", o.clipvalue), ("global_clipnorm", o.global_clipnorm)]
        {
            if let Some(v) = value {
                if v.is_nan() || v <= 0.0 {
                    return Err(invalid(arg, format!("must be positive, got {v}")));
                }
            }
        }
        if let Some(m) = o.ema_momentum {
            if !(0.0..=1.0).contains(&m) {
                return Err(invalid("ema_momentum", format!("must be in [0, 1], got {m}")));
            }
        }
        match (o.ema_overwrite_frequency, o.ema_momentum) {
            (Some(0), _) => return Err(invalid("ema_overwrite_frequency", "must be at least 1, got 0".to_string())),
            (Some(n), None) => {
                return Err(invalid("ema_overwrite_frequency", format!("is {n}, but the optimizer has no use_ema")))
            }
            _ => {}
        }
        if let Some(n) = o.gradient_accumulation_steps {
            if n < 2 {
                return Err(invalid("gradient_accumulation_steps", format!("must be at least 2, got {n}")));
            }
        }
        Ok(())
    }

    pub(crate) fn build(
        &mut self,
        state: &mut StateStore,
        vars: &[Variable],
        slots: &[(&'static str, f64)],
    ) -> Result<()> {
        self.check_options("Optimizer::build")?;
        for var in vars {
            state.get(var)?;
            if !var.dtype().is_float() {
                return Err(self.invalid(
                    "vars",
                    format!("`{}` has dtype {}; only float variables train", var.path(), var.dtype()),
                ));
            }
        }
        // Work on a copy so that a failure leaves `state` as it was.
        let mut next = state.clone();
        let mut built = match self.built.clone() {
            Some(b) => b,
            None => {
                let iteration = next.create(
                    VariableSpec::new(Tensor::scalar(0i32)).name("iteration").name_scope(self.name).trainable(false),
                )?;
                let learning_rate = match &self.options.learning_rate {
                    LearningRate::Constant(rate) => Some(
                        next.create(
                            VariableSpec::new(Tensor::scalar(*rate as f32))
                                .name("learning_rate")
                                .name_scope(self.name)
                                .trainable(false),
                        )?,
                    ),
                    LearningRate::Schedule(_) => None,
                };
                Built {
                    iteration,
                    learning_rate,
                    order: Vec::new(),
                    slots: HashMap::new(),
                    averages: HashMap::new(),
                    accumulators: HashMap::new(),
                    created: Vec::new(),
                }
            }
        };
        // Keras's order: the base optimizer's averages and accumulators, then the rule's slots, each group in
        // the order of `vars`. Variables built before get only what they lack (after a change of options).
        let mut fresh: Vec<&Variable> = Vec::new();
        for var in vars {
            if !built.slots.contains_key(var) && !fresh.contains(&var) {
                fresh.push(var);
            }
        }
        let reference = |next: &mut StateStore, var: &Variable, slot: &str, init: f64| -> Result<Variable> {
            let value = Tensor::full(var.shape(), var.dtype(), init);
            let name = format!("{}_{slot}", var.path().replace('/', "_"));
            next.create(VariableSpec::new(value).name(name).name_scope(self.name).trainable(false))
        };
        if self.options.ema_momentum.is_some() {
            // As Keras's `add_optimizer_variables`, none for a variable that takes its gradient as its value.
            for var in vars {
                if !built.averages.contains_key(var) && !next.overwrite_with_gradient(var)? {
                    let average = reference(&mut next, var, "average", 0.0)?;
                    built.created.push(average.clone());
                    built.averages.insert(var.clone(), average);
                }
            }
        }
        if self.options.gradient_accumulation_steps.is_some() {
            for var in vars {
                if !built.accumulators.contains_key(var) {
                    let accumulator = reference(&mut next, var, "gradient_accumulator", 0.0)?;
                    built.created.push(accumulator.clone());
                    built.accumulators.insert(var.clone(), accumulator);
                }
            }
        }
        for var in fresh {
            let mut handles = Vec::with_capacity(slots.len());
            // As Keras, a variable that takes its gradient as its value gets no slots.
            let needs_slots = !next.overwrite_with_gradient(var)?;
            for &(slot, init) in slots.iter().filter(|_| needs_slots) {
                handles.push(reference(&mut next, var, slot, init)?);
            }
            built.created.extend(handles.iter().cloned());
            built.order.push(var.clone());
            built.slots.insert(var.clone(), handles);
        }
        *state = next;
        self.built = Some(built);
        Ok(())
    }

    pub(crate) fn built_variables(&self) -> Vec<Variable> {
        self.built.as_ref().map(|b| b.order.clone()).unwrap_or_default()
    }

    pub(crate) fn variables(&self) -> Vec<Variable> {
        let Some(b) = &self.built else { return Vec::new() };
        let mut vars = vec![b.iteration.clone()];
        vars.extend(b.learning_rate.clone());
        vars.extend(b.created.iter().cloned());
        vars
    }

    fn built(&self) -> Result<&Built> {
        self.built.as_ref().ok_or_else(|| self.not_built())
    }

    /// The value of the `iteration` variable: the number of calls to `apply` (Keras's `_iterations`).
    pub(crate) fn calls(&self, state: &StateStore) -> Result<i64> {
        let b = self.built()?;
        Ok(i64::from(state.get(&b.iteration)?.to_vec::<i32>()?[0]))
    }

    /// Keras's `optimizer.iterations`: the number of calls, or of updates (`calls // steps`) under gradient
    /// accumulation.
    pub(crate) fn iterations(&self, state: &StateStore) -> Result<i64> {
        let calls = self.calls(state)?;
        Ok(match self.options.gradient_accumulation_steps {
            Some(n) if n > 0 => calls.div_euclid(i64::from(n)),
            _ => calls,
        })
    }

    /// The moving average of `var`, if it has one.
    pub(crate) fn average(&self, var: &Variable) -> Option<Variable> {
        self.built.as_ref()?.averages.get(var).cloned()
    }

    /// `state` with every built variable that has an average holding it (`ema_state`).
    pub(crate) fn ema_state(&self, state: &StateStore) -> Result<StateStore> {
        let b = self.built()?;
        if self.options.ema_momentum.is_none() && b.averages.is_empty() {
            return Err(Error::InvalidArgument {
                op: "Optimizer::ema_state",
                arg: "use_ema",
                reason: format!("optimizer `{}` keeps no moving averages (build it with `use_ema`)", self.name),
            });
        }
        let mut view = state.clone();
        ema::overwrite(&mut view, b.order.iter().filter_map(|v| b.averages.get(v).map(|a| (v, a))))?;
        Ok(view)
    }

    /// Keras's `finalize_variable_values`: the averages become the weights (nothing without `use_ema`).
    pub(crate) fn finalize_variable_values(&self, mut state: StateStore) -> Result<StateStore> {
        let b = self.built()?;
        if self.options.ema_momentum.is_some() {
            ema::overwrite(&mut state, b.order.iter().filter_map(|v| b.averages.get(v).map(|a| (v, a))))?;
        }
        Ok(state)
    }

    /// The learning rate at `step`: the schedule's, or the learning-rate variable's value in `state`.
    pub(crate) fn rate(&self, state: &StateStore, step: i64) -> Result<f32> {
        let b = self.built()?;
        match (&self.options.learning_rate, &b.learning_rate) {
            (LearningRate::Schedule(s), _) => Ok(s.rate(step)),
            (LearningRate::Constant(_), Some(var)) => Ok(state.get(var)?.cast(DType::Float32).to_vec::<f32>()?[0]),
            (LearningRate::Constant(rate), None) => Ok(*rate as f32),
        }
    }

    /// Every check `apply` runs before it changes anything.
    pub(crate) fn check<R: Rule>(&self, rule: &R, state: &StateStore, grads: &Grads) -> Result<()> {
        let b = self.built()?;
        self.check_options("Optimizer::apply")?;
        let rebuild = |arg: &'static str, var: &Variable, what: &str| Error::InvalidArgument {
            op: "Optimizer::apply",
            arg,
            reason: format!(
                "optimizer `{}` has no {what} for `{}`: its options changed after build; call build again",
                self.name,
                var.path()
            ),
        };
        for (var, grad) in grads.iter() {
            if !b.slots.contains_key(var) {
                return Err(Error::UnknownGradient { path: var.path().to_string() });
            }
            if !state.trainable(var)? {
                return Err(Error::FrozenGradient { path: var.path().to_string() });
            }
            if b.slots[var].len() != rule.slots().len() && !state.overwrite_with_gradient(var)? {
                return Err(Error::InvalidArgument {
                    op: "Optimizer::apply",
                    arg: "grads",
                    reason: format!(
                        "`{}` was built with overwrite_with_gradient and has no slots; build a new optimizer",
                        var.path()
                    ),
                });
            }
            if grad.dims() != var.shape().dims() {
                return Err(Error::ShapeMismatch {
                    path: var.path().to_string(),
                    expected: var.shape().clone(),
                    got: grad.shape(),
                });
            }
            if self.options.gradient_accumulation_steps.is_some() && !b.accumulators.contains_key(var) {
                return Err(rebuild("gradient_accumulation_steps", var, "gradient accumulator"));
            }
        }
        if !self.options.allow_missing_gradients {
            for var in &b.order {
                if !grads.contains(var) && state.trainable(var)? {
                    return Err(Error::MissingGradient { path: var.path().to_string() });
                }
            }
        }
        if self.options.ema_momentum.is_some() {
            for var in &b.order {
                if !b.averages.contains_key(var) && !state.overwrite_with_gradient(var)? {
                    return Err(rebuild("use_ema", var, "moving average"));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn apply<R: Rule>(&self, rule: &R, mut state: StateStore, grads: &Grads) -> Result<StateStore> {
        // Every check first: nothing changes unless the whole step can run.
        self.check(rule, &state, grads)?;
        crate::kernels::par::keep_awake();
        let b = self.built()?;
        let calls = self.calls(&state)?;
        // Keras's `iterations` (updates so far), which Adam's bias correction and the averages see; schedules
        // and the weight decay see the number of calls (keras/src/optimizers/base_optimizer.py).
        let step = self.iterations(&state)?;
        let lr = self.rate(&state, calls)?;
        let accumulation = self.options.gradient_accumulation_steps.map(i64::from);
        let is_update = accumulation.is_none_or(|n| (calls + 1).rem_euclid(n) == 0);

        let mut regular: Vec<(&Variable, &Tensor)> = Vec::with_capacity(grads.len());
        for (var, grad) in grads.iter() {
            if state.overwrite_with_gradient(var)? {
                match b.accumulators.get(var).filter(|_| accumulation.is_some()) {
                    Some(acc) => accumulate::overwrite(&mut state, var, acc, grad, is_update)?,
                    None => state.assign(var, grad.cast(var.dtype()))?,
                }
            } else {
                regular.push((var, grad));
            }
        }
        // As Keras, a call whose only gradients overwrite their variables runs no update, no accumulation and no
        // moving average; the counter still advances.
        if !regular.is_empty() {
            let updates: Vec<(&Variable, Tensor)> = match accumulation {
                None => regular.iter().map(|&(var, grad)| (var, grad.cast(var.dtype()))).collect(),
                Some(n) if is_update => regular
                    .iter()
                    .map(|&(var, grad)| {
                        let mean = accumulate::take_mean(&mut state, &b.accumulators[var], grad, n)?;
                        Ok((var, mean.cast(var.dtype())))
                    })
                    .collect::<Result<_>>()?,
                Some(_) => {
                    for &(var, grad) in &regular {
                        accumulate::add(&mut state, &b.accumulators[var], grad)?;
                    }
                    Vec::new()
                }
            };
            self.update_all(rule, &mut state, b, &updates, lr, step)?;
            if let Some(momentum) = self.options.ema_momentum {
                self.update_averages(&mut state, b, momentum, step)?;
            }
            for (var, _) in &regular {
                if let Some(constraint) = state.constraint(var)? {
                    let value = constraint.apply(&state.get(var)?)?;
                    state.assign(var, value)?;
                }
            }
        }
        let next_call = i32::try_from(calls + 1).map_err(|_| Error::InvalidArgument {
            op: "Optimizer::apply",
            arg: "iterations",
            reason: "the int32 iteration counter overflowed".into(),
        })?;
        state.assign(&b.iteration, Tensor::scalar(next_call))?;
        Ok(state)
    }

    /// Clipping, weight decay and the rule's fused update of each `(variable, gradient)`.
    fn update_all<R: Rule>(
        &self,
        rule: &R,
        state: &mut StateStore,
        b: &Built,
        updates: &[(&Variable, Tensor)],
        lr: f32,
        step: i64,
    ) -> Result<()> {
        let global = match self.options.global_clipnorm {
            Some(clip) if !updates.is_empty() => {
                let sum: f64 = updates.iter().map(|(_, g)| sum_squares(g)).sum::<Result<f64>>()?;
                Some((clip, sum.sqrt()))
            }
            _ => None,
        };
        // Every variable's buffers leave the store, the updates run (one task per variable once the step is
        // large: a model of many small variables is as parallel as one of a few large ones), and the new values
        // go back. Each update reads only its own buffers, so the bits do not depend on the scheduling.
        let mut jobs = Vec::with_capacity(updates.len());
        for (var, grad) in updates {
            let gmap = self.grad_map(grad, global)?;
            let slots = &b.slots[*var];
            let mut values: Vec<Tensor> = Vec::with_capacity(1 + slots.len());
            values.push(state.take_value(var)?);
            for s in slots {
                values.push(state.take_value(s)?);
            }
            jobs.push(Job { dtype: var.dtype(), grad, gmap, values });
        }
        let work = jobs.iter().map(|j| j.grad.size() * (1 + j.values.len())).sum();
        let wd = self.options.weight_decay;
        let done = kernels::map_items(jobs, work, |job| match job.dtype {
            DType::Float16 => update_one::<R, f16>(rule, job, lr, step, wd),
            DType::Bfloat16 => update_one::<R, bf16>(rule, job, lr, step, wd),
            DType::Float32 => update_one::<R, f32>(rule, job, lr, step, wd),
            DType::Float64 => update_one::<R, f64>(rule, job, lr, step, wd),
            other => Err(Error::UnsupportedDType { op: "Optimizer::apply", dtype: other }),
        });
        for ((var, _), done) in updates.iter().zip(done) {
            let (values, facts) = done?;
            let mut facts = facts.map(Vec::into_iter);
            for (target, value) in std::iter::once(*var).chain(&b.slots[*var]).zip(values) {
                put_written(state, target, value, facts.as_mut().and_then(Iterator::next))?;
            }
        }
        Ok(())
    }

    /// Keras's `_update_model_variables_moving_average` over every built variable (whether or not it had a
    /// gradient), then the overwrite of `ema_overwrite_frequency`. `step` is Keras's `iterations` before this
    /// call's increment: the first step's momentum is 0, so the average starts as a copy of the variable.
    fn update_averages(&self, state: &mut StateStore, b: &Built, momentum: f64, step: i64) -> Result<()> {
        let momentum = if step != 0 { momentum } else { 0.0 };
        let pairs: Vec<(&Variable, &Variable)> =
            b.order.iter().filter_map(|var| b.averages.get(var).map(|average| (var, average))).collect();
        ema::update(state, &pairs, momentum)?;
        if let Some(every) = self.options.ema_overwrite_frequency {
            if (step + 1).rem_euclid(i64::from(every)) == 0 {
                ema::overwrite(state, b.order.iter().filter_map(|v| b.averages.get(v).map(|a| (v, a))))?;
            }
        }
        Ok(())
    }

    /// The clipping of one gradient (Keras's `_clip_gradients`), computed in the gradient's precision.
    fn grad_map(&self, grad: &Tensor, global: Option<(f64, f64)>) -> Result<GradMap> {
        let single = |x: f64| -> f64 {
            if grad.dtype() == DType::Float64 {
                x
            } else {
                f64::from(x as f32)
            }
        };
        if let Some(clip) = self.options.clipnorm {
            let norm = single(sum_squares(grad)?.sqrt());
            return Ok(GradMap { mul: single(clip), div: norm.max(single(clip)), ..GradMap::IDENTITY });
        }
        if let Some((clip, norm)) = global {
            // Keras's clip_by_global_norm: scale = clip * min(1 / norm, 1 / clip), NaN when the norm is not finite.
            let (clip, norm) = (single(clip), single(norm));
            let nan_if_not_finite = if norm.is_finite() { 0.0 } else { f64::NAN };
            let scale = single(clip * single((1.0 / norm).min(1.0 / clip))) + nan_if_not_finite;
            return Ok(GradMap { mul: scale, ..GradMap::IDENTITY });
        }
        if let Some(v) = self.options.clipvalue {
            return Ok(GradMap { lo: -single(v), hi: single(v), ..GradMap::IDENTITY });
        }
        Ok(GradMap::IDENTITY)
    }
}

/// One variable's update with its buffers out of the store: the variable's dtype, the gradient (already in
/// that dtype), its clipping, and the values of the parameter and then of its slots, in the order of [`Rule::slots`].
struct Job<'a> {
    dtype: DType,
    grad: &'a Tensor,
    gmap: GradMap,
    values: Vec<Tensor>,
}

/// The new values of a [`Job`] (same order), and what the fused pass learned of them when it wrote new buffers.
type Updated = (Vec<Tensor>, Option<Vec<WrittenFacts>>);

/// Runs one variable's update: the constants in the variable's precision, clipping and the decoupled weight
/// decay (`wd`) folded into the rule's fused pass.
fn update_one<R, T>(rule: &R, job: Job<'_>, lr: f32, step: i64, wd: Option<f64>) -> Result<Updated>
where
    R: Rule,
    T: Float + bytemuck::NoUninit,
    T::C: OptReal,
{
    let Job { grad, gmap, mut values, .. } = job;
    let of = |x: f64| <T::C as OptReal>::of(x);
    let consts = UpdateConsts { lr: of(f64::from(lr)), local_step: of((step + 1) as f64) };
    let wd = wd.map(of);
    let grad = contiguous::<T>(grad)?;
    let clipped = {
        let (mul, div, lo, hi) = (of(gmap.mul), of(gmap.div), of(gmap.lo), of(gmap.hi));
        move |g: T::C| {
            let g = g * mul / div;
            if g < lo {
                lo
            } else if g > hi {
                hi
            } else {
                g
            }
        }
    };
    let lr = consts.lr;
    // Keras's decoupled weight decay is `p - p * wd * lr`.
    let facts = match (gmap == GradMap::IDENTITY, wd) {
        (true, None) => fused_update(rule, &mut values, &grad, &consts, |g| g, |w| w)?,
        (true, Some(wd)) => fused_update(rule, &mut values, &grad, &consts, |g| g, move |w| w - w * wd * lr)?,
        (false, None) => fused_update(rule, &mut values, &grad, &consts, clipped, |w| w)?,
        (false, Some(wd)) => fused_update(rule, &mut values, &grad, &consts, clipped, move |w| w - w * wd * lr)?,
    };
    Ok((values, facts))
}

/// What the fused pass learned of one value it wrote: its chunk digests and whether it is all finite.
pub(crate) type WrittenFacts = (Vec<u128>, bool);

/// Puts back a value taken out of the store for an update, with what the pass that wrote it learned of it
/// (`None` when it was updated in place, unhashed).
pub(crate) fn put_written(
    state: &mut StateStore,
    target: &Variable,
    value: Tensor,
    facts: Option<WrittenFacts>,
) -> Result<()> {
    match facts {
        Some((chunks, finite)) => {
            let digest = fingerprint::digest_from_chunks(target.path(), &value, &chunks);
            state.put_value_with_facts(target, value, digest, finite)
        }
        None => state.put_value(target, value),
    }
}

/// One variable's update as a single pass over memory: `values` are the parameter and its slots, in the order
/// of [`Rule::slots`]. When this step holds every buffer alone, they are updated in place. When a snapshot or the
/// trainer's history still holds one (the committed step), every value gets a new buffer (from the pool when a
/// dead one of that size exists) and the rule reads the old buffers and writes the new ones in the same loop
/// ([`VarLane`]s with a source): no separate copy.
///
/// On that copy path it also hashes and scans each chunk it wrote while the chunk is in cache, and returns each
/// value's chunk digests and whether it is all finite, so that the commit that follows neither copies, nor
/// hashes, nor scans these buffers again. In place (an unshared state, which no trainer holds) it returns `None`
/// and leaves the hashing to whoever asks for a fingerprint.
fn fused_update<R, T, G, D>(
    rule: &R,
    values: &mut [Tensor],
    grad: &[T],
    consts: &UpdateConsts<T::C>,
    gmap: G,
    decay: D,
) -> Result<Option<Vec<WrittenFacts>>>
where
    R: Rule,
    T: Float + bytemuck::NoUninit,
    T::C: OptReal,
    G: Fn(T::C) -> T::C + Sync + Send + Copy,
    D: Fn(T::C) -> T::C + Sync + Send + Copy,
{
    let n = grad.len();
    for value in values.iter_mut() {
        if value.as_slice::<T>().is_none() {
            *value = value.to_standard_layout();
        }
    }
    let chunk = fingerprint::chunk_elements::<T>();
    if values.iter().all(Tensor::is_unique) {
        // This step holds every buffer alone: update in place, no hashing.
        let outs = values.iter_mut().map(slice_mut::<T>).collect::<Result<Vec<_>>>()?;
        for done in kernels::for_chunks(outs, vec![grad], chunk, |outs, ins| {
            let mut lanes: Vec<VarLane<'_, T>> = outs.iter_mut().map(|dst| VarLane { dst, src: None }).collect();
            let (p, slots) = lanes.split_first_mut().expect("the parameter is the first lane");
            rule.update(p, slots, ins[0], consts, gmap, decay)
        })? {
            done?;
        }
        return Ok(None);
    }
    // The copy path: a snapshot or the trainer's history holds (some of) the buffers. Every value gets a new
    // buffer (from the pool when a dead one of that size exists), and the rule reads the old buffers and writes
    // the new ones in the same pass (`Moved` lanes): p, the slots and g read once, the new p and slots written
    // once. Each chunk is then hashed and checked for NaN/inf while it is still in cache.
    let mut fresh: Vec<Buffer<T>> = values.iter().map(|_| kernels::buffer::alloc::<T>(n)).collect();
    let per_chunk = {
        let outs: Vec<&mut [T]> = fresh.iter_mut().map(|b| b.as_mut_slice()).collect();
        let mut ins: Vec<&[T]> = vec![grad];
        for value in values.iter() {
            ins.push(value.as_slice::<T>().expect("made contiguous above"));
        }
        kernels::for_chunks(outs, ins, chunk, |outs, ins| {
            {
                let mut lanes: Vec<VarLane<'_, T>> =
                    outs.iter_mut().zip(&ins[1..]).map(|(dst, old)| VarLane { dst, src: Some(*old) }).collect();
                let (p, slots) = lanes.split_first_mut().expect("the parameter is the first lane");
                rule.update(p, slots, ins[0], consts, gmap, decay)?;
            }
            Ok::<_, Error>(outs.iter().map(|o| (fingerprint::chunk_digest(o), all_finite(o))).collect::<Vec<_>>())
        })?
    };
    let mut facts: Vec<WrittenFacts> = vec![(Vec::with_capacity(per_chunk.len()), true); values.len()];
    for chunk in per_chunk {
        for ((digests, finite), (digest, chunk_finite)) in facts.iter_mut().zip(chunk?) {
            digests.push(digest);
            *finite &= chunk_finite;
        }
    }
    for (value, buf) in values.iter_mut().zip(fresh) {
        let dims = value.dims().to_vec();
        *value = Tensor::from_ndarray(buf.into_arrayd(&dims).into_shared());
    }
    Ok(Some(facts))
}

/// Whether every element is finite, in one branch-free pass over the bits: a float is NaN or infinite exactly
/// when its exponent bits are all ones. Compare-and-or on integer words vectorizes on baseline x86-64 (SSE2),
/// and so runs at the speed of reading the chunk from cache.
pub(crate) fn all_finite<T: Float + bytemuck::NoUninit>(s: &[T]) -> bool {
    macro_rules! none_all_ones {
        ($u:ty, $mask:expr) => {{
            let mask: $u = $mask;
            bytemuck::cast_slice::<T, $u>(s).iter().fold(0 as $u, |acc, &w| acc | <$u>::from((w & mask) == mask)) == 0
        }};
    }
    match T::DTYPE {
        DType::Float16 => none_all_ones!(u16, 0x7c00),
        DType::Bfloat16 => none_all_ones!(u16, 0x7f80),
        DType::Float32 => none_all_ones!(u32, 0x7f80_0000),
        DType::Float64 => none_all_ones!(u64, 0x7ff0_0000_0000_0000),
        // `Float` is implemented for the four float dtypes above only; anything else holds no NaN nor infinity.
        _ => true,
    }
}

/// The sum of squares of a float tensor's elements, in its compute precision, in a fixed order.
fn sum_squares(t: &Tensor) -> Result<f64> {
    Ok(match t.dtype() {
        DType::Float16 => sum_sq::<f16>(t)?,
        DType::Bfloat16 => sum_sq::<bf16>(t)?,
        DType::Float32 => sum_sq::<f32>(t)?,
        DType::Float64 => sum_sq::<f64>(t)?,
        other => return Err(Error::UnsupportedDType { op: "clip", dtype: other }),
    })
}

fn sum_sq<T: Float>(t: &Tensor) -> Result<f64>
where
    T::C: OptReal + Into<f64>,
{
    let data = contiguous::<T>(t)?;
    let sum: T::C = kernels::sum_by(&data, |x: T| {
        let c = x.up();
        c * c
    });
    Ok(sum.into())
}

/// The tensor's elements as one contiguous slice (borrowed when already contiguous).
pub(crate) fn contiguous<T: Element>(t: &Tensor) -> Result<std::borrow::Cow<'_, [T]>> {
    Ok(match t.as_slice::<T>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_vec::<T>()?),
    })
}

/// The tensor's buffer as a mutable row-major slice: copied first if shared or not in standard layout.
pub(crate) fn slice_mut<T: Element>(t: &mut Tensor) -> Result<&mut [T]> {
    let a = t.array_mut::<T>()?;
    if !a.is_standard_layout() {
        *a = crate::kernels::layout::to_standard(&a.view()).into_shared();
    }
    Ok(a.as_slice_mut().expect("a standard-layout array is contiguous"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_finite_finds_every_non_finite_value_at_every_position() {
        let finite = [0.0f32, -0.0, 1.5, -3.0, f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45];
        for n in [0usize, 1, 7, 8, 9, 17, 64] {
            let base: Vec<f32> = (0..n).map(|i| finite[i % finite.len()]).collect();
            assert!(all_finite(&base), "n = {n}");
            for i in 0..n {
                for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
                    let mut s = base.clone();
                    s[i] = bad;
                    assert!(!all_finite(&s), "{bad} at {i} of {n}");
                }
            }
        }
        assert!(all_finite(&[f64::MAX, -1.0, 0.0]));
        assert!(!all_finite(&[1.0f64, f64::NAN]));
        assert!(all_finite(&[f16::MAX, f16::MIN]) && all_finite(&[bf16::MAX, bf16::MIN]));
        assert!(!all_finite(&[f16::INFINITY]) && !all_finite(&[bf16::NAN]));
    }
}
