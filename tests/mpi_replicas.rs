//! The MPI backend against the in-process runner: run under `mpirun -np N` (N = 2, 4, ...), every rank checks
//! that N MPI ranks give, bit for bit, what N in-process replicas give, for gradients, every aggregation and
//! synchronization, float16 values, and failures.
//!
//! ```text
//! cargo build --release --features mpi --test mpi_replicas
//! mpirun -np 4 --oversubscribe target/release/deps/mpi_replicas-<hash>
//! ```
//!
//! (`harness = false`: MPI can be initialized once per process, so this is one `main`, not a test list.)

use purestate::grad::{self, Grads};
use purestate::optim::{Optimizer, Sgd};
use purestate::replica::{Combined, ReplicaContext, ReplicaOutput, Replicas};
use purestate::{init, losses, random::Key, Error, Result, StateStore, Tensor, Variable, VariableSpec};

const FEATURES: usize = 6;
const CLASSES: usize = 4;

struct Model {
    w: Variable,
    b: Variable,
    running: Variable,
    half: Variable,
    first: Variable,
    steps: Variable,
    seen: Variable,
    loss_sum: Variable,
    lonely: Variable,
}

fn spec(name: &str, aggregation: &str, synchronization: &str) -> VariableSpec {
    VariableSpec::new(init::Zeros).name(name).trainable(false).aggregation(aggregation).synchronization(synchronization)
}

fn model() -> Result<(StateStore, Model)> {
    let mut s = StateStore::new();
    let w = s.create(VariableSpec::new(init::GlorotUniform).shape([FEATURES, CLASSES]).name("w").seed(Key::new(5)))?;
    let b = s.create(VariableSpec::new(init::Zeros).shape([CLASSES]).name("b"))?;
    let running = s.create(spec("running", "mean", "auto").shape([FEATURES]))?;
    let half = s.create(spec("half", "mean", "on_write").shape([FEATURES]).dtype("float16"))?;
    let first = s.create(spec("first", "only_first_replica", "auto").shape([]))?;
    let steps = s.create(spec("steps", "sum", "on_write").shape([]).dtype("int32"))?;
    let seen = s.create(spec("seen", "sum", "on_read").shape([]).dtype("int64"))?;
    let loss_sum = s.create(spec("loss_sum", "mean", "on_read").shape([]))?;
    let lonely = s.create(spec("lonely", "none", "auto").shape([]))?;
    Ok((s, Model { w, b, running, half, first, steps, seen, loss_sum, lonely }))
}

fn batch(len: usize, seed: u32) -> (Vec<f32>, Vec<usize>) {
    let x = (0..len * FEATURES)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed.wrapping_mul(40503)) % 997) as f32 / 498.5 - 1.0)
        .collect();
    let y = (0..len).map(|i| (i * 5 + seed as usize) % CLASSES).collect();
    (x, y)
}

/// Softmax regression (its gradient by `grad::value_and_grad`), plus an assignment to every kind of variable.
fn step(m: &Model, data: &(Vec<f32>, Vec<usize>), ctx: &ReplicaContext, mut s: StateStore) -> Result<ReplicaOutput> {
    let r = ctx.range();
    let n = r.len();
    let x = Tensor::from_shape_vec([n, FEATURES], data.0[r.start * FEATURES..r.end * FEATURES].to_vec())?;
    let labels = Tensor::from_shape_vec([n], data.1[r].iter().map(|&c| c as i64).collect())?;
    let (loss, grads) = grad::value_and_grad(&s, |scope| {
        let logits = x.matmul(&scope.get(&m.w)?)?.add(&scope.get(&m.b)?)?;
        losses::sparse_categorical_crossentropy(&labels, &logits, true)
    })?;
    let loss = loss.to_f64()? as f32;
    let mean_x = x.mean(0, false)?;
    s.assign(&m.running, s.get(&m.running)?.mul(0.9f32)?.add(&mean_x.mul(0.1f32)?)?)?;
    s.assign(&m.half, mean_x.mul(1.0f32 / 3.0)?)?;
    s.assign(&m.first, Tensor::scalar(ctx.replica() as f32 + loss))?;
    s.assign_add(&m.steps, Tensor::scalar(1i32))?;
    s.assign_add(&m.seen, Tensor::scalar(n as i64))?;
    s.assign_add(&m.loss_sum, Tensor::scalar(loss))?;
    // One assigner: the last replica without micro-batching, the last micro-batch with (whoever runs it).
    let last = if ctx.micro_batches() == ctx.num_replicas() {
        ctx.replica() == ctx.num_replicas() - 1
    } else {
        ctx.micro_batch() == ctx.micro_batches() - 1
    };
    if last {
        s.assign(&m.lonely, Tensor::scalar(loss))?;
    }
    Ok(ReplicaOutput { state: s, grads, loss })
}

fn same(a: &Combined, b: &Combined, what: &str) {
    assert_eq!(a.state.fingerprint(), b.state.fingerprint(), "{what}: states differ");
    assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "{what}: losses differ");
    for ((va, ga), (vb, gb)) in a.grads.iter().zip(b.grads.iter()) {
        assert!(va == vb && ga.bit_eq(gb), "{what}: gradient of `{}` differs", va.path());
    }
    for (var, value) in a.state.iter() {
        assert!(value.bit_eq(&b.state.get(var).unwrap()), "{what}: `{}` differs", var.path());
    }
}

fn main() {
    let mpi = Replicas::mpi().expect("MPI initializes");
    let (n, rank) = (mpi.num_replicas(), mpi.rank());
    let local = Replicas::in_process(n).unwrap();
    assert!(matches!(Replicas::mpi(), Err(Error::Mpi { op: "initialize", .. })));

    let (mut state, m) = model().unwrap();
    let mut opt = Sgd::new(0.3);
    opt.build(&mut state, &[m.w.clone(), m.b.clone()]).unwrap();
    let started = std::time::Instant::now();
    let mut examples = 0i64;
    for s in 0..6u32 {
        // Uneven shards: 4n + 3 examples.
        let len = 4 * n + 3 + s as usize % 2;
        let data = batch(len, s);
        let over_mpi = mpi.step(&state, len, |ctx, st| step(&m, &data, ctx, st)).unwrap();
        let in_process = local.step(&state, len, |ctx, st| step(&m, &data, ctx, st)).unwrap();
        same(&over_mpi, &in_process, &format!("step {s}"));
        let mpi_locals = mpi.local_values(&over_mpi.state, &m.seen).unwrap();
        let process_locals = local.local_values(&in_process.state, &m.seen).unwrap();
        assert!(mpi_locals.iter().zip(&process_locals).all(|(a, b)| a.bit_eq(b)), "step {s}: per-replica values");
        examples += len as i64;
        assert_eq!(over_mpi.state.get(&m.seen).unwrap().to_i64().unwrap(), examples, "step {s}: seen");
        assert_eq!(over_mpi.state.get(&m.steps).unwrap().to_i64().unwrap(), (s as i64 + 1) * n as i64);
        state = opt.apply(over_mpi.state, &over_mpi.grads).unwrap();
        mpi.verify_fingerprint(&state).unwrap();
    }
    let elapsed = started.elapsed();

    // Aggregation none: ranks assigning different values see the same conflict (bit-identical values, as a seed
    // state every rank advanced alike, are one value and accepted).
    let err = mpi
        .step(&state, n, |ctx, mut st| {
            st.assign(&m.lonely, Tensor::scalar(ctx.replica() as f32))?;
            Ok(ReplicaOutput { state: st, grads: Grads::new(), loss: 0.0 })
        })
        .unwrap_err();
    assert!(matches!(&err, Error::ReplicaConflict { path, option: "aggregation", .. } if path == "lonely"), "{err}");

    // A failing rank: its own error there, `ReplicaFailed` naming it elsewhere; nobody hangs.
    let failing = n - 1;
    let err = mpi
        .step(&state, n, |ctx, st| {
            if ctx.replica() == failing {
                return Err(Error::UnknownPath { path: "missing".into() });
            }
            Ok(ReplicaOutput { state: st, grads: Grads::new(), loss: 0.0 })
        })
        .unwrap_err();
    if rank == failing {
        assert!(matches!(err, Error::UnknownPath { .. }), "{err}");
    } else {
        assert!(
            matches!(&err, Error::ReplicaFailed { replica, reason } if *replica == failing && reason.contains("missing"))
        );
    }

    // A rank holding another state is named by every rank.
    let mut diverged = state.clone();
    if rank == n - 1 && n > 1 {
        diverged.assign_add(&m.first, Tensor::scalar(1.0f32)).unwrap();
    }
    let check = mpi.verify_fingerprint(&diverged);
    if n > 1 {
        assert!(matches!(check, Err(Error::ReplicaDivergence { replica, .. }) if replica == n - 1));
    }

    // With a micro-batch size the bits do not depend on the number of ranks: N ranks equal 1 and 3 in-process
    // replicas, and each rank sends only the partial sums of its micro-batches.
    let mpi = mpi.micro_batch(2).unwrap().allow_partial_micro_batch(true);
    let one = Replicas::in_process(1).unwrap().micro_batch(2).unwrap().allow_partial_micro_batch(true);
    let three = Replicas::in_process(3).unwrap().micro_batch(2).unwrap().allow_partial_micro_batch(true);
    let grad_bytes: usize = [&m.w, &m.b].iter().map(|v| v.shape().size() * 4).sum();
    let mut sent = Vec::new();
    for s in 0..4u32 {
        let len = 4 * n + 3 + s as usize % 2;
        let data = batch(len, 100 + s);
        let over_mpi = mpi.step(&state, len, |ctx, st| step(&m, &data, ctx, st)).unwrap();
        let on_one = one.step(&state, len, |ctx, st| step(&m, &data, ctx, st)).unwrap();
        let on_three = three.step(&state, len, |ctx, st| step(&m, &data, ctx, st)).unwrap();
        let (seen_mpi, seen_one) = (over_mpi.state.get(&m.seen).unwrap(), on_one.state.get(&m.seen).unwrap());
        assert!(seen_mpi.bit_eq(&seen_one), "micro-batched step {s}: seen");
        for c in [&over_mpi, &on_one, &on_three] {
            let mut c = c.clone();
            // `on_read` aggregates of float values depend on how examples fell on replicas (documented).
            c.state.assign(&m.loss_sum, Tensor::scalar(0.0f32)).unwrap();
            let mut base = on_one.clone();
            base.state.assign(&m.loss_sum, Tensor::scalar(0.0f32)).unwrap();
            same(&c, &base, &format!("micro-batched step {s}"));
        }
        sent.push(over_mpi.sent_bytes.expect("bytes sent over MPI"));
        state = opt.apply(over_mpi.state, &over_mpi.grads).unwrap();
        mpi.verify_fingerprint(&state).unwrap();
    }
    let most = *sent.iter().max().unwrap();

    let fingerprint = mpi.verify_fingerprint(&state).unwrap();
    if mpi.is_primary() {
        println!(
            "mpi_replicas: {n} ranks equal {n} in-process replicas bit for bit over 6 steps ({:.1} ms of MPI steps), \
             state {fingerprint}; micro-batched, {n} ranks equal 1 and 3 in-process replicas bit for bit over 4 \
             steps; rank 0 sent at most {most} bytes per step (one gradient: {grad_bytes} bytes)",
            elapsed.as_secs_f64() * 1e3
        );
    }
}
