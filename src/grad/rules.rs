//! The backward rules, one per differentiable operation, each called from that operation's single entry point
//! in [`crate::ops`] (or [`crate::tensor`]) when an operand is traced.
//!
//! Every rule follows JAX's (jax/_src/lax/lax.py, JAX 0.10): the forward value is computed by the same
//! untraced operation, the rule saves only the tensors its backward needs, and the backward computes with the
//! same kernels (parallel, fixed-order reductions). Kinks follow JAX exactly:
//!
//! | op | cotangent of the inputs (`g` the output's, `z` the output) |
//! | --- | --- |
//! | `add`, `subtract` | `g`, `±g` |
//! | `multiply` | `g * y`, `x * g` |
//! | `divide` | `g / y`, `(-g * x) * (1 / (y * y))` |
//! | `power` | `g * (y == 0 ? 0 : y * x^(y-1))`, `g * (log(x == 0 ? 1 : x) * z)` |
//! | `mod` (floor modulo) | `g`, `[adjusted] * g - g * trunc(x / y)`: JAX's `remainder`, `-g * floor(x / y)` |
//! | `maximum`, `minimum` | `g * [x == z] / (y == z ? 2 : 1)`: equal operands share the gradient half and half |
//! | `absolute` | `x >= 0 ? g : -g` (so +g at 0 and -0.0) |
//! | `relu` | `x > 0 ? g : 0` |
//! | `square`, `sqrt`, `exp`, `log`, `log1p`, `expm1` | `g * (2 * x)`, `g * (0.5 / z)`, `g * z`, `g / x`, `g / (x + 1)`, `g * (z + 1)` |
//! | `tanh`, `sigmoid` | `(g + g * z) * (1 - z)`, `g * (z * (1 - z))` |
//! | `where` | `select(c, g, 0)`, `select(c, 0, g)` (a zero, not nothing: `0 * inf` in a branch stays NaN) |
//! | `sum`, `mean` | `g` broadcast back, `g / n` broadcast back |
//! | `max`, `min` | `[x == z] * (g / count(x == z))`: tied extremes share equally |
//! | `norm` | `2 * ((g * (0.5 / z)) * x)` |
//! | `matmul` | `g @ yᵀ`, `xᵀ @ g`, with batch axes summed where they were broadcast |
//! | `softmax` | `z * g - z * sum(z * g)` (JAX's custom JVP) |
//! | `log_softmax` | `g - exp(z) * sum(g)` |
//! | shape ops, indexing | the inverse view; a slice's cotangent is scattered into zeros |
//! | casts | the cotangent cast back (float to float; integer and bool operands get none) |
//!
//! Operations whose JAX gradient is zero everywhere (`sign`, `round`, `floor_divide`, comparisons, `argmax`)
//! return untraced results, which is the same as a zero gradient.

use ndarray::{IxDyn, SliceInfo, SliceInfoElem};

use super::tape::{record, ArgLink, Backward, Link};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels;
use crate::ops::num::Float;
use crate::ops::{reduce, where_, with_float, Arg, Axes, BinaryOp, ReduceOp, UnaryOp, DEFAULT_FLOATX};
use crate::tensor::Tensor;

const F: DType = DEFAULT_FLOATX;

/// `f` elementwise over two float tensors of one dtype, broadcast together, computing in the dtype's
/// compute type (`$x`, `$y` are `f32` for 16-bit floats).
macro_rules! ew2 {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {{
        let (a, b): (&Tensor, &Tensor) = (&$a, &$b);
        with_float!(a.dtype(), T => {
            let (av, bv) = (a.array::<T>()?.view(), b.array::<T>()?.view());
            let out = kernels::zip_map("grad", &av, &bv, |$x: T, $y: T| {
                let ($x, $y) = ($x.up(), $y.up());
                <T as Float>::down($body)
            })?;
            Ok::<Tensor, Error>(Tensor::from(out))
        }, _ => Err(Error::UnsupportedDType { op: "grad", dtype: a.dtype() }))
    }};
}

/// As [`ew2`] over three tensors.
macro_rules! ew3 {
    ($a:expr, $b:expr, $c:expr, |$x:ident, $y:ident, $z:ident| $body:expr) => {{
        let (a, b, c): (&Tensor, &Tensor, &Tensor) = (&$a, &$b, &$c);
        with_float!(a.dtype(), T => {
            let (av, bv, cv) = (a.array::<T>()?.view(), b.array::<T>()?.view(), c.array::<T>()?.view());
            let out = kernels::zip3_map("grad", &av, &bv, &cv, |$x: T, $y: T, $z: T| {
                let ($x, $y, $z) = ($x.up(), $y.up(), $z.up());
                <T as Float>::down($body)
            })?;
            Ok::<Tensor, Error>(Tensor::from(out))
        }, _ => Err(Error::UnsupportedDType { op: "grad", dtype: a.dtype() }))
    }};
}

fn both(
    need: &[bool],
    a: impl FnOnce() -> Result<Tensor>,
    b: impl FnOnce() -> Result<Tensor>,
) -> Result<Vec<Option<Tensor>>> {
    let a = if need[0] { Some(a()?) } else { None };
    let b = if need[1] { Some(b()?) } else { None };
    Ok(vec![a, b])
}

/// A traced `binary`: see [`crate::ops::binary`].
pub(crate) fn binary(op: BinaryOp, lhs: Arg<'_>, rhs: Arg<'_>, floatx: DType) -> Result<Tensor> {
    use BinaryOp::*;
    let name = op.name();
    let (compute, _) = op.dtypes(lhs.operand(), rhs.operand(), floatx)?;
    let links = vec![lhs.link(), rhs.link()];
    let (lhs, rhs) = (lhs.detach(), rhs.detach());
    let differentiable = matches!(op, Add | Subtract | Multiply | Divide | Mod | Power | Maximum | Minimum);
    if !compute.is_float() || !differentiable {
        return crate::ops::binary(op, lhs, rhs, floatx);
    }
    crate::kernels::broadcast_shapes(name, lhs.dims(), rhs.dims())?;
    let x = lhs.into_tensor(compute, name)?;
    let y = rhs.into_tensor(compute, name)?;
    let saved = (!matches!(op, Add | Subtract)).then(|| (x.clone(), y.clone()));
    let z = crate::ops::binary(op, x, y, floatx)?;
    let rule: Backward = match (op, saved) {
        (Add, _) => Box::new(|g, need| Ok(vec![need[0].then(|| g.clone()), need[1].then(|| g.clone())])),
        (Subtract, _) => Box::new(|g, need| both(need, || Ok(g.clone()), || g.neg())),
        (Multiply, Some((x, y))) => Box::new(move |g, need| both(need, || g.mul(&y), || x.mul(g))),
        (Divide, Some((x, y))) => {
            Box::new(move |g, need| both(need, || g.div(&y), || ew3!(g, x, y, |g, x, y| (-g * x) * (1.0 / (y * y)))))
        }
        (Mod, Some((x, y))) => Box::new(move |g, need| {
            // jax/_src/numpy/ufuncs.py `remainder` (JAX 0.10): `rem(x, y)`, plus `y` where the signs of the
            // remainder and `y` differ; the quotient rounds as JAX's does (in the dtype, then sign * floor(|q|)).
            both(
                need,
                || g.add(0.0), // JAX adds the two selected branches: `g + 0`
                || {
                    ew3!(g, x, y, |g, x, y| {
                        let q = <T as Float>::down(x / y).up();
                        let t = if q < 0.0 { -(-q).floor() } else { q.floor() };
                        (if floor_mod_adjusted(x, y) { g } else { 0.0 }) + -(g * t)
                    })
                },
            )
        }),
        (Power, Some((x, y))) => {
            let z = z.clone();
            Box::new(move |g, need| {
                both(
                    need,
                    || ew3!(g, x, y, |g, x, y| g * if y == 0.0 { 0.0 } else { y * x.powf(y - 1.0) }),
                    || ew3!(g, x, z, |g, x, z| g * ((if x == 0.0 { 1.0 } else { x }).ln() * z)),
                )
            })
        }
        (Maximum | Minimum, Some((x, y))) => {
            let z = z.clone();
            Box::new(move |g, need| {
                let share = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
                    let f =
                        ew3!(a, b, z, |a, b, z| (if a == z { 1.0 } else { 0.0 }) / (if b == z { 2.0 } else { 1.0 }))?;
                    g.mul(&f)
                };
                both(need, || share(&x, &y), || share(&y, &x))
            })
        }
        _ => unreachable!("differentiable binary ops are matched above"),
    };
    Ok(record(z, links, rule))
}

/// True where floor modulo adds `y` to the truncated remainder: JAX's `remainder` select.
fn floor_mod_adjusted<C: Copy + PartialOrd + std::ops::Rem<Output = C> + From<f32>>(x: C, y: C) -> bool {
    let zero = C::from(0.0);
    let r = x % y;
    r != zero && ((r < zero) != (y < zero))
}

/// A traced `unary`: see [`crate::ops::unary`].
pub(crate) fn unary(op: UnaryOp, x: Arg<'_>, floatx: DType) -> Result<Tensor> {
    use UnaryOp::*;
    let links = vec![x.link()];
    let x = x.detach();
    let input = crate::dtype::result_type(&[x.operand()], floatx);
    let compute = op.dtype(input, floatx)?;
    let differentiable =
        matches!(op, Negative | Abs | Square | Sqrt | Exp | Log | Log1p | Expm1 | Tanh | Sigmoid | Relu);
    if !compute.is_float() || !differentiable {
        return crate::ops::unary(op, x, floatx);
    }
    let x = x.into_tensor(compute, op.name())?;
    let saved_x = matches!(op, Abs | Square | Log | Log1p | Relu).then(|| x.clone());
    let z = crate::ops::unary(op, x, floatx)?;
    let saved_z = matches!(op, Sqrt | Exp | Expm1 | Tanh | Sigmoid).then(|| z.clone());
    let saved = saved_x.or(saved_z);
    let rule: Backward = Box::new(move |g, _| {
        let s = saved.as_ref();
        let s = || s.expect("saved above");
        let gx = match op {
            Negative => g.neg()?,
            Abs => ew2!(g, s(), |g, x| if x >= 0.0 { g } else { -g })?,
            Square => ew2!(g, s(), |g, x| g * (2.0 * x))?,
            Sqrt => ew2!(g, s(), |g, z| g * (0.5 / z))?,
            Exp => ew2!(g, s(), |g, z| g * z)?,
            Log => ew2!(g, s(), |g, x| g / x)?,
            Log1p => ew2!(g, s(), |g, x| g / (x + 1.0))?,
            Expm1 => ew2!(g, s(), |g, z| g * (z + 1.0))?,
            Tanh => ew2!(g, s(), |g, z| (g + g * z) * (1.0 - z))?,
            Sigmoid => ew2!(g, s(), |g, z| g * (z * (1.0 - z)))?,
            Relu => ew2!(g, s(), |g, x| if x > 0.0 { g } else { 0.0 })?,
            _ => unreachable!("differentiable unary ops are matched above"),
        };
        Ok(vec![Some(gx)])
    });
    Ok(record(z, links, rule))
}

/// A traced `where`: see [`crate::ops::where_`].
pub(crate) fn where_traced(cond: Arg<'_>, x: Arg<'_>, y: Arg<'_>, floatx: DType) -> Result<Tensor> {
    let links = vec![x.link(), y.link()];
    let (cond, x, y) = (cond.detach(), x.detach(), y.detach());
    let dtype = crate::dtype::result_type(&[x.operand(), y.operand()], floatx);
    let c = cond.into_tensor(DType::Bool, "where")?;
    let z = where_(&c, x, y, floatx)?;
    if !dtype.is_float() {
        return Ok(z);
    }
    let rule: Backward = Box::new(move |g, need| {
        let zero = Tensor::zeros([], g.dtype());
        both(need, || where_(&c, g, &zero, F), || where_(&c, &zero, g, F))
    });
    Ok(record(z, links, rule))
}

/// A traced reduction: see [`crate::ops::reduce`].
pub(crate) fn reduce_traced(op: ReduceOp, x: &Tensor, axes: Axes, keepdims: bool, floatx: DType) -> Result<Tensor> {
    let links = vec![Link::of(x)];
    let x = x.detached();
    let z = reduce(op, &x, axes.clone(), keepdims, floatx)?;
    if !x.dtype().is_float() {
        return Ok(z);
    }
    let dims = x.dims().to_vec();
    let keep = kept_dims(&dims, &axes);
    let keep_i: Vec<isize> = keep.iter().map(|&d| d as isize).collect();
    let n = dims.iter().product::<usize>() / keep.iter().product::<usize>().max(1);
    let zk = z.reshape(&keep_i)?;
    let rule: Backward = Box::new(move |g, _| {
        let gk = g.reshape(&keep_i)?;
        let gx = match op {
            ReduceOp::Sum => gk.broadcast_to(dims.as_slice())?,
            ReduceOp::Mean => gk.div(n as f64)?.broadcast_to(dims.as_slice())?,
            ReduceOp::Max | ReduceOp::Min => {
                let hit = ew2!(x, zk, |x, z| if x == z { 1.0 } else { 0.0 })?;
                let count = reduce(ReduceOp::Sum, &hit, axes, true, F)?;
                hit.mul(&gk.div(&count)?)?
            }
            ReduceOp::Norm => {
                let gs = ew2!(gk, zk, |g, z| g * (0.5 / z))?;
                ew2!(x, gs, |x, s| 2.0 * (s * x))?
            }
        };
        Ok(vec![Some(gx)])
    });
    Ok(record(z, links, rule))
}

/// The input's dimensions with the reduced axes set to 1. The axes were validated by the forward pass.
fn kept_dims(dims: &[usize], axes: &Axes) -> Vec<usize> {
    match axes {
        Axes::All => vec![1; dims.len()],
        Axes::These(list) => {
            let n = dims.len() as isize;
            let mut out = dims.to_vec();
            for &a in list {
                out[(if a < 0 { a + n } else { a }) as usize] = 1;
            }
            out
        }
    }
}

/// A traced `matmul`: see [`crate::ops::matmul`].
pub(crate) fn matmul_traced(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let links = vec![Link::of(a), Link::of(b)];
    let (a, b) = (a.detached(), b.detached());
    let z = crate::ops::matmul(&a, &b)?;
    if !z.dtype().is_float() {
        return Ok(z);
    }
    let (a, b) = (a.cast(z.dtype()), b.cast(z.dtype()));
    if a.ndim() > 2 && b.ndim() == 2 && b.dims()[0] > 0 {
        // (..., m, k) @ (k, n): the kernel's cotangent is one product over all the leading rows,
        // (rows, k)^T @ (rows, n), rather than a product per batch entry summed afterwards.
        let rule: Backward = Box::new(move |g, need| {
            let (k, n) = (b.dims()[0] as isize, b.dims()[1] as isize);
            both(
                need,
                || crate::ops::matmul(g, &swap_last(&b)?),
                || crate::ops::matmul(&swap_last(&a.reshape(&[-1, k])?)?, &g.reshape(&[-1, n])?),
            )
        });
        return Ok(record(z, links, rule));
    }
    let rule: Backward = Box::new(move |g, need| {
        let as_matrix = |t: &Tensor, col: bool| -> Result<Tensor> {
            match (t.ndim(), col) {
                (1, false) => t.reshape(&[1, -1]),
                (1, true) => t.reshape(&[-1, 1]),
                _ => Ok(t.clone()),
            }
        };
        let (a2, b2) = (as_matrix(&a, false)?, as_matrix(&b, true)?);
        let mut gd: Vec<usize> = g.dims().to_vec();
        if a.ndim() == 1 {
            gd.insert(gd.len() - usize::from(b.ndim() != 1), 1);
        }
        if b.ndim() == 1 {
            gd.push(1);
        }
        let g2 = g.reshape(&gd.iter().map(|&d| d as isize).collect::<Vec<_>>())?;
        let back = |ct: Tensor, full: &Tensor, orig: &Tensor| -> Result<Tensor> {
            let ct = super::tape::unbroadcast(ct, full.dims())?;
            ct.reshape(&orig.dims().iter().map(|&d| d as isize).collect::<Vec<_>>())
        };
        both(
            need,
            || back(crate::ops::matmul(&g2, &swap_last(&b2)?)?, &a2, &a),
            || back(crate::ops::matmul(&swap_last(&a2)?, &g2)?, &b2, &b),
        )
    });
    Ok(record(z, links, rule))
}

fn swap_last(t: &Tensor) -> Result<Tensor> {
    let n = t.ndim() as isize;
    let mut order: Vec<isize> = (0..n).collect();
    order.swap((n - 1) as usize, (n - 2) as usize);
    t.permute(&order)
}

/// A traced cast between dtypes (see [`Tensor::cast`]): the cotangent is cast back by the sweep.
pub(crate) fn cast(x: &Tensor, dtype: DType) -> Tensor {
    let z = x.detached().cast(dtype);
    if !dtype.is_float() {
        return z;
    }
    record(z, vec![Link::of(x)], Box::new(|g, _| Ok(vec![Some(g.clone())])))
}

/// Records a view or shape change of `x` whose cotangent is `back(g)` (in `x`'s shape).
pub(crate) fn view(x: &Tensor, z: Tensor, back: impl FnOnce(&Tensor) -> Result<Tensor> + Send + 'static) -> Tensor {
    if x.trace().is_none() {
        return z;
    }
    record(z, vec![Link::of(x)], Box::new(move |g, _| Ok(vec![Some(back(g)?)])))
}

/// Records `z` as computed from `inputs` with the backward `back` (an operation whose rule is written beside
/// its forward in `ops`, through `ops::trace::custom`).
pub(crate) fn custom(inputs: &[&Tensor], z: Tensor, back: crate::ops::trace::CustomBack) -> Tensor {
    let links = inputs.iter().map(|t| Link::of(t)).collect();
    record(z, links, back)
}

/// Records a reshape of `x` (any view with the same elements in the same order): the cotangent is reshaped.
pub(crate) fn reshaped(x: &Tensor, z: Tensor) -> Tensor {
    let dims: Vec<isize> = x.dims().iter().map(|&d| d as isize).collect();
    view(x, z, move |g| g.reshape(&dims))
}

/// Records `x.permute(order)`: the cotangent is permuted back.
pub(crate) fn permuted(x: &Tensor, z: Tensor, order: &[usize]) -> Tensor {
    let mut inverse = vec![0isize; order.len()];
    for (i, &o) in order.iter().enumerate() {
        inverse[o] = i as isize;
    }
    view(x, z, move |g| g.permute(&inverse))
}

/// Records an indexing of `x` by `info`: the cotangent is scattered into zeros of `x`'s shape.
pub(crate) fn indexed(x: &Tensor, z: Tensor, info: SliceInfo<Vec<SliceInfoElem>, IxDyn, IxDyn>) -> Tensor {
    let (dims, dtype) = (x.dims().to_vec(), x.dtype());
    view(x, z, move |g| {
        let mut out = Tensor::zeros(dims.as_slice(), dtype);
        with_float!(dtype, T => {
            let gv = g.array::<T>()?.view();
            out.array_mut::<T>()?.slice_mut(&info).assign(&gv);
        }, _ => return Err(Error::UnsupportedDType { op: "index", dtype }));
        Ok(out)
    })
}

/// A traced softmax along `axis` (fused: `z * g - z * sum(z * g)`).
pub(crate) fn softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    let z = x.detached().softmax(axis)?;
    let saved = z.clone();
    let rule: Backward = Box::new(move |g, _| {
        let zg = saved.mul(g)?;
        let s = reduce(ReduceOp::Sum, &zg, axis, true, F)?;
        Ok(vec![Some(ew3!(zg, saved, s, |a, z, s| a - z * s)?)])
    });
    Ok(record(z, vec![Link::of(x)], rule))
}

/// A traced log-softmax along `axis` (fused: `g - exp(z) * sum(g)`).
pub(crate) fn log_softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    let z = x.detached().log_softmax(axis)?;
    let saved = z.clone();
    let rule: Backward = Box::new(move |g, _| {
        let s = reduce(ReduceOp::Sum, g, axis, true, F)?;
        Ok(vec![Some(ew3!(g, saved, s, |g, z, s| g - z.exp() * s)?)])
    });
    Ok(record(z, vec![Link::of(x)], rule))
}

/// Records a fused loss: `loss` (0-d) computed from `pred`, whose cotangent is `back(g)` in `pred`'s shape
/// and compute dtype.
pub(crate) fn loss_node(
    pred: &Tensor,
    loss: Tensor,
    back: impl FnOnce(&Tensor) -> Result<Tensor> + Send + 'static,
) -> Tensor {
    record(loss, vec![Link::of(pred)], Box::new(move |g, _| Ok(vec![Some(back(g)?)])))
}
