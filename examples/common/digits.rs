//! The digits data set shipped in `data/digits.csv.gz` (UCI, CC BY 4.0; see `data/README.md`): loading,
//! a seeded train/test split and mini-batches drawn with purestate's random keys.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::Read;

use purestate::random::{self, Key};
use purestate::{Result, Tensor};

/// The 1797 digits: 64 pixels scaled to [0, 1] and a label 0..9 each.
pub struct Digits {
    pub pixels: Vec<f32>,
    pub labels: Vec<i32>,
}

impl Digits {
    pub const FEATURES: usize = 64;
    pub const CLASSES: usize = 10;

    /// Reads `data/digits.csv.gz` from the crate root.
    pub fn load() -> std::io::Result<Digits> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz");
        let mut text = String::new();
        let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{path}: {e}"));
        flate2::read::GzDecoder::new(std::fs::File::open(path).map_err(named)?)
            .read_to_string(&mut text)
            .map_err(named)?;
        let mut pixels = Vec::with_capacity(1797 * 64);
        let mut labels = Vec::with_capacity(1797);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let fields: Vec<f32> = line.split(',').map(|f| f.trim().parse::<f32>().unwrap_or(f32::NAN)).collect();
            if fields.len() != 65 || fields.iter().any(|f| f.is_nan()) {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{path}: bad row: {line}")));
            }
            pixels.extend(fields[..64].iter().map(|p| p / 16.0));
            labels.push(fields[64] as i32);
        }
        Ok(Digits { pixels, labels })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// A seeded split: `test_fraction` of the examples, drawn by a permutation of `key`, are held out.
    pub fn split(&self, key: Key, test_fraction: f64) -> Result<(Vec<usize>, Vec<usize>)> {
        let order = random::permutation(key, self.len())?.to_vec::<i64>()?;
        let n_test = (self.len() as f64 * test_fraction).round() as usize;
        let test = order[..n_test].iter().map(|&i| i as usize).collect();
        let train = order[n_test..].iter().map(|&i| i as usize).collect();
        Ok((train, test))
    }

    /// The examples `ids` as a (batch, 64) float32 tensor and a (batch,) int32 label tensor.
    pub fn batch(&self, ids: &[usize]) -> Result<(Tensor, Tensor)> {
        let mut x = Vec::with_capacity(ids.len() * 64);
        for &i in ids {
            x.extend_from_slice(&self.pixels[i * 64..(i + 1) * 64]);
        }
        let y: Vec<i32> = ids.iter().map(|&i| self.labels[i]).collect();
        Ok((Tensor::from_shape_vec([ids.len(), 64], x)?, Tensor::from(y)))
    }
}

/// The mini-batches of one epoch: the training ids shuffled by `key.fold_in(epoch)`, cut into batches of
/// `batch_size` (the last one shorter).
pub fn epoch_batches(train: &[usize], key: Key, epoch: u32, batch_size: usize) -> Result<Vec<Vec<usize>>> {
    let order = random::permutation(key.fold_in(epoch), train.len())?.to_vec::<i64>()?;
    let shuffled: Vec<usize> = order.iter().map(|&i| train[i as usize]).collect();
    Ok(shuffled.chunks(batch_size).map(|c| c.to_vec()).collect())
}
