"""How far the lm example's model gets in JAX for a given number of steps: a reference curve, not a test.

The GPT of examples/common/gpt.rs in plain JAX (differences: one fused qkv projection, N(0, 0.02) weights,
LayerNorm epsilon 1e-5, no moving averages, optax.adamw with weight decay 0), trained on
data/shakespeare.txt.gz with the same 90/10 split, batch 32 x 64, warm-up 100 steps and a cosine to a tenth;
it prints validation bits per character on 2048 held-out windows every 500 steps.

  tools/.venv/bin/python tools/jax_lm_train.py LAYERS D_MODEL BATCH STEPS PEAK_LR
  e.g. 4 128 32 2000 3e-3 -> 2.33 bits per character after 2000 steps;
       4 128 32 8000 3e-3 -> 2.83 / 2.60 / 2.48 / 2.42 / 2.35 / 2.31 / 2.28 / 2.25 at steps 500 ... 4000
       (stopped there; 2026-12-07, jax 0.10.2, 2 cores).
"""
import gzip, math, os, sys, time
import numpy as np, jax, jax.numpy as jnp, optax
L, H, D, T, B = int(sys.argv[1]), 4, int(sys.argv[2]), 64, int(sys.argv[3])
STEPS, LR = int(sys.argv[4]), float(sys.argv[5])
text = gzip.open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'data', 'shakespeare.txt.gz')).read()
chars = sorted(set(text)); V = len(chars); lut = np.zeros(256, np.int32); lut[list(chars)] = np.arange(V)
data = lut[np.frombuffer(text, np.uint8)]
n = int(len(data)*0.9); tr, va = data[:n], data[n:]
def init(key):
    ks = iter(jax.random.split(key, 100)); g = lambda s, sc=0.02: sc*jax.random.normal(next(ks), s)
    p = {'tok': g((V,D)), 'pos': g((T,D)), 'lnf': (jnp.ones(D), jnp.zeros(D)), 'out': (g((D,V)), jnp.zeros(V)), 'blocks': []}
    for _ in range(L):
        p['blocks'].append({'ln1': (jnp.ones(D), jnp.zeros(D)), 'qkv': (g((D,3*D)), jnp.zeros(3*D)), 'o': (g((D,D)), jnp.zeros(D)),
                            'ln2': (jnp.ones(D), jnp.zeros(D)), 'fc': (g((D,4*D)), jnp.zeros(4*D)), 'pr': (g((4*D,D)), jnp.zeros(D))})
    return p
def ln(x, p):
    m = x.mean(-1, keepdims=True); v = ((x-m)**2).mean(-1, keepdims=True); return (x-m)/jnp.sqrt(v+1e-5)*p[0]+p[1]
mask = jnp.tril(jnp.ones((T,T), bool))
def fwd(p, x):
    h = p['tok'][x] + p['pos'][None]
    for b in p['blocks']:
        a = ln(h, b['ln1']) @ b['qkv'][0] + b['qkv'][1]
        q, k, v = jnp.split(a, 3, -1)
        sh = lambda t: t.reshape(t.shape[0], T, H, D//H).transpose(0,2,1,3)
        q, k, v = sh(q), sh(k), sh(v)
        s = q @ k.transpose(0,1,3,2) / math.sqrt(D//H)
        s = jnp.where(mask, s, -1e9); w = jax.nn.softmax(s, -1)
        o = (w @ v).transpose(0,2,1,3).reshape(-1, T, D)
        h = h + o @ b['o'][0] + b['o'][1]
        m = jax.nn.gelu(ln(h, b['ln2']) @ b['fc'][0] + b['fc'][1], approximate=False)
        h = h + m @ b['pr'][0] + b['pr'][1]
    return ln(h, p['lnf']) @ p['out'][0] + p['out'][1]
def loss(p, x, y):
    lg = fwd(p, x); return optax.softmax_cross_entropy_with_integer_labels(lg, y).mean()
sched = optax.warmup_cosine_decay_schedule(0.0, LR, 100, STEPS, LR*0.1)
opt = optax.adamw(sched, b2=0.99, weight_decay=0.0)
p = init(jax.random.PRNGKey(0)); s = opt.init(p)
@jax.jit
def step(p, s, x, y):
    l, g = jax.value_and_grad(loss)(p, x, y); u, s = opt.update(g, s, p); return optax.apply_updates(p, u), s, l
evl = jax.jit(loss)
rng = np.random.default_rng(0)
def batch(d, idx): return np.stack([d[i:i+T] for i in idx]), np.stack([d[i+1:i+T+1] for i in idx])
vidx = np.arange(0, len(va)-T-1, (len(va)-T-1)//2048)[:2048]
def val(p): return np.mean([float(evl(p, *batch(va, vidx[i:i+256]))) for i in range(0, 2048, 256)])/math.log(2)
t0 = time.time(); print('V', V, 'params', sum(x.size for x in jax.tree_util.tree_leaves(p)))
for i in range(STEPS+1):
    if i % 500 == 0: print(i, f'{time.time()-t0:.0f}s', f'val {val(p):.3f} bpc', flush=True)
    if i == STEPS: break
    p, s, l = step(p, s, *batch(tr, rng.integers(0, len(tr)-T-1, B)))
