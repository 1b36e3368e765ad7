//! Data-parallel replicas: N replicas equal one replica over the whole batch, each aggregation and
//! synchronization value does what its docs say, and results are bit-identical run to run.

use purestate::grad::{self, Grads};
use purestate::optim::{Optimizer, Sgd};
use purestate::replica::{Combined, ReplicaContext, ReplicaOutput, Replicas};
use purestate::{
    checkpoint, init, losses, random::Key, DType, Error, Result, StateStore, Tensor, Variable, VariableSpec,
};

const FEATURES: usize = 5;
const CLASSES: usize = 3;

/// A softmax regression with a running mean of its inputs (aggregation `mean`), an example counter (sum,
/// on_read) and a step counter (sum, on_write).
struct Model {
    w: Variable,
    b: Variable,
    running: Variable,
    seen: Variable,
    steps: Variable,
}

fn model() -> (StateStore, Model) {
    let mut state = StateStore::new();
    let w = state
        .create(VariableSpec::new(init::GlorotUniform).shape([FEATURES, CLASSES]).name("w").seed(Key::new(3)))
        .unwrap();
    let b = state.create(VariableSpec::new(init::Zeros).shape([CLASSES]).name("b")).unwrap();
    let running = state
        .create(VariableSpec::new(init::Zeros).shape([FEATURES]).name("running").trainable(false).aggregation("mean"))
        .unwrap();
    let seen = state
        .create(
            VariableSpec::new(init::Zeros)
                .shape([])
                .dtype("int64")
                .name("seen")
                .trainable(false)
                .aggregation("sum")
                .synchronization("on_read"),
        )
        .unwrap();
    let steps = state
        .create(
            VariableSpec::new(init::Zeros)
                .shape([])
                .name("steps")
                .trainable(false)
                .aggregation("sum")
                .synchronization("on_write"),
        )
        .unwrap();
    (state, Model { w, b, running, seen, steps })
}

/// A deterministic batch: `len` rows of FEATURES inputs and a label each.
fn batch(len: usize, seed: u32) -> (Vec<f32>, Vec<usize>) {
    let x = (0..len * FEATURES)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let y = (0..len).map(|i| (i * 7 + seed as usize) % CLASSES).collect();
    (x, y)
}

/// The replica step: the mean cross-entropy over the shard and its gradient (`grad::value_and_grad`), a
/// running mean of the inputs, the example and step counters.
fn step(
    m: &Model,
    data: &(Vec<f32>, Vec<usize>),
    ctx: &ReplicaContext,
    mut state: StateStore,
) -> Result<ReplicaOutput> {
    let range = ctx.range();
    let n = range.len();
    let x = Tensor::from_shape_vec([n, FEATURES], data.0[range.start * FEATURES..range.end * FEATURES].to_vec())?;
    let labels = Tensor::from_shape_vec([n], data.1[range].iter().map(|&c| c as i64).collect())?;
    let (loss, grads) = grad::value_and_grad(&state, |s| {
        let logits = x.matmul(&s.get(&m.w)?)?.add(&s.get(&m.b)?)?;
        losses::sparse_categorical_crossentropy(&labels, &logits, true)
    })?;
    let batch_mean = x.mean(0, false)?;
    let running = state.get(&m.running)?.mul(0.9f32)?.add(&batch_mean.mul(0.1f32)?)?;
    state.assign(&m.running, running)?;
    state.assign_add(&m.seen, Tensor::scalar(n as i64))?;
    state.assign_add(&m.steps, Tensor::scalar(1.0f32))?;
    Ok(ReplicaOutput { state, grads, loss: loss.to_f64()? as f32 })
}

fn run(n: usize, state: &StateStore, m: &Model, data: &(Vec<f32>, Vec<usize>)) -> Combined {
    Replicas::in_process(n).unwrap().step(state, data.1.len(), |ctx, s| step(m, data, ctx, s)).unwrap()
}

fn max_abs(t: &Tensor) -> f64 {
    t.to_f64_vec().iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

/// The largest elementwise difference relative to the largest magnitude of `a`.
fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    a.max_abs_diff(b).unwrap() / max_abs(a).max(1e-30)
}

#[test]
fn n_replicas_give_the_update_of_one_replica_over_the_whole_batch() {
    let (mut state, m) = model();
    let opt = {
        let mut opt = Sgd::new(0.5);
        opt.build(&mut state, &[m.w.clone(), m.b.clone()]).unwrap();
        opt
    };
    // 10 examples: even for N = 1, 2; uneven (3, 3, 2, 2) for N = 4; (4, 3, 3) for N = 3.
    let data = batch(10, 1);
    let one = run(1, &state, &m, &data);
    let next_one = opt.apply(one.state.clone(), &one.grads).unwrap();
    for n in [2, 3, 4] {
        let out = run(n, &state, &m, &data);
        // The shards add their examples in other orders than the whole batch does (each shard's mean gradient
        // in float32, then the shard-weighted mean in f64, rounded once): a few float32 roundings apart,
        // observed up to 1.25 ulp of the largest entry (N = 4, `b`). 4 ulp leaves room for that and still
        // catches a wrong shard weight: an unweighted mean of the uneven N = 3, 4 shards is 2% to 54% off here.
        for var in [&m.w, &m.b] {
            let d = max_rel_diff(one.grads.get(var).unwrap(), out.grads.get(var).unwrap());
            eprintln!("N = {n}: `{}` gradient max relative difference {d:e}", var.path());
            assert!(d <= 4.0 * f64::from(f32::EPSILON), "N = {n}: `{}` gradient differs by {d:e}", var.path());
        }
        let d = f64::from((one.loss - out.loss).abs() / one.loss);
        eprintln!("N = {n}: loss relative difference {d:e}");
        assert!(d <= 4.0 * f64::from(f32::EPSILON), "N = {n}: loss differs by {d:e}");
        // After `w - 0.5 g`: half the gradients' difference, plus the rounding of `0.5 g` and of the subtraction
        // on either side (half an ulp each, and an ulp of x is at most eps |x|).
        let next = opt.apply(out.state.clone(), &out.grads).unwrap();
        for var in [&m.w, &m.b] {
            let eps = f64::from(f32::EPSILON);
            let bound = 0.5 * max_abs(one.grads.get(var).unwrap()) * (4.0 * eps + eps)
                + max_abs(&next_one.get(var).unwrap()) * eps;
            let d = next_one.get(var).unwrap().max_abs_diff(&next.get(var).unwrap()).unwrap();
            eprintln!("N = {n}: `{}` after one SGD step, max abs difference {d:e} (bound {bound:e})", var.path());
            assert!(d <= bound, "N = {n}: `{}` update differs by {d:e}", var.path());
        }
        assert_eq!(out.state.get(&m.seen).unwrap().to_vec::<i64>().unwrap(), [10], "N = {n}");
        assert_eq!(out.examples, 10);
    }
}

#[test]
fn one_replica_is_exactly_the_plain_step() {
    let (state, m) = model();
    let data = batch(8, 2);
    let out = run(1, &state, &m, &data);
    let ctx_free = Replicas::in_process(1).unwrap();
    let plain = ctx_free.step(&state, 8, |ctx, s| step(&m, &data, ctx, s)).unwrap();
    assert!(out.grads.get(&m.w).unwrap().bit_eq(plain.grads.get(&m.w).unwrap()));
    let direct = step(&m, &data, &ctx_of(&ctx_free, 8), state.clone()).unwrap();
    assert!(out.grads.get(&m.w).unwrap().bit_eq(direct.grads.get(&m.w).unwrap()));
    assert_eq!(out.state.fingerprint(), direct.state.fingerprint());
}

/// The context of replica 0 of one replica over `len` examples, as the runner makes it.
fn ctx_of(replicas: &Replicas, len: usize) -> ReplicaContext {
    let ctx = std::sync::Mutex::new(None);
    replicas
        .step(&StateStore::new(), len, |c, s| {
            *ctx.lock().unwrap() = Some(c.clone());
            Ok(ReplicaOutput { state: s, grads: Grads::new(), loss: 0.0 })
        })
        .ok();
    ctx.into_inner().unwrap().unwrap()
}

#[test]
fn training_is_bit_identical_run_to_run_and_across_thread_counts() {
    let train = |n: usize| {
        let (mut state, m) = model();
        let mut opt = Sgd::new(0.1);
        opt.build(&mut state, &[m.w.clone(), m.b.clone()]).unwrap();
        for s in 0..5 {
            let data = batch(11, s);
            let out = run(n, &state, &m, &data);
            state = opt.apply(out.state, &out.grads).unwrap();
        }
        state.fingerprint()
    };
    for n in [2, 4] {
        let first = train(n);
        for threads in [1, 2, 7] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            assert_eq!(pool.install(|| train(n)), first, "N = {n}, {threads} threads");
        }
    }
}

/// A store with one scalar float variable of the given aggregation and synchronization, initially 10.
fn scalar_var(aggregation: &str, synchronization: &str) -> (StateStore, Variable) {
    let mut state = StateStore::new();
    let v = state
        .create(
            VariableSpec::new(Tensor::scalar(10.0f32))
                .name("v")
                .trainable(false)
                .aggregation(aggregation)
                .synchronization(synchronization),
        )
        .unwrap();
    (state, v)
}

/// Runs one step on 3 replicas (shards of 1 example) where replica r assigns `value(r)` (if `Some`).
fn assign_step(state: &StateStore, v: &Variable, value: impl Fn(usize) -> Option<f32> + Sync) -> Result<Combined> {
    Replicas::in_process(3)?.step(state, 3, |ctx, mut s| {
        if let Some(x) = value(ctx.replica()) {
            s.assign(v, Tensor::scalar(x))?;
        }
        Ok(ReplicaOutput { state: s, grads: Grads::new(), loss: 0.0 })
    })
}

fn scalar(state: &StateStore, v: &Variable) -> f32 {
    state.get(v).unwrap().to_vec::<f32>().unwrap()[0]
}

#[test]
fn aggregation_mean_averages_the_replicas_values() {
    for sync in ["auto", "on_write"] {
        let (state, v) = scalar_var("mean", sync);
        let out = assign_step(&state, &v, |r| Some([1.0, 2.0, 6.0][r])).unwrap();
        assert_eq!(scalar(&out.state, &v), 3.0, "{sync}");
        // A replica that does not assign contributes the value it was given.
        let out = assign_step(&state, &v, |r| (r == 0).then_some(13.0)).unwrap();
        assert_eq!(scalar(&out.state, &v), 11.0, "{sync}");
    }
}

#[test]
fn aggregation_sum_adds_every_replicas_change() {
    for sync in ["auto", "on_write"] {
        let (state, v) = scalar_var("sum", sync);
        let out = assign_step(&state, &v, |r| Some(10.0 + r as f32)).unwrap(); // changes 0, 1, 2
        assert_eq!(scalar(&out.state, &v), 13.0, "{sync}");
    }
}

#[test]
fn aggregation_only_first_replica_takes_replica_0() {
    let (state, v) = scalar_var("only_first_replica", "auto");
    let out = assign_step(&state, &v, |r| Some([4.0, 5.0, 6.0][r])).unwrap();
    assert_eq!(scalar(&out.state, &v), 4.0);
    let out = assign_step(&state, &v, |r| (r > 0).then_some(5.0)).unwrap();
    assert_eq!(scalar(&out.state, &v), 10.0);
}

#[test]
fn aggregation_none_refuses_several_replicas_assigning() {
    let (state, v) = scalar_var("none", "auto");
    let err = assign_step(&state, &v, |r| Some(r as f32)).unwrap_err();
    assert!(matches!(&err, Error::ReplicaConflict { path, micro_batches: 3, option: "aggregation" } if path == "v"));
    assert_eq!(
        err.to_string(),
        "`v`: assigned different values by 3 micro-batches, but its aggregation is `none`; give it an aggregation (mean, sum, \
         only_first_replica)"
    );
    let out = assign_step(&state, &v, |r| (r == 2).then_some(7.0)).unwrap();
    assert_eq!(scalar(&out.state, &v), 7.0);
    let out = assign_step(&state, &v, |_| None).unwrap();
    assert!(out.state.get(&v).unwrap().ptr_eq(&state.get(&v).unwrap()));
}

#[test]
fn synchronization_none_refuses_several_replicas_assigning() {
    let (state, v) = scalar_var("mean", "none");
    let err = assign_step(&state, &v, |r| Some(r as f32)).unwrap_err();
    assert!(matches!(err, Error::ReplicaConflict { micro_batches: 3, option: "synchronization", .. }));
    let out = assign_step(&state, &v, |r| (r == 1).then_some(2.0)).unwrap();
    assert_eq!(scalar(&out.state, &v), 2.0);
}

#[test]
fn on_read_sum_metric_counts_every_example_once() {
    let (state, m) = model();
    let replicas = Replicas::in_process(4).unwrap();
    let mut state = state;
    let mut total = 0;
    for (s, len) in [(0, 10), (1, 7), (2, 4)] {
        let data = batch(len, s);
        state = replicas.step(&state, len, |ctx, st| step(&m, &data, ctx, st)).unwrap().state;
        total += len as i64;
        assert_eq!(state.get(&m.seen).unwrap().to_vec::<i64>().unwrap(), [total]);
    }
    // Each replica kept its own count: shards (3,3,2,2), (2,2,2,1), (1,1,1,1).
    let locals: Vec<i64> =
        replicas.local_values(&state, &m.seen).unwrap().iter().map(|t| t.to_vec::<i64>().unwrap()[0]).collect();
    assert_eq!(locals, [6, 6, 5, 4]);
    // The on_write sum counter counts each replica's increment: 4 replicas x 3 steps.
    assert_eq!(scalar(&state, &m.steps), 12.0);
}

#[test]
fn on_read_replicas_read_their_own_values() {
    let (state, m) = model();
    let replicas = Replicas::in_process(2).unwrap();
    let data = batch(5, 0);
    let state = replicas.step(&state, 5, |ctx, st| step(&m, &data, ctx, st)).unwrap().state; // locals (3, 2)
    let seen_by = std::sync::Mutex::new(vec![0i64; 2]);
    replicas
        .step(&state, 2, |ctx, st| {
            seen_by.lock().unwrap()[ctx.replica()] = st.get(&m.seen)?.to_vec::<i64>()?[0];
            Ok(ReplicaOutput { state: st, grads: Grads::new(), loss: 0.0 })
        })
        .unwrap();
    assert_eq!(seen_by.into_inner().unwrap(), [3, 2]);
}

#[test]
fn on_read_mean_and_only_first_replica_aggregate_when_read() {
    let (state, v) = scalar_var("mean", "on_read");
    let out = assign_step(&state, &v, |r| Some([1.0, 2.0, 6.0][r])).unwrap();
    assert_eq!(scalar(&out.state, &v), 3.0);
    let locals = Replicas::in_process(3).unwrap().local_values(&out.state, &v).unwrap();
    assert_eq!(locals.iter().map(|t| t.to_vec::<f32>().unwrap()[0]).collect::<Vec<_>>(), [1.0, 2.0, 6.0]);
    // Next step only replica 2 changes its value: the mean is of the kept values.
    let out = assign_step(&out.state, &v, |r| (r == 2).then_some(0.0)).unwrap();
    assert_eq!(scalar(&out.state, &v), 1.0);

    let (state, v) = scalar_var("only_first_replica", "on_read");
    let out = assign_step(&state, &v, |r| Some([4.0, 5.0, 6.0][r])).unwrap();
    assert_eq!(scalar(&out.state, &v), 4.0);
    let locals = Replicas::in_process(3).unwrap().local_values(&out.state, &v).unwrap();
    assert_eq!(locals[2].to_vec::<f32>().unwrap(), [6.0]);

    let (state, v) = scalar_var("none", "on_read");
    assert!(matches!(assign_step(&state, &v, |r| Some(r as f32)), Err(Error::ReplicaConflict { .. })));
}

#[test]
fn on_read_reset_outside_the_runner_restarts_every_replica() {
    let (state, m) = model();
    let replicas = Replicas::in_process(2).unwrap();
    let data = batch(5, 0);
    let mut state = replicas.step(&state, 5, |ctx, st| step(&m, &data, ctx, st)).unwrap().state;
    state.assign(&m.seen, Tensor::scalar(0i64)).unwrap(); // a metric reset
    let locals = replicas.local_values(&state, &m.seen).unwrap();
    assert!(locals.iter().all(|t| t.to_vec::<i64>().unwrap() == [0]));
    let state = replicas.step(&state, 5, |ctx, st| step(&m, &data, ctx, st)).unwrap().state;
    assert_eq!(state.get(&m.seen).unwrap().to_vec::<i64>().unwrap(), [5]);
}

#[test]
fn on_read_values_are_saved_aggregated() {
    let (state, m) = model();
    let replicas = Replicas::in_process(3).unwrap();
    let data = batch(7, 0);
    let state = replicas.step(&state, 7, |ctx, st| step(&m, &data, ctx, st)).unwrap().state;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dp.safetensors");
    checkpoint::save(&state, &file).unwrap();
    let loaded = checkpoint::load(&file).unwrap();
    assert_eq!(loaded.get(&loaded.find("seen").unwrap()).unwrap().to_vec::<i64>().unwrap(), [7]);
    assert_eq!(loaded.fingerprint(), state.fingerprint());
    assert_eq!(replicas.verify_fingerprint(&state).unwrap(), state.fingerprint());
    // A loaded store starts the replicas from the saved aggregate: [7, 0, 0].
    let seen = loaded.find("seen").unwrap();
    let locals = replicas.local_values(&loaded, &seen).unwrap();
    assert_eq!(locals.iter().map(|t| t.to_vec::<i64>().unwrap()[0]).collect::<Vec<_>>(), [7, 0, 0]);
}

#[test]
fn gradients_of_float16_variables_keep_their_dtype() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Ones).shape([2]).dtype("float16").name("w")).unwrap();
    let out = Replicas::in_process(2)
        .unwrap()
        .step(&state, 3, |ctx, s| {
            let g = Tensor::full([2], DType::Float16, ctx.len() as f64);
            Ok(ReplicaOutput { state: s, grads: Grads::from_pairs([(w.clone(), g)])?, loss: 1.0 })
        })
        .unwrap();
    let g = out.grads.get(&w).unwrap();
    assert_eq!(g.dtype(), DType::Float16);
    assert_eq!(
        g.to_f64_vec(),
        [(2.0 * 2.0 + 1.0 * 1.0) / 3.0f64]
            .repeat(2)
            .iter()
            .map(|&x| f64::from(half::f16::from_f64(x)))
            .collect::<Vec<_>>()
    );
}

#[test]
fn bad_inputs_are_errors() {
    assert!(matches!(Replicas::in_process(0), Err(Error::InvalidArgument { arg: "n", .. })));
    let (state, m) = model();
    let replicas = Replicas::in_process(4).unwrap();
    let data = batch(3, 0);
    let err = replicas.step(&state, 3, |ctx, st| step(&m, &data, ctx, st)).unwrap_err();
    assert!(matches!(err, Error::BatchSplit { batch_len: 3, micro_batch: None, replicas: 4, .. }));
    assert_eq!(err.to_string(), "a batch of 3 examples on 4 replicas: fewer examples than replicas");

    // The lowest failing replica's own error.
    let err =
        replicas.step(&state, 4, |ctx, _| Err(Error::UnknownPath { path: format!("r{}", ctx.replica()) })).unwrap_err();
    assert!(matches!(err, Error::UnknownPath { path } if path == "r0"));

    // Creating a variable inside a step.
    let err = replicas
        .step(&state, 4, |_, mut st| {
            st.create(VariableSpec::new(init::Zeros).shape([1]))?;
            Ok(ReplicaOutput { state: st, grads: Grads::new(), loss: 0.0 })
        })
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { arg: "step", .. }));

    // Replicas that disagree on which variables have gradients.
    let err = replicas
        .step(&state, 4, |ctx, st| {
            let pairs = (ctx.replica() == 0).then(|| (m.b.clone(), Tensor::zeros([CLASSES], DType::Float32)));
            Ok(ReplicaOutput { state: st, grads: Grads::from_pairs(pairs)?, loss: 0.0 })
        })
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { arg: "step", .. }));

    // A gradient of the wrong shape.
    let err = replicas
        .step(&state, 4, |_, st| {
            let grads = Grads::from_pairs([(m.b.clone(), Tensor::zeros([7], DType::Float32))])?;
            Ok(ReplicaOutput { state: st, grads, loss: 0.0 })
        })
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { path, .. } if path == "b"));

    // Summing bools is not defined.
    let mut state = StateStore::new();
    let flag = state
        .create(VariableSpec::new(Tensor::scalar(false)).name("flag").trainable(false).aggregation("sum"))
        .unwrap();
    let err = Replicas::in_process(2)
        .unwrap()
        .step(&state, 2, |_, mut st| {
            st.assign(&flag, Tensor::scalar(true))?;
            Ok(ReplicaOutput { state: st, grads: Grads::new(), loss: 0.0 })
        })
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType { dtype: DType::Bool, .. }));
}

#[test]
fn the_combined_state_derives_from_the_input_version() {
    let (state, m) = model();
    let mut trainer: purestate::Trainer = purestate::Trainer::new(state);
    let data = batch(6, 0);
    let out = Replicas::in_process(2).unwrap().step(trainer.state(), 6, |ctx, st| step(&m, &data, ctx, st)).unwrap();
    assert_eq!(trainer.commit(out.state).unwrap(), 1);
}
