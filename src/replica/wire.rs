//! The bytes a [`Contribution`] travels in between MPI ranks: little-endian, length-prefixed, with each
//! tree node's level and index, each loss as `f64` bits, and each tensor's dtype name, dims and row-major
//! element bytes. A failed step travels as its message.
//!
//! Compiled with the `mpi` feature (and for tests): the in-process runner never serializes.

#![cfg_attr(not(feature = "mpi"), allow(dead_code))]

use std::str::FromStr;

use super::combine::{Contribution, Partial, Single};
use super::tree::Node;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{with_dtype, Element, Shape, Tensor};

const MAGIC: &[u8; 8] = b"psrepl02";

/// Encodes a replica's contribution, or the message of its failed step.
pub(crate) fn encode(part: &Result<Contribution>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    match part {
        Err(err) => {
            out.push(0);
            put_bytes(&mut out, err.to_string().as_bytes());
        }
        Ok(part) => {
            out.push(1);
            put_u64(&mut out, part.batch_len as u64);
            put_u64(&mut out, part.nodes.len() as u64);
            for (node, partial) in &part.nodes {
                put_u64(&mut out, u64::from(node.level));
                put_u64(&mut out, node.index as u64);
                out.extend_from_slice(&partial.loss.to_le_bytes());
                put_list(&mut out, &partial.grads);
                put_list(&mut out, &partial.deltas);
            }
            put_list(&mut out, &part.first);
            put_u64(&mut out, part.single.len() as u64);
            for single in &part.single {
                put_u64(&mut out, single.index as u64);
                put_tensor(&mut out, &single.value);
                put_u64(&mut out, single.count as u64);
                out.push(u8::from(single.conflict));
            }
            put_list(&mut out, &part.local);
        }
    }
    out
}

/// Decodes what [`encode`] wrote: `Ok(Ok(part))`, or `Ok(Err(message))` for a failed step.
///
/// # Errors
/// [`Error::Mpi`] (`decode`) for bytes that are not a contribution.
pub(crate) fn decode(bytes: &[u8]) -> Result<std::result::Result<Contribution, String>> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(bad("not a replica contribution"));
    }
    if r.take(1)?[0] == 0 {
        let message = String::from_utf8_lossy(r.bytes()?).into_owned();
        return Ok(Err(message));
    }
    let batch_len = r.usize()?;
    let mut nodes = Vec::new();
    for _ in 0..r.usize()? {
        let level = u32::try_from(r.usize()?).map_err(|_| bad("node level"))?;
        if level >= usize::BITS {
            return Err(bad("node level"));
        }
        let index = r.usize()?;
        let loss = f64::from_le_bytes(r.take(8)?.try_into().map_err(|_| bad("loss"))?);
        let grads = r.list()?;
        let deltas = r.list()?;
        nodes.push((Node { level, index }, Partial { loss, grads, deltas }));
    }
    let first = r.list()?;
    let mut single = Vec::new();
    for _ in 0..r.usize()? {
        let index = r.usize()?;
        let value = r.tensor()?;
        let count = r.usize()?;
        let conflict = match r.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return Err(bad("conflict flag")),
        };
        single.push(Single { index, value, count, conflict });
    }
    let local = r.list()?;
    if r.pos != bytes.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(Ok(Contribution { batch_len, nodes, first, single, local }))
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_list(out: &mut Vec<u8>, list: &[(usize, Tensor)]) {
    put_u64(out, list.len() as u64);
    for (i, t) in list {
        put_u64(out, *i as u64);
        put_tensor(out, t);
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_tensor(out: &mut Vec<u8>, t: &Tensor) {
    put_bytes(out, t.dtype().name().as_bytes());
    put_u64(out, t.ndim() as u64);
    for &d in t.dims() {
        put_u64(out, d as u64);
    }
    put_u64(out, t.nbytes() as u64);
    t.write_le_bytes(out);
}

fn bad(reason: &str) -> Error {
    Error::Mpi { op: "decode", reason: reason.into() }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| bad("truncated"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn usize(&mut self) -> Result<usize> {
        let raw: [u8; 8] = self.take(8)?.try_into().map_err(|_| bad("truncated"))?;
        usize::try_from(u64::from_le_bytes(raw)).map_err(|_| bad("length overflows usize"))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.usize()?;
        self.take(n)
    }

    /// `(index, tensor)` pairs, as [`put_list`] writes them.
    fn list(&mut self) -> Result<Vec<(usize, Tensor)>> {
        let len = self.usize()?;
        // Each entry takes at least 8 bytes: a hostile count cannot make us allocate more than the message.
        let mut list = Vec::with_capacity(len.min(self.bytes.len() / 8));
        for _ in 0..len {
            let i = self.usize()?;
            list.push((i, self.tensor()?));
        }
        Ok(list)
    }

    fn tensor(&mut self) -> Result<Tensor> {
        let name = std::str::from_utf8(self.bytes()?).map_err(|_| bad("dtype name"))?;
        let dtype = DType::from_str(name).map_err(|_| bad("unknown dtype"))?;
        let ndim = self.usize()?;
        let dims = (0..ndim).map(|_| self.usize()).collect::<Result<Vec<_>>>()?;
        let size = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| bad("shape"))?;
        let nbytes = self.usize()?;
        if size.checked_mul(dtype.itemsize()) != Some(nbytes) {
            return Err(bad("byte count does not match the shape"));
        }
        let raw = self.take(nbytes)?;
        with_dtype!(dtype, T => {
            let data: Vec<T> = raw.chunks_exact(dtype.itemsize()).map(T::from_le_slice).collect();
            Tensor::from_shape_vec(Shape::new(dims), data)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Contribution {
        let partial = Partial {
            loss: 0.25,
            grads: vec![(0, Tensor::from([[1.0f32, -0.0], [f32::NAN, 3.5]]))],
            deltas: vec![(3, Tensor::scalar(7i64))],
        };
        Contribution {
            batch_len: 10,
            nodes: vec![(Node { level: 2, index: 1 }, partial)],
            first: vec![(2, Tensor::from([half::bf16::from_f32(1.5)]))],
            single: vec![Single { index: 4, value: Tensor::scalar(2u32), count: 3, conflict: true }],
            local: vec![(5, Tensor::scalar(9i64))],
        }
    }

    #[test]
    fn contributions_round_trip_bit_exactly() {
        let part = sample();
        let back = decode(&encode(&Ok(part.clone()))).unwrap().unwrap();
        assert_eq!(back.batch_len, 10);
        let ((node, partial), (node0, partial0)) = (&back.nodes[0], &part.nodes[0]);
        assert_eq!((node, partial.loss), (node0, 0.25));
        assert!(partial.grads[0].1.bit_eq(&partial0.grads[0].1));
        assert_eq!(partial.grads[0].1.dims(), [2, 2]);
        assert_eq!(partial.deltas[0].0, 3);
        assert_eq!(partial.deltas[0].1.dims(), [] as [usize; 0]);
        assert!(back.first[0].1.bit_eq(&part.first[0].1));
        let single = &back.single[0];
        assert_eq!((single.index, single.count, single.conflict), (4, 3, true));
        assert!(single.value.bit_eq(&part.single[0].value));
        assert!(back.local[0].1.bit_eq(&part.local[0].1));
    }

    #[test]
    fn failures_travel_as_messages() {
        let err = Error::UnknownPath { path: "w".into() };
        assert_eq!(decode(&encode(&Err(err))).unwrap().unwrap_err(), "`w`: no such variable");
    }

    #[test]
    fn hostile_bytes_are_errors() {
        let mut part = sample();
        part.local.clear();
        part.nodes[0].1.deltas.clear();
        part.first.clear();
        part.single.clear();
        let good = encode(&Ok(part));
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        // The count of `on_read` values, last in the message, claims u64::MAX entries.
        let mut bad_len = good.clone();
        let at = good.len() - 8;
        bad_len[at..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&bad_len), Err(Error::Mpi { op: "decode", .. })));
        // The byte count of the gradient (16 bytes of data, then four empty lists) does not match its shape.
        let mut bad_bytes = good.clone();
        let at = good.len() - 4 * 8 - 16 - 8;
        bad_bytes[at..at + 8].copy_from_slice(&4u64.to_le_bytes());
        assert!(matches!(decode(&bad_bytes), Err(Error::Mpi { op: "decode", .. })));
    }
}
