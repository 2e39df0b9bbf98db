"""The learned generator: a tiny transformer that decides how to mix a new item's classifier (IRENE-style).

Why this shape. Classifiers are sparse vectors over ~10^5-10^6 n-gram features, so the generator never looks at
their coordinates: a dense layer over them would be huge, slow to apply and would not stay sparse. It reads a few
numbers that describe the new item and each of its K neighbours, and outputs the coefficients of a sparse mix

    w_new = sum_k alpha_k * w_k  +  sum_b beta_b * z_new[block b],     bias_new = sum_k alpha_k * b_k + gamma

where w_k, b_k are the neighbours' trained classifiers and z_new[block b] is the item's own TF-IDF vector
restricted to n-gram type b (word 1-grams, word 2-grams, char 3-grams). `generate.synthesize` applies the mix
and prunes it like a trained classifier, so a synthesized item costs no more to score than a trained one.

The input is a sequence of tokens, one for the item and one per neighbour, and each token holds plain numbers:
- item token: its mass and non-zero count in each n-gram block, and the top and mean neighbour similarity;
- neighbour token: its cosine to the item (whole and per block), its gap to the best neighbour, its popularity
  (training queries), its bias, and the norm and non-zero count of its classifier.
Rank and type embeddings tell the tokens apart. A pre-LN transformer (depth 1 by default) lets every token see
the others. A neighbour's output gives alpha_k, and the item's output gives (beta, gamma). A popular, close
neighbour can then dominate, and a thin one (no clicks, so a weak classifier) can defer to the title.
Everything is permutation-aware and has ~10^4 parameters, which matters because IRENE's analysis says small
K and depth generalize best.

What the mix uses (`LearnedConfig.parts`): by default the title alone (alpha = 0), weighted per n-gram block by
the network, which still reads the neighbours to set those weights and the bias. Once the titles train the tree
and every observed classifier carries its own title (`xrmeta.ground`), mixing in the neighbours' classifiers
measured no better on Home Depot or PriceRunner (benchmarks.generator_ablation); "both" and "neighbours" remain
for that comparison.

Training (`train_learned.train_generator`, torch) fits the network on held-out clicks; `network.make_net` is the
network. Serving uses no torch: the network's parameters are plain arrays (`generator.npz`), and the compiled
`_core.meta_forward` (cpp/src/meta.cpp) runs the same forward pass during `add_items`. Tests check that it agrees
with torch and with its numba oracle (`kernels.meta`), and that loading, inserting and searching run with torch
absent.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as smat

from .. import _core
from .. import threads as thread_rule
from ..errors import ModelError
from ..layout import rows
from .generate import Calibration, Generator, Plan, register

N_FEATURES = 10  # per token; the item token uses the first 2 * n_blocks + 2 and zero-pads the rest
GENERATOR_FILE = "generator.npz"


class GeneratorError(ModelError):
    """A learned generator that cannot be trained or used as asked (settings, shapes, a missing file)."""


@dataclass
class LearnedConfig:
    """Settings of the learned generator: its network, its training (held-out clicks, negatives, loss) and the
    calibration of its bias. `validate` raises GeneratorError on a bad value."""

    depth: int = 1  # transformer layers
    d_model: int = 16
    n_heads: int = 2
    d_ff: int = 32
    steps: int = 40  # full-batch Adam steps
    lr: float = 0.03
    pos_weight: float = 0.5  # C: weight of a positive pair in the loss
    tree_negatives: int = 64  # per held-out query: proxies inside its beam
    batch_negatives: int = 16  # per held-out query: random proxies
    observed_negatives: int = 8  # per query: retrained observed items of its beam (calibration competitors)
    observed_query_frac: float = 0.2  # other queries of the sampled items also held out (generalized setting)
    loss: str = "listwise"  # listwise: softmax over each held-out query's pairs | pointwise: weighted BCE
    # what the mix uses: self (the title, per-block weights; the neighbours only inform the weights) | both (also
    # the neighbours' classifiers) | neighbours (no title). With titles in the tree and in the observed items'
    # classifiers, mixing in the neighbours' classifiers measured no better than the title alone (zero-shot P@1
    # over 3 seeds: Home Depot 37.1 both / 37.1 self, PriceRunner 86.2 / 87.2; R@10 better with self only)
    parts: str = "self"
    self_weights: str = "block"  # block: one title coefficient per n-gram block | shared: one for all
    # the bias shift that puts generated scores on the trained items' scale (`train_learned`): match (relevant new
    # and trained items' held-out scores share their median) | steal (the largest shift costing trained items'
    # queries at most steal_tolerance of top-1, with new_in_beam new items in a beam, lowered by bias_margin)
    bias_calibration: str = "match"
    steal_tolerance: float = 0.001
    new_in_beam: int = 100
    bias_margin: float = 1.0
    beam_size: int = 10  # beam used to mine tree negatives
    max_items: int = 6000  # whole leaf clusters are sampled until this many items
    max_queries: int = 2000  # held-out queries the loss ranks candidates for (a random sample of them)
    proxy_frac: float = 0.5  # of the sampled items with a training query: held out as proxies for new items
    seed: int = 0

    def validate(self) -> None:
        """Raise GeneratorError on a setting out of range or an unknown name."""
        if self.depth < 1 or self.d_model < 1 or self.n_heads < 1 or self.d_model % self.n_heads:
            raise GeneratorError("depth, d_model, n_heads must be >= 1 and d_model divisible by n_heads")
        if self.steps < 1 or self.lr <= 0 or self.pos_weight <= 0 or self.max_items < 2:
            raise GeneratorError("steps >= 1, lr > 0, pos_weight > 0 and max_items >= 2 are required")
        if not 0 < self.proxy_frac < 1 or not 0 <= self.observed_query_frac <= 1:
            raise GeneratorError("proxy_frac must lie in (0, 1) and observed_query_frac in [0, 1]")
        if self.parts not in ("both", "neighbours", "self") or self.self_weights not in ("block", "shared"):
            raise GeneratorError("parts must be both, neighbours or self; self_weights block or shared")
        if self.loss not in ("listwise", "pointwise"):
            raise GeneratorError("loss must be listwise or pointwise")
        if self.bias_calibration not in ("match", "steal"):
            raise GeneratorError("bias_calibration must be match or steal")
        if min(self.tree_negatives, self.batch_negatives, self.observed_negatives) < 0 or self.beam_size < 1:
            raise GeneratorError("negatives must be >= 0 and beam_size >= 1")


# ---------------------------------------------------------------- features
def slot_stats(w_ptr: np.ndarray, w_val: np.ndarray, slot_bias: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """(n_slots, 4) per observed item: log(1 + training queries), bias, log classifier norm, log(1 + nnz)."""
    n = len(popularity)
    nnz = np.diff(w_ptr[: n + 1])
    sq = np.add.reduceat(w_val[: w_ptr[n]].astype(np.float64) ** 2, np.minimum(w_ptr[:n], max(w_ptr[n] - 1, 0)))
    sq = np.where(nnz > 0, sq, 0.0)
    return np.stack([np.log1p(popularity), slot_bias[:n], 0.5 * np.log(sq + 1e-12), np.log1p(nnz)],
                    axis=1).astype(np.float32)


def token_features(S: smat.csr_matrix, nbrs: np.ndarray, sims: np.ndarray, Z: smat.csr_matrix,
                   stats: np.ndarray, feature_block: np.ndarray, n_blocks: int, threads: int = -1):
    """Tokens (n, K+1, N_FEATURES) and valid mask (n, K+1) for items with TF-IDF rows S (sorted indices) and
    their neighbours (rows of Z, -1 = none) with similarities sims: `_core.item_tokens`, one compiled pass, the
    same at training and at insertion."""
    return _core.item_tokens(*rows(S), np.ascontiguousarray(nbrs, np.int64),
                             np.ascontiguousarray(sims, np.float32), *rows(Z), stats, feature_block, n_blocks,
                             N_FEATURES, thread_rule.resolve(threads))


PARAM_ORDER = ("mu", "sd", "w_in", "b_in", "pos", "ln1_g", "ln1_b", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo",
               "ln2_g", "ln2_b", "w1", "b1", "w2", "b2", "lnf_g", "lnf_b", "w_nbr", "b_nbr", "w_self", "b_self")


# ---------------------------------------------------------------- the generator (serving: numpy + _core)
@register
class LearnedGenerator(Generator):
    """The generator `make_net`'s network learned (`train_learned.train_generator`), served with numpy and _core.

    params: the network's float32 arrays by name (`PARAM_ORDER`); stats (n_base, 4) float32: `slot_stats` of
    the observed items; Z (n_base, F) CSR: their title rows (the selector's); feature_block (F,) int8: the n-gram
    block of each feature; n_heads: attention heads; info: how it was trained (its config among others)."""

    name = "learned"
    trained = True

    def __init__(self, params: dict, stats: np.ndarray, Z: smat.csr_matrix, feature_block: np.ndarray,
                 n_heads: int, info: dict | None = None):
        super().__init__()
        missing = [p for p in PARAM_ORDER if p not in params]
        if missing:
            raise GeneratorError(f"generator parameters lack {missing}")
        self.params = {p: np.ascontiguousarray(params[p], dtype=np.float32) for p in PARAM_ORDER}
        self.stats = stats
        self.Z = Z
        self.feature_block = feature_block
        self.n_blocks = int(feature_block.max()) + 1 if len(feature_block) else 1
        self.n_heads = int(n_heads)
        self.info = info or {}
        self.k = self.params["pos"].shape[0] - 1

    def with_rows(self, Z: smat.csr_matrix) -> LearnedGenerator:
        """`Generator.with_rows`: a copy reading Z (the parameters are shared, never written)."""
        out = copy.copy(self)
        out.Z = Z
        return out

    def forward(self, tokens: np.ndarray, valid: np.ndarray, threads: int = -1):
        """The network's outputs (alpha (n, K), out (n, n_blocks + 1)) for tokens (n, K + 1, N_FEATURES)."""
        return _core.meta_forward(np.ascontiguousarray(tokens, dtype=np.float32),
                                  np.ascontiguousarray(valid, dtype=bool), *(self.params[p] for p in PARAM_ORDER),
                                  self.n_heads, thread_rule.resolve(threads))

    def plan(self, S, nbr_items, nbr_sims, threads: int = -1) -> Plan:
        """`Generator.plan`: the network's coefficients, read from the item's and its neighbours' tokens."""
        if nbr_items.shape[1] != self.k:
            raise GeneratorError(f"the learned generator was trained for k={self.k} neighbours, got "
                                 f"{nbr_items.shape[1]}; retrain it or set k={self.k}")
        tokens, valid = token_features(S, nbr_items, nbr_sims, self.Z, self.stats, self.feature_block,
                                       self.n_blocks, threads)
        config = self.info.get("config", {})
        alpha, beta, gamma = _mix(*self.forward(tokens, valid, threads), config.get("parts", "both"),
                                  config.get("self_weights", "block"))
        return Plan(np.ascontiguousarray(alpha), np.ascontiguousarray(beta), np.ascontiguousarray(gamma))

    def save(self, folder: Path) -> None:
        """Write the generator into model directory folder (GENERATOR_FILE)."""
        np.savez(Path(folder) / GENERATOR_FILE, stats=self.stats, n_heads=self.n_heads,
                 info=np.array(json.dumps(self.info)), **self.params)

    @classmethod
    def load(cls, folder: Path | None, calibration: Calibration, Z: smat.csr_matrix,
             feature_block: np.ndarray) -> LearnedGenerator:
        """Read the generator saved in model directory folder (GeneratorError if there is none)."""
        if folder is None or not (Path(folder) / GENERATOR_FILE).exists():
            where = "the model" if folder is None else str(folder)
            raise GeneratorError(f"{where}: no learned generator ({GENERATOR_FILE}); train one with `fit_generator` "
                                 f"or `python -m xrmeta.train_generator --model-dir <model>`")
        path = Path(folder) / GENERATOR_FILE
        with np.load(path) as z:
            params = {p: z[p] for p in PARAM_ORDER if p in z}
            return cls(params, z["stats"], Z, feature_block, int(z["n_heads"]), json.loads(str(z["info"])))


def _mix(alpha, out, parts: str, self_weights: str):
    """(neighbour coefficients, self coefficients per block, bias) from the network's outputs, for the ablated
    variants too: parts "neighbours" drops the title, "self" the neighbours; self_weights "shared" gives every
    n-gram block the first block's coefficient. Works on torch tensors and numpy arrays alike."""
    beta, gamma = out[:, :-1], out[:, -1]
    if self_weights == "shared":
        beta = beta[:, :1] * (beta * 0 + 1)
    if parts == "neighbours":
        beta = beta * 0
    elif parts == "self":
        alpha = alpha * 0
    return alpha, beta, gamma
