//! The language model of `examples/lm.rs`: a small GPT (pre-LayerNorm transformer decoder) built from the
//! library's layers, the Shakespeare text it reads, and its pure training step.
//!
//! Every layer's variables are under `gpt/...` with Keras's names; the optimizer's slots and moving averages
//! are beside them in the same store.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::Read;

use purestate::layers::{Dense, Embedding, Layer, LayerNormalization, MultiHeadAttention, PositionEmbedding};
use purestate::optim::{AdamW, Optimizer};
use purestate::random::{self, Key};
use purestate::{grad, losses, DType, Error, Scope, StateStore, Tensor, Variable};
use serde::{Deserialize, Serialize};

/// The text: Shakespeare's plays (`data/shakespeare.txt.gz`, see `data/README.md`) as ids into its
/// sorted character set, split into a training part and a held-out tail.
pub struct Text {
    /// The distinct bytes of the text, sorted; a character's id is its index here.
    pub vocab: Vec<u8>,
    /// The training ids (the first 90% of the text).
    pub train: Vec<i32>,
    /// The held-out ids (the last 10%: whole scenes the model never trains on).
    pub valid: Vec<i32>,
}

impl Text {
    /// Reads `data/shakespeare.txt.gz` from the crate root.
    pub fn load() -> std::io::Result<Text> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/shakespeare.txt.gz");
        let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{path}: {e}"));
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).map_err(named)?)
            .read_to_end(&mut bytes)
            .map_err(named)?;
        let mut vocab = bytes.clone();
        vocab.sort_unstable();
        vocab.dedup();
        let mut id = [0i32; 256];
        for (i, &c) in vocab.iter().enumerate() {
            id[c as usize] = i as i32;
        }
        let ids: Vec<i32> = bytes.iter().map(|&c| id[c as usize]).collect();
        let cut = ids.len() * 9 / 10;
        Ok(Text { vocab, train: ids[..cut].to_vec(), valid: ids[cut..].to_vec() })
    }

    pub fn decode(&self, ids: &[i32]) -> String {
        ids.iter().map(|&i| self.vocab[i as usize] as char).collect()
    }

    pub fn encode(&self, text: &str) -> Vec<i32> {
        text.bytes().filter_map(|c| self.vocab.iter().position(|&v| v == c).map(|i| i as i32)).collect()
    }
}

/// Windows of `context + 1` ids starting at `starts`: inputs `(batch, context)` and next-character targets.
pub fn windows(ids: &[i32], starts: &[u32], context: usize) -> purestate::Result<(Tensor, Tensor)> {
    let mut x = Vec::with_capacity(starts.len() * context);
    let mut y = Vec::with_capacity(starts.len() * context);
    for &s in starts {
        let s = s as usize;
        x.extend_from_slice(&ids[s..s + context]);
        y.extend_from_slice(&ids[s + 1..s + context + 1]);
    }
    Ok((Tensor::from_shape_vec([starts.len(), context], x)?, Tensor::from_shape_vec([starts.len(), context], y)?))
}

/// The model's size.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    pub vocab: usize,
    pub context: usize,
    pub layers: usize,
    pub heads: usize,
    pub d_model: usize,
}

/// One pre-LayerNorm block: `h + attention(ln(h))`, then `h + down(gelu(up(ln(h))))`.
pub struct Block {
    pub ln_1: LayerNormalization,
    pub attention: MultiHeadAttention,
    pub ln_2: LayerNormalization,
    pub up: Dense,
    pub down: Dense,
}

/// The GPT: token and position embeddings, blocks, a final LayerNorm and the logits over the vocabulary.
pub struct Gpt {
    pub config: Config,
    pub tokens: Embedding,
    pub positions: PositionEmbedding,
    pub blocks: Vec<Block>,
    pub ln_f: LayerNormalization,
    pub head: Dense,
}

impl Gpt {
    /// Builds the model's variables under `gpt/`. A `d_model` that the heads do not divide is an
    /// [`Error::LayerInput`] naming the attention layer.
    pub fn create(state: &mut StateStore, config: Config) -> purestate::Result<Gpt> {
        let Config { vocab, context, layers, heads, d_model } = config;
        if heads == 0 || d_model % heads != 0 {
            return Err(Error::LayerInput {
                layer: "gpt/block_0/attention".into(),
                got: vec![context, d_model].into(),
                reason: format!("d_model {d_model} is not a multiple of {heads} heads (key_dim = d_model / heads)"),
            });
        }
        let seq = [context, d_model];
        let mut tokens = Embedding::new(vocab, d_model);
        tokens.build(state, "gpt/token_embedding", &[context])?;
        let mut positions = PositionEmbedding::new(context);
        positions.build(state, "gpt/position_embedding", &seq)?;
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            let scope = format!("gpt/block_{i}");
            let mut block = Block {
                ln_1: LayerNormalization::new(),
                attention: MultiHeadAttention::new(heads, d_model / heads),
                ln_2: LayerNormalization::new(),
                up: Dense::new(4 * d_model).activation("gelu"),
                down: Dense::new(d_model),
            };
            block.ln_1.build(state, &format!("{scope}/layer_norm"), &seq)?;
            block.attention.build_attention(state, Some(&format!("{scope}/attention")), &seq, &seq, None)?;
            block.ln_2.build(state, &format!("{scope}/layer_norm_1"), &seq)?;
            block.up.build(state, &format!("{scope}/dense"), &seq)?;
            block.down.build(state, &format!("{scope}/dense_1"), &[context, 4 * d_model])?;
            blocks.push(block);
        }
        let mut ln_f = LayerNormalization::new();
        ln_f.build(state, "gpt/layer_norm", &seq)?;
        let mut head = Dense::new(vocab);
        head.build(state, "gpt/logits", &seq)?;
        Ok(Gpt { config, tokens, positions, blocks, ln_f, head })
    }

    /// Every variable of the model, in creation order.
    pub fn variables(&self) -> Vec<Variable> {
        let mut vars = self.tokens.variables();
        vars.extend(self.positions.variables());
        for b in &self.blocks {
            for layer in [&b.ln_1 as &dyn Layer, &b.attention, &b.ln_2, &b.up, &b.down] {
                vars.extend(layer.trainable_weights());
            }
        }
        vars.extend(self.ln_f.variables());
        vars.extend(self.head.variables());
        vars
    }

    /// The logits `(batch, T, vocab)` of the next character at every position of `ids` `(batch, T)`, with a
    /// causal mask. An id outside the vocabulary, or `T` beyond the context, is an [`Error::LayerInput`].
    pub fn logits(&self, scope: &mut Scope, ids: &Tensor, training: bool) -> purestate::Result<Tensor> {
        let x = self.tokens.call(scope, ids, training)?;
        let mut h = x.add(&self.positions.call(scope, &x, training)?)?;
        for b in &self.blocks {
            let a = b.ln_1.call(scope, &h, training)?;
            h = h.add(&b.attention.call_attention(scope, &a, &a, None, None, true, training)?)?;
            let m = b.ln_2.call(scope, &h, training)?;
            let up = b.up.call(scope, &m, training)?;
            h = h.add(&b.down.call(scope, &up, training)?)?;
        }
        let h = self.ln_f.call(scope, &h, training)?;
        self.head.call(scope, &h, training)
    }

    /// The mean cross-entropy (nats per character) of predicting `y` from `x`.
    pub fn loss(&self, scope: &mut Scope, x: &Tensor, y: &Tensor, training: bool) -> purestate::Result<Tensor> {
        losses::sparse_categorical_crossentropy(y, &self.logits(scope, x, training)?, true)
    }

    /// Bits per character over the windows at `starts` of `ids`, evaluated `batch` windows at a time on
    /// `state` (pass the optimizer's `ema_state` to evaluate the moving averages).
    pub fn bits_per_char(
        &self,
        state: &StateStore,
        ids: &[i32],
        starts: &[u32],
        batch: usize,
    ) -> purestate::Result<f64> {
        let mut total = 0.0;
        for chunk in starts.chunks(batch) {
            let (x, y) = windows(ids, chunk, self.config.context)?;
            let loss = self.loss(&mut Scope::new(state), &x, &y, false)?.to_f64()?;
            total += loss * chunk.len() as f64;
        }
        Ok(total / starts.len() as f64 / std::f64::consts::LN_2)
    }

    /// `n` characters sampled after `prompt` from `state`, at `temperature`, each draw from `key.fold_in(i)`.
    pub fn sample(
        &self,
        state: &StateStore,
        prompt: &[i32],
        n: usize,
        temperature: f64,
        key: Key,
    ) -> purestate::Result<Vec<i32>> {
        let mut ids = prompt.to_vec();
        for i in 0..n {
            let window = &ids[ids.len().saturating_sub(self.config.context)..];
            let x = Tensor::from_shape_vec([1, window.len()], window.to_vec())?;
            let logits = self.logits(&mut Scope::new(state), &x, false)?;
            let last = logits.to_f64_vec();
            let last = &last[last.len() - self.config.vocab..];
            let top = last.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = last.iter().map(|&l| ((l - top) / temperature).exp()).collect();
            let u = random::uniform(key.fold_in(i as u32), [], DType::Float64, 0.0, 1.0)?.to_f64()?;
            let mut target = u * weights.iter().sum::<f64>();
            let mut next = weights.len() - 1;
            for (c, &w) in weights.iter().enumerate() {
                if target < w {
                    next = c;
                    break;
                }
                target -= w;
            }
            ids.push(next as i32);
        }
        Ok(ids[prompt.len()..].to_vec())
    }
}

/// What one step consumed: the windows' start offsets into the training text and the learning rate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u32,
    pub starts: Vec<u32>,
    pub learning_rate: f32,
}

/// The record of step `step`: `batch` window starts drawn from `key.fold_in(step)`.
pub fn record(
    text: &Text,
    key: Key,
    step: u32,
    batch: usize,
    context: usize,
    learning_rate: f32,
) -> purestate::Result<StepRecord> {
    let high = (text.train.len() - context - 1) as i64;
    let starts = random::randint(key.fold_in(step), [batch], 0, high, DType::Int64)?.to_vec::<i64>()?;
    Ok(StepRecord { step, starts: starts.iter().map(|&s| s as u32).collect(), learning_rate })
}

/// One pure training step: the state in, the next state (weights, AdamW's slots, the moving averages) and the
/// batch loss in nats per character out.
pub fn train_step(
    mut state: StateStore,
    gpt: &Gpt,
    opt: &AdamW,
    text: &Text,
    record: &StepRecord,
) -> purestate::Result<(StateStore, f32)> {
    let (x, y) = windows(&text.train, &record.starts, gpt.config.context)?;
    let lr = state.find("adam_w/learning_rate")?;
    state.assign(&lr, Tensor::from(record.learning_rate))?;
    let out = grad::value_and_grad_aux(state, |scope| Ok((gpt.loss(scope, &x, &y, true)?, ())))?;
    let loss = out.loss.to_f64()? as f32;
    Ok((opt.apply(out.state, &out.grads)?, loss))
}

/// A fresh GPT and AdamW (with moving averages of the weights) in a new store seeded with `key`.
pub fn build(key: Key, config: Config, ema_momentum: f64) -> purestate::Result<(StateStore, Gpt, AdamW)> {
    let mut state = StateStore::new().with_seed(key);
    let gpt = Gpt::create(&mut state, config)?;
    let mut opt = AdamW::new(1e-3).weight_decay(0.01).beta_2(0.99).use_ema(ema_momentum);
    opt.build(&mut state, &gpt.variables())?;
    Ok((state, gpt, opt))
}
