//! The same bits for any number of replicas: with a micro-batch size, gradients, the loss, every assignment and
//! the committed state are bit-identical for 1 to 7 replicas (even and uneven runs of micro-batches) at 1, 2 and
//! 7 threads, equal to a plain loop over the micro-batches; for an MLP and for a model with BatchNormalization
//! and Dropout. A run resumes on another replica count; batches that cannot be split are typed errors.

use proptest::prelude::*;
use purestate::grad::{self, Grads};
use purestate::layers::{BatchNormalization, Dense, Dropout, Layer, Sequential};
use purestate::optim::{Adam, Optimizer};
use purestate::replica::{tree_sum, Combined, ReplicaContext, ReplicaOutput, Replicas};
use purestate::{losses, DType, Error, Fingerprint, Result, RunOptions, StateStore, Tensor, Trainer};

const FEATURES: usize = 6;
const CLASSES: usize = 3;

/// A model and its optimizer, built in a fresh store.
struct Net {
    model: Sequential,
    opt: Adam,
}

/// `dense-relu-dense`, or with `stateful` `dense-batchnorm-relu-dropout-dense`.
fn build_net(stateful: bool) -> (StateStore, Net) {
    let mut state = StateStore::new();
    let mut model = Sequential::new(if stateful { "bn_dropout" } else { "mlp" });
    if stateful {
        model = model
            .add(Dense::new(8))
            .add(BatchNormalization::new().momentum(0.9))
            .add(purestate::layers::Activation::new("relu"))
            .add(Dropout::new(0.3).seed(5));
    } else {
        model = model.add(Dense::new(8).activation("relu"));
    }
    model = model.add(Dense::new(CLASSES));
    model.build(&mut state, &[FEATURES]).unwrap();
    let mut opt = Adam::new(1e-2);
    let trainable = model.trainable_weights();
    opt.build(&mut state, &trainable).unwrap();
    (state, Net { model, opt })
}

/// A deterministic batch: `len` rows of FEATURES inputs and labels.
fn batch(len: usize, seed: u32) -> (Tensor, Tensor) {
    let x = Tensor::from_fn([len, FEATURES].as_slice(), DType::Float32, |i| {
        f64::from(((i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 997) / 498.5 - 1.0
    });
    let y =
        Tensor::from_shape_vec([len], (0..len).map(|i| ((i * 7 + seed as usize) % CLASSES) as i32).collect()).unwrap();
    (x, y)
}

/// One micro-batch's step: the mean cross-entropy over its rows, differentiated; the layers' state comes back.
fn micro_step(net: &Net, data: &(Tensor, Tensor), ctx: &ReplicaContext, state: StateStore) -> Result<ReplicaOutput> {
    let r = ctx.range();
    let x = rows(&data.0, r.clone())?;
    let y = rows(&data.1, r)?;
    let out = grad::value_and_grad_aux(state, |scope| {
        let logits = net.model.call(scope, &x, true)?;
        Ok((losses::sparse_categorical_crossentropy(&y, &logits, true)?, ()))
    })?;
    Ok(ReplicaOutput { state: out.state, grads: out.grads, loss: out.loss.to_f64()? as f32 })
}

/// `steps` training steps of batches of `len` in micro-batches of `micro` on `replicas` replicas; the
/// first step's combined output and every committed fingerprint.
fn train(
    stateful: bool,
    replicas: usize,
    micro: usize,
    len: usize,
    steps: u32,
) -> Result<(Combined, Vec<Fingerprint>)> {
    let (state, net) = build_net(stateful);
    let runner = Replicas::in_process(replicas)?.micro_batch(micro)?.allow_partial_micro_batch(true);
    let mut trainer: Trainer = Trainer::new(state);
    let mut first = None;
    let mut prints = Vec::new();
    for s in 0..steps {
        let data = batch(len, s);
        let out = runner.step(trainer.state(), len, |ctx, st| micro_step(&net, &data, ctx, st))?;
        let next = net.opt.apply(out.state.clone(), &out.grads)?;
        first.get_or_insert(out);
        trainer.commit(next)?;
        prints.push(trainer.fingerprint(trainer.head())?);
    }
    Ok((first.expect("at least one step"), prints))
}

/// The rows `r` of `t` (its first axis).
fn rows(t: &Tensor, r: std::ops::Range<usize>) -> Result<Tensor> {
    let mut start = vec![0; t.ndim()];
    start[0] = r.start;
    let mut shape = vec![-1isize; t.ndim()];
    shape[0] = r.len() as isize;
    t.slice(&start, &shape)
}

/// The same loss, gradients (by path: each run builds its own store) and state, bit for bit.
fn same_bits(a: &Combined, b: &Combined) -> bool {
    let by_path = |c: &Combined| {
        let mut grads: Vec<(String, Tensor)> = c.grads.iter().map(|(v, g)| (v.path().to_string(), g.clone())).collect();
        grads.sort_by(|x, y| x.0.cmp(&y.0));
        grads
    };
    let (ga, gb) = (by_path(a), by_path(b));
    a.loss.to_bits() == b.loss.to_bits()
        && ga.len() == gb.len()
        && ga.iter().zip(&gb).all(|((pa, ta), (pb, tb))| pa == pb && ta.bit_eq(tb))
        && a.state.fingerprint() == b.state.fingerprint()
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random batch and micro-batch sizes (a shorter last micro-batch included), 1 to 7 replicas, 1, 2 and 7
    /// threads: the same gradients, loss and committed fingerprints as 1 replica at 1 thread.
    #[test]
    fn any_replica_and_thread_count_gives_the_bits_of_one_replica(
        micro in 1usize..24,
        micro_batches in 1usize..10,
        short in 0usize..3,
        stateful in any::<bool>(),
    ) {
        let len = micro * micro_batches - short.min(micro - 1);
        let m = len.div_ceil(micro);
        let (one, one_prints) = in_pool(1, || train(stateful, 1, micro, len, 3)).unwrap();
        for replicas in 2..=7usize.min(m) {
            for threads in [1, 2, 7] {
                let (out, prints) = in_pool(threads, || train(stateful, replicas, micro, len, 3)).unwrap();
                prop_assert!(same_bits(&one, &out), "{replicas} replicas, {threads} threads, batch {len}/{micro}");
                prop_assert_eq!(&prints, &one_prints, "{} replicas, {} threads", replicas, threads);
            }
        }
    }
}

#[test]
fn one_replica_is_a_plain_loop_over_micro_batches_added_by_tree_sum() {
    let (state, net) = build_net(false);
    let data = batch(10, 1);
    let out = Replicas::in_process(3)
        .unwrap()
        .micro_batch(2)
        .unwrap()
        .step(&state, 10, |ctx, st| micro_step(&net, &data, ctx, st))
        .unwrap();
    // By hand: each micro-batch's gradient on the micro-batch's random stream, added in the tree, over 5.
    let mut per_var: Vec<Vec<Tensor>> = Vec::new();
    let vars = net.model.trainable_weights();
    let mut losses = Vec::new();
    for j in 0..5 {
        let x = rows(&data.0, 2 * j..2 * j + 2).unwrap();
        let y = rows(&data.1, 2 * j..2 * j + 2).unwrap();
        let (loss, grads) = grad::value_and_grad(&state.clone().with_random_stream(Some(j as u32)), |scope| {
            let logits = net.model.call(scope, &x, true)?;
            losses::sparse_categorical_crossentropy(&y, &logits, true)
        })
        .unwrap();
        losses.push(loss.to_f64().unwrap());
        per_var.push(vars.iter().map(|v| grads.get(v).unwrap().clone()).collect());
    }
    for (k, var) in vars.iter().enumerate() {
        let parts: Vec<Tensor> = per_var.iter().map(|g| g[k].clone()).collect();
        let want = tree_sum(&parts).unwrap().div(Tensor::scalar(5.0f32)).unwrap();
        assert!(out.grads.get(var).unwrap().bit_eq(&want), "`{}`", var.path());
    }
    let loss = ((((losses[0] + losses[1]) + (losses[2] + losses[3])) + losses[4]) / 5.0) as f32;
    assert_eq!(out.loss.to_bits(), loss.to_bits());
    assert_eq!(out.micro_batches, 5);
}

#[test]
fn each_micro_batch_draws_its_own_dropout_mask_whatever_replica_runs_it() {
    let (state, net) = build_net(true);
    // Four identical micro-batches: only the random stream tells them apart.
    let one = batch(2, 9);
    let x = purestate::ops::concatenate(&[&one.0, &one.0, &one.0, &one.0], 0).unwrap();
    let y = purestate::ops::concatenate(&[&one.1, &one.1, &one.1, &one.1], 0).unwrap();
    let data = (x, y);
    let losses = |replicas: usize| {
        let seen = std::sync::Mutex::new(vec![0.0f32; 4]);
        Replicas::in_process(replicas)
            .unwrap()
            .micro_batch(2)
            .unwrap()
            .step(&state, 8, |ctx, st| {
                let out = micro_step(&net, &data, ctx, st)?;
                seen.lock().unwrap()[ctx.micro_batch()] = out.loss;
                Ok(out)
            })
            .unwrap();
        seen.into_inner().unwrap()
    };
    let on_one = losses(1);
    assert!(on_one.windows(2).any(|w| w[0] != w[1]), "masks differ between micro-batches: {on_one:?}");
    for replicas in [2, 3, 4] {
        assert_eq!(losses(replicas), on_one, "{replicas} replicas");
    }
}

#[test]
fn a_run_resumes_on_another_replica_count_to_the_same_head() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (len, micro) = (12, 2);
    let steps = |trainer: &mut Trainer, net: &Net, replicas: usize, from: u32, to: u32| {
        let runner = Replicas::in_process(replicas).unwrap().micro_batch(micro).unwrap();
        for s in from..to {
            let data = batch(len, s);
            let out = runner.step(trainer.state(), len, |ctx, st| micro_step(net, &data, ctx, st)).unwrap();
            trainer.commit(net.opt.apply(out.state, &out.grads).unwrap()).unwrap();
        }
    };
    // Uninterrupted, on 1 replica.
    let (state, net) = build_net(true);
    let mut whole: Trainer = Trainer::new(state);
    steps(&mut whole, &net, 1, 0, 6);
    // 3 steps on 2 replicas into a run directory; the process ends; 3 more on 3 replicas, then on 5.
    {
        let (state, net) = build_net(true);
        let mut trainer: Trainer = Trainer::create_run(&run, state, RunOptions::default()).unwrap();
        steps(&mut trainer, &net, 2, 0, 3);
        trainer.flush().unwrap();
    }
    let (template, net) = build_net(true);
    let mut trainer: Trainer = Trainer::open_run(&run, RunOptions::default()).unwrap();
    trainer.rebind(&template).unwrap();
    steps(&mut trainer, &net, 3, 3, 5);
    steps(&mut trainer, &net, 5, 5, 6);
    assert_eq!(trainer.head(), 6);
    assert_eq!(trainer.fingerprint(6).unwrap(), whole.fingerprint(6).unwrap());
}

#[test]
fn batches_that_cannot_be_split_are_typed_errors() {
    let (state, net) = build_net(false);
    let data = batch(10, 0);
    let step = |ctx: &ReplicaContext, st: StateStore| micro_step(&net, &data, ctx, st);
    let err = Replicas::in_process(2).unwrap().micro_batch(4).unwrap().step(&state, 10, step).unwrap_err();
    assert!(matches!(err, Error::BatchSplit { batch_len: 10, micro_batch: Some(4), replicas: 2, .. }));
    assert_eq!(
        err.to_string(),
        "a batch of 10 examples on 2 replicas in micro-batches of 4: not a whole number of micro-batches (2 and 2 \
         left over); allow a shorter last one with `allow_partial_micro_batch(true)` or change the batch"
    );
    // Allowed explicitly: the short micro-batch weighs half, and the runner reports the choice.
    let partial = Replicas::in_process(2).unwrap().micro_batch(4).unwrap().allow_partial_micro_batch(true);
    assert!(partial.micro_batching().unwrap().partial_last);
    assert_eq!(partial.step(&state, 10, step).unwrap().micro_batches, 3);
    let err = Replicas::in_process(6).unwrap().micro_batch(2).unwrap().step(&state, 10, step).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a batch of 10 examples on 6 replicas in micro-batches of 2: 5 micro-batches cannot feed 6 replicas"
    );
    assert!(matches!(Replicas::in_process(2).unwrap().micro_batch(0), Err(Error::InvalidArgument { arg: "size", .. })));
    let runner = Replicas::in_process(2).unwrap().micro_batch(2).unwrap();
    let err = runner.check_micro_batch(5).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the run was recorded with micro-batches of 5 examples, but this runner uses micro-batches of 2 examples: \
         resume with the recorded size"
    );
    let err = Replicas::in_process(2).unwrap().check_micro_batch(5).unwrap_err();
    assert!(matches!(err, Error::MicroBatchMismatch { recorded: 5, got: None }));
}

#[test]
fn micro_batches_assigning_different_values_to_a_none_variable_conflict() {
    let mut state = StateStore::new();
    let v = state
        .create(purestate::VariableSpec::new(Tensor::scalar(0.0f32)).name("v").trainable(false).aggregation("none"))
        .unwrap();
    let runner = Replicas::in_process(2).unwrap().micro_batch(1).unwrap();
    let err = runner
        .step(&state, 4, |ctx, mut st| {
            st.assign(&v, Tensor::scalar(ctx.micro_batch() as f32))?;
            Ok(ReplicaOutput { state: st, grads: Grads::new(), loss: 0.0 })
        })
        .unwrap_err();
    assert!(matches!(err, Error::ReplicaConflict { micro_batches: 4, .. }));
}
