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

Training (`train_generator`), IRENE-style, with the encoder (TF-IDF), the tree and the served classifiers
frozen, on the held-out clicks of `training.hold_out`. Proxies must look like new items, and three things would
give them away:
- A new item's queries were never training negatives of its neighbours' classifiers, whereas PECOS trains a
  leaf classifier against every query with a positive in its cluster. Its queries are also unseen by them,
  whereas a trained classifier scores its own training positives far higher than fresh queries. So in a
  sample of whole leaf clusters, `proxy_frac` of the clicked items become proxies. Their queries, plus
  `observed_query_frac` of the other queries, are held out, and the sample's other items get their leaf
  classifiers retrained without either (PECOS's solver, the model's settings).
- A new item's title has out-of-vocabulary n-grams (the vocabulary came from training texts), whereas an
  observed title's n-grams are all in it. So a proxy's title loses the n-grams only it brought in, as if unseen.
- Neighbours are searched among the observed items other than the proxies, so a proxy never sees its own
  classifier.

The loss ranks each held-out query's candidates (listwise softmax cross-entropy; `loss="pointwise"` is a
weighted binary cross-entropy with weight C, `pos_weight`, on positives). The candidates are the query's
relevant proxies, proxies of its beam clusters (tree negatives), random proxies (in-batch, the batch being the
sample), and relevant and beam-drawn retrained items, whose held-out scores are fixed. The logit increases with
the score an item gets at search time, log(transform(s) * path score ** path_exponent), with the leaf layer's
transform and path exponent (`xrmeta.ground.TitleTrust`): generated and trained items share that scale.

Training is cheap because the mix is linear in its coefficients. A pair's score is
alpha . u + beta . v + gamma with u_k = x . w_k + b_k and v_b = x . z[block b]. These dot products are computed
once, with a numba kernel, and only the ~10^4-parameter network is trained, full batch, on them. Pruning the
synthesized vector is left out of the loss; its effect shows in the measured results.

Calibration for the generalized setting: a new item must not push a relevant trained item off the top. A last
shift of gamma is set by bisection. It is the largest shift at which, on held-out queries with no relevant
proxy, new items are expected to cost at most `steal_tolerance` of top-1 accuracy, with `new_in_beam` of them
in a query's beam. The shift is then lowered by `bias_margin`, because the tree saw those queries in training
and reaches their clusters with higher path scores than a fresh query gets. It is floored so that most relevant
generated scores stay where float32 can still rank them.

Serving uses no torch. `MetaNet.export` writes plain arrays, and `kernels.meta_forward` (numba) runs the same
forward pass during `add_items`. A test checks that it agrees with torch.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as smat
from sklearn.preprocessing import normalize
from tqdm import tqdm

from .. import threads as thread_rule
from ..kernels.coldstart import item_tokens
from ..kernels.meta import meta_forward
from ..layout import POST_PROCESSORS
from .generate import Calibration, Generator, Plan
from .select import neighbours_excluding
from .training import Adam, HeldOut, hold_out, listwise_loss, log_path, pair_dots, query_pairs

N_FEATURES = 10  # per token; the item token uses the first 2 * n_blocks + 2 and zero-pads the rest
GENERATOR_FILE = "generator.npz"
# A hinge transform is flat at s >= 1, so a negative pushed there gets no gradient and training can run away
# into saturation; in the loss only, scores above 1 lose this much log-score per unit.
SATURATION_SLOPE = 0.2
# exp(-(1 - s)^3) underflows float32 near s = -3.4 (sooner once multiplied by a path score); the sigmoid only near
# s = -87: the raw score below which a transformed score can no longer be ranked, per post-processor
UNDERFLOW_SCORE = {"hinge": -2.5, "sigmoid": -60.0}


class GeneratorError(ValueError):
    pass


@dataclass
class LearnedConfig:
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
    steal_tolerance: float = 0.001  # top-1 accuracy new items may cost those queries (bias calibration)
    new_in_beam: int = 100  # new items a query's beam holds at search time, for that estimate
    bias_margin: float = 1.0  # the calibrated bias shift is lowered by this much (fresh queries; see below)
    beam_size: int = 10  # beam used to mine tree negatives
    max_items: int = 6000  # whole leaf clusters are sampled until this many items
    max_queries: int = 2000  # held-out queries the loss ranks candidates for (a random sample of them)
    proxy_frac: float = 0.5  # of the sampled items with a training query: held out as proxies for new items
    seed: int = 0

    def validate(self) -> None:
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
                   stats: np.ndarray, feature_block: np.ndarray, n_blocks: int):
    """Tokens (n, K+1, N_FEATURES) and valid mask (n, K+1) for items with TF-IDF rows S (sorted indices) and
    their neighbours (rows of Z, -1 = none) with similarities sims: `kernels.item_tokens`, one numba pass, the
    same at training and at insertion."""
    S = smat.csr_matrix(S, dtype=np.float32)
    n = thread_rule.resolve(-1)  # threads: wired by C/integrator
    return thread_rule.run(item_tokens, n, S.indptr.astype(np.int64), S.indices, S.data,
                           np.ascontiguousarray(nbrs, np.int64), np.ascontiguousarray(sims, np.float32),
                           Z.indptr.astype(np.int64), Z.indices, Z.data, stats, feature_block, n_blocks, N_FEATURES, n)


# ---------------------------------------------------------------- the network (torch, training only)
def _torch():
    import torch  # imported lazily: serving never needs it

    return torch


def make_net(config: LearnedConfig, k: int, n_blocks: int, calibration: Calibration, mu, sd):
    torch = _torch()
    nn = torch.nn

    class MetaNet(nn.Module):
        """Pre-LN transformer over [item token, neighbour tokens]; mirrored by `kernels.meta_forward`."""

        def __init__(self):
            super().__init__()
            d, L, f = config.d_model, config.depth, config.d_ff
            g = torch.Generator().manual_seed(config.seed)

            def init(*shape, scale=None):
                fan_in = shape[-2] if len(shape) >= 2 else shape[-1]
                s = scale if scale is not None else fan_in**-0.5
                return nn.Parameter(torch.randn(*shape, generator=g) * s)

            def const(value, *shape):
                return nn.Parameter(torch.full(shape, float(value)))

            self.register_buffer("mu", torch.as_tensor(mu))
            self.register_buffer("sd", torch.as_tensor(sd))
            self.w_in, self.b_in, self.pos = init(2, N_FEATURES, d), const(0, 2, d), init(k + 1, d, scale=0.1)
            self.ln1_g, self.ln1_b = const(1, L, d), const(0, L, d)
            self.wq, self.bq = init(L, d, d), const(0, L, d)
            self.wk, self.bk = init(L, d, d), const(0, L, d)
            self.wv, self.bv = init(L, d, d), const(0, L, d)
            self.wo, self.bo = init(L, d, d), const(0, L, d)
            self.ln2_g, self.ln2_b = const(1, L, d), const(0, L, d)
            self.w1, self.b1 = init(L, d, f), const(0, L, f)
            self.w2, self.b2 = init(L, f, d), const(0, L, d)
            self.lnf_g, self.lnf_b = const(1, d), const(0, d)
            # heads start at the mean_self baseline: alpha = 1/K, beta = title calibration, gamma = its bias
            # alpha and beta go through a softplus (a mix of classifiers with negative weights is not one
            # the data can justify, and it keeps training stable); the raw bias starts at the inverse
            self.w_nbr, self.b_nbr = const(0, d, 1), const(_inverse_softplus(1.0 / k), 1)
            self.w_self = const(0, d, n_blocks + 1)
            self.b_self = nn.Parameter(torch.tensor([_inverse_softplus(max(calibration.scale, 1e-3))] * n_blocks
                                                    + [calibration.bias]))

        def forward(self, tokens, valid):
            kind = torch.ones(tokens.shape[1], dtype=torch.long)
            kind[0] = 0
            x = (tokens - self.mu[kind]) / self.sd[kind]
            x = torch.einsum("ntf,tfd->ntd", x, self.w_in[kind]) + self.b_in[kind] + self.pos
            n, T, d = x.shape
            h_ = d // config.n_heads
            blocked = ~valid[:, None, None, :]
            for layer in range(config.depth):
                h = nn.functional.layer_norm(x, (d,), self.ln1_g[layer], self.ln1_b[layer], eps=1e-5)
                q, kk, v = (h @ w[layer] + b[layer] for w, b in ((self.wq, self.bq), (self.wk, self.bk),
                                                                 (self.wv, self.bv)))
                q, kk, v = (a.view(n, T, config.n_heads, h_).transpose(1, 2) for a in (q, kk, v))
                att = (q @ kk.transpose(-1, -2)) * h_**-0.5
                att = att.masked_fill(blocked, float("-inf")).softmax(-1)
                mixed = (att @ v).transpose(1, 2).reshape(n, T, d)
                x = x + mixed @ self.wo[layer] + self.bo[layer]
                h = nn.functional.layer_norm(x, (d,), self.ln2_g[layer], self.ln2_b[layer], eps=1e-5)
                x = x + torch.relu(h @ self.w1[layer] + self.b1[layer]) @ self.w2[layer] + self.b2[layer]
            h = nn.functional.layer_norm(x, (d,), self.lnf_g, self.lnf_b, eps=1e-5)
            softplus = nn.functional.softplus
            alpha = softplus((h[:, 1:] @ self.w_nbr + self.b_nbr).squeeze(-1)) * valid[:, 1:]
            out = h[:, 0] @ self.w_self + self.b_self
            return alpha, torch.cat([softplus(out[:, :-1]), out[:, -1:]], dim=1)

        def export(self) -> dict:
            """Plain float32 arrays for `kernels.meta_forward`."""
            return {name: t.detach().numpy().astype(np.float32).copy() for name, t in self.state_dict().items()}

    return MetaNet()


def _inverse_softplus(y: float) -> float:
    return float(np.log(np.expm1(y)))


PARAM_ORDER = ("mu", "sd", "w_in", "b_in", "pos", "ln1_g", "ln1_b", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo",
               "ln2_g", "ln2_b", "w1", "b1", "w2", "b2", "lnf_g", "lnf_b", "w_nbr", "b_nbr", "w_self", "b_self")


# ---------------------------------------------------------------- the generator (serving: numpy + numba)
class LearnedGenerator(Generator):
    name = "learned"

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

    def forward(self, tokens: np.ndarray, valid: np.ndarray):
        n = thread_rule.resolve(-1)  # threads: wired by C/integrator
        return thread_rule.run(meta_forward, n, np.ascontiguousarray(tokens, dtype=np.float32), valid,
                               *(self.params[p] for p in PARAM_ORDER), self.n_heads, n)

    def plan(self, S, nbr_items, nbr_sims) -> Plan:
        if nbr_items.shape[1] != self.k:
            raise GeneratorError(f"the learned generator was trained for k={self.k} neighbours, got "
                                 f"{nbr_items.shape[1]}; retrain it or set k={self.k}")
        tokens, valid = token_features(S, nbr_items, nbr_sims, self.Z, self.stats, self.feature_block,
                                       self.n_blocks)
        config = self.info.get("config", {})
        alpha, beta, gamma = _mix(*self.forward(tokens, valid), config.get("parts", "both"),
                                  config.get("self_weights", "block"))
        return Plan(np.ascontiguousarray(alpha), np.ascontiguousarray(beta), np.ascontiguousarray(gamma))

    def save(self, folder: Path) -> None:
        np.savez(Path(folder) / GENERATOR_FILE, stats=self.stats, n_heads=self.n_heads,
                 info=np.array(json.dumps(self.info)), **self.params)

    @classmethod
    def load(cls, folder: Path, Z: smat.csr_matrix, feature_block: np.ndarray) -> LearnedGenerator:
        path = Path(folder) / GENERATOR_FILE
        if not path.exists():
            raise GeneratorError(f"{path}: no learned generator in this model; train one with "
                                 f"`python -m xrmeta.train_generator --model-dir {folder}`")
        with np.load(path) as z:
            params = {p: z[p] for p in PARAM_ORDER if p in z}
            return cls(params, z["stats"], Z, feature_block, int(z["n_heads"]), json.loads(str(z["info"])))


# ---------------------------------------------------------------- training
def _log(msg: str, verbose: bool) -> None:
    if verbose:
        print(msg, file=sys.stderr, flush=True)


@dataclass
class _Pairs:
    """(query, item) pairs with everything the loss needs, precomputed. Items are proxies (their score is
    generated) or, with item -1, observed competitors whose score is fixed (their held-out classifier)."""

    query: np.ndarray  # (P,) rows of X
    item: np.ndarray  # (P,) index of the proxy in the proxy list; -1: an observed item
    label: np.ndarray  # (P,) 1 = relevant
    u: np.ndarray  # (P, K) x . w_k + b_k of the proxy's neighbours (held-out classifiers)
    v: np.ndarray  # (P, n_blocks) x . z[block] of the proxy's own title
    fixed: np.ndarray  # (P,) score of an observed competitor
    log_path: np.ndarray  # (P,) log path score of the item's leaf cluster for the query


def train_generator(model, X: smat.csr_matrix, Y: smat.spmatrix, config: LearnedConfig | None = None,
                    threads: int = 1, verbose: bool = True, held: HeldOut | None = None) -> LearnedGenerator:
    """Train the learned generator of `model` (an XRMetaModel) on its training queries X (TF-IDF rows) and
    relevance Y (queries x trained items, in training order), on held-out clicks (`training.hold_out`, drawn
    here unless given). Nothing of the model is changed. The module docstring explains the proxies, the loss
    and the calibration."""
    torch = _torch()
    config = config or LearnedConfig()
    config.validate()
    t0 = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    k = model.configs.coldstart.k
    cat, Z = model.catalog, model.selector.Z
    fb = model.featurizer.feature_block
    n_blocks = int(fb.max()) + 1
    X = smat.csr_matrix(X, dtype=np.float32)
    X.sort_indices()
    if Y.shape != (X.shape[0], cat.n_base):
        raise GeneratorError(f"Y is {Y.shape}, expected {X.shape[0]} queries x {cat.n_base} trained items")
    Ys = smat.csr_matrix(Y, dtype=np.float32)[:, np.argsort(model.label_slot)]  # columns in slot order
    Ys.sort_indices()
    slot_cluster = cat.slot_cluster.view[: cat.n_base]
    if held is None:
        W_pecos, bias_pecos = model.pecos_leaf()
        held = hold_out(X, Ys, Z, W_pecos, bias_pecos, slot_cluster, cat.base_slot_ptr, model.configs.tree,
                        config.max_items, config.proxy_frac, config.observed_query_frac, rng, threads)
    trust = model.title_trust
    # the classifiers as served (title trust applied), but without the held-out clicks
    W, bias = trust.apply_rows(held.W, held.bias, Z, held.clicks, model.configs.tree.threshold)
    # tokens describe neighbours by their served classifiers (what `plan` sees), while the pair scores below
    # use the held-out ones
    stats = slot_stats(cat.w_ptr.view, cat.w_val.view, cat.slot_bias.view, np.diff(Ys.tocsc().indptr))
    titles = _as_if_unseen(Z, X, held.proxies, fb, n_blocks, model.configs.featurizer.min_df)
    nbrs, sims = neighbours_excluding(model.selector, titles, held.proxies, k)
    tokens, valid = token_features(titles, nbrs, sims, Z, stats, fb, n_blocks)
    held = dataclasses.replace(held, queries=held.queries[: config.max_queries])
    beams = model.upper.beams(X[held.queries], config.beam_size, threads=1).tocsr()
    beams.sort_indices()
    pairs = _make_pairs(X, Ys, held, titles, nbrs, W, bias, beams, slot_cluster, cat.n_clusters, fb, n_blocks,
                        config, rng)
    pairs.log_path *= np.float32(trust.path_exponent)  # how much the path score counts at search time
    t_prep = time.perf_counter() - t0
    _log(f"  generator: {len(held.proxies)} proxies ({len(held.rest)} classifiers retrained), {len(pairs.query)} "
         f"pairs, prepared in {t_prep:.2f} s", verbose)

    net = make_net(config, k, n_blocks, model.calibration, *_token_moments(tokens, valid))
    post = POST_PROCESSORS[trust.post_processor]
    loss, scores = _fit(net, tokens, valid, pairs, post, config, verbose)
    shift = _generalized_shift(scores, pairs, post, config.steal_tolerance, config.new_in_beam, config.bias_margin)
    with torch.no_grad():
        net.b_self[-1] += shift
    info = dict(config=asdict(config), n_proxies=int(len(held.proxies)), n_retrained=int(len(held.rest)),
                n_pairs=int(len(pairs.query)), n_positive_pairs=int(pairs.label.sum()), final_loss=loss,
                bias_shift=round(shift, 4),
                prepare_seconds=round(t_prep, 3), seconds=round(time.perf_counter() - t0, 3))
    _log(f"  generator: loss {loss:.4f}, {info['seconds']:.2f} s", verbose)
    return LearnedGenerator(net.export(), stats, Z, fb, config.n_heads, info)


def _fit(net, tokens, valid, pairs: _Pairs, post: int, config: LearnedConfig, verbose: bool):
    """Full-batch Adam on the loss of the search score; returns (final loss, scores of the pairs).

    The logit is an increasing function of the score a synthesized item gets at search time,
    log(transform(s) * path score ** path_exponent), so the loss sees what ranking sees: a hinge transform
    saturates at s >= 1 (a vector that is too large ties with everything) and the cluster's path score
    multiplies in. Listwise (the default): per held-out query, the softmax cross-entropy of its relevant pairs
    among all its pairs (new and observed items: the generalized setting, which calibrates s to the trained
    classifiers' scale) plus the same among its new items only (the zero-shot setting). A pointwise weighted BCE
    scored the easy candidates of the sampled clusters well and ranked new items worse at search time."""
    torch = _torch()
    T = {name: torch.as_tensor(a) for name, a in dict(tokens=tokens, valid=valid, **vars(pairs)).items()}
    temperature = torch.nn.Parameter(torch.tensor(1.0))
    offset = torch.nn.Parameter(torch.tensor(0.0))
    opt = Adam(list(net.parameters()) + [temperature, offset], lr=config.lr)
    weight = 1.0 + (config.pos_weight - 1.0) * T["label"]
    new = T["item"] >= 0
    group_all = torch.as_tensor(np.unique(pairs.query, return_inverse=True)[1])
    group_new = torch.as_tensor(np.unique(pairs.query[pairs.item >= 0], return_inverse=True)[1])
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tensors are tiny: more threads only add synchronization (and contention)
    try:
        bar = tqdm(range(config.steps), desc="training generator", disable=not verbose, leave=False)
        for _ in bar:
            s = _pair_scores(net, T, config)
            log_score = (torch.nn.functional.logsigmoid(s) if post == 0 else
                         -torch.relu(1.0 - s) ** post - SATURATION_SLOPE * torch.relu(s - 1.0))
            logit = temperature * (log_score + T["log_path"])
            if config.loss == "listwise":
                loss = listwise_loss(logit, group_all, T["label"]) + listwise_loss(logit[new], group_new, T["label"][new])
            else:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logit + offset, T["label"], weight=weight)
            opt.step(loss)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        with torch.no_grad():
            scores = _pair_scores(net, T, config).numpy()
    finally:
        torch.set_num_threads(old_threads)
    return float(loss.item()), scores


def _log_search_score(score, log_path, post: int) -> np.ndarray:
    """log(transform(s) * path score), as search ranks."""
    return (-np.maximum(1.0 - score, 0.0) ** post if post else -np.logaddexp(0.0, -score)) + log_path


def _generalized_shift(scores, pairs: _Pairs, post: int, tolerance: float, new_in_beam: int,
                       margin: float) -> float:
    """The largest shift of the generated biases with which new items are expected to cost at most
    `tolerance` of top-1 accuracy on held-out queries that no proxy is relevant to (the generalized setting: a
    new item must not push a relevant trained item off the top).

    A query loses its top-1 when its relevant trained item was best among trained items and one of the new
    items in its beam scores higher. From the sampled proxies, p = the share that outscore that item; with
    `new_in_beam` new items in the beam at search time the loss is 1 - (1 - p)^new_in_beam. A few sampled
    proxies would understate it by far. The tree was trained on these queries, so it reaches their relevant
    clusters with higher path scores than it reaches a fresh query's: the shift found is lowered by `margin`
    (never below the floor)."""
    generated = pairs.item >= 0
    n_q = pairs.query.max() + 1
    has_new = np.zeros(n_q, dtype=bool)
    has_new[pairs.query[generated & (pairs.label > 0)]] = True
    rows = ~has_new[pairs.query]
    n_queries = len(np.unique(pairs.query[rows]))
    observed = rows & ~generated
    log_score = _log_search_score(scores, pairs.log_path, post)
    # per query: its best relevant and best other trained item; top-1 when the former wins (ties go against)
    best_rel = np.full(n_q, -np.inf)
    best_other = np.full(n_q, -np.inf)
    rel = observed & (pairs.label > 0)
    np.maximum.at(best_rel, pairs.query[rel], log_score[rel])
    np.maximum.at(best_other, pairs.query[observed & ~rel], log_score[observed & ~rel])
    correct = best_rel > best_other
    cand = rows & generated & correct[pairs.query]
    q = pairs.query[cand]
    n_cand = np.bincount(q, minlength=n_q)

    def expected_loss(shift: float) -> float:
        beats = _log_search_score(scores[cand] + shift, pairs.log_path[cand], post) >= best_rel[q]
        p = np.bincount(q, weights=beats, minlength=n_q) / np.maximum(n_cand, 1)
        return float((1.0 - (1.0 - p) ** new_in_beam).sum() / max(n_queries, 1))

    # floor: most relevant generated pairs keep s >= UNDERFLOW_SCORE, or their transformed scores would
    # underflow float32 to 0 and new items could no longer be ranked at all
    relevant = scores[generated & (pairs.label > 0)]
    underflow = UNDERFLOW_SCORE["sigmoid" if post == 0 else "hinge"]
    lo = float(underflow - np.percentile(relevant, 10)) if len(relevant) else -8.0
    hi = max(lo, 4.0)  # the loss grows with the shift: bisect
    floor = lo
    for _ in range(14):
        mid = (lo + hi) / 2
        if expected_loss(mid) <= tolerance:
            lo = mid
        else:
            hi = mid
    return max(floor, lo - margin)


def _pair_scores(net, T, config: LearnedConfig):
    alpha, beta, gamma = _mix(*net(T["tokens"], T["valid"]), config.parts, config.self_weights)
    item = T["item"].clamp(min=0)
    generated = (alpha[item] * T["u"]).sum(-1) + (beta[item] * T["v"]).sum(-1) + gamma[item]
    return _torch().where(T["item"] >= 0, generated, T["fixed"])


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


def _token_moments(tokens: np.ndarray, valid: np.ndarray):
    """Per token type (item, neighbour) and feature: mean and std over valid tokens (std 1 where constant)."""
    mu = np.zeros((2, N_FEATURES), dtype=np.float32)
    sd = np.ones((2, N_FEATURES), dtype=np.float32)
    for kind, sel in ((0, tokens[:, 0]), (1, tokens[:, 1:][valid[:, 1:]])):
        if len(sel):
            mu[kind] = sel.mean(axis=0)
            s = sel.std(axis=0)
            sd[kind] = np.where(s > 1e-6, s, 1.0)
    return mu, sd


def _as_if_unseen(Z, X, proxies, feature_block, n_blocks: int, min_df: int) -> smat.csr_matrix:
    """The proxies' title vectors as a new item's would be: the vocabulary was built from the training queries
    and the observed titles, so n-grams that only the proxy's own title brought in (often bigrams) are dropped,
    and each block and the row are L2-normalized again, as the featurizer does."""
    df = X.getnnz(axis=0) + Z.getnnz(axis=0)
    T = Z[proxies].tocsr().astype(np.float32)
    T.data[df[T.indices] - 1 < min_df] = 0.0
    T.eliminate_zeros()
    row = np.repeat(np.arange(T.shape[0]), np.diff(T.indptr))
    mass = np.zeros((T.shape[0], n_blocks))
    np.add.at(mass, (row, feature_block[T.indices]), T.data.astype(np.float64) ** 2)
    T.data /= np.sqrt(mass[row, feature_block[T.indices]]).astype(np.float32)
    T = normalize(T).tocsr()
    T.sort_indices()
    return T


def _make_pairs(X, Ys, held: HeldOut, titles, nbrs, W, bias, beams, slot_cluster, n_clusters: int, fb,
                n_blocks: int, config: LearnedConfig, rng) -> _Pairs:
    """For each held-out query (rows of beams), the proxies it is relevant to, `tree_negatives` proxies of its beam
    clusters and `batch_negatives` random proxies (generated scores), and its relevant retrained items plus
    `observed_negatives` retrained items of its beam (fixed scores: their served classifiers W, bias as they
    would be without the held-out clicks); then the dot products the loss needs."""
    queries, proxies, rest = held.queries, held.proxies, held.rest
    cluster = slot_cluster.astype(np.int64)
    Yq = smat.csr_matrix(Ys[queries])
    g_row, g_item, g_label = query_pairs(Yq, beams, proxies, cluster[proxies], n_clusters, config.tree_negatives,
                                         config.batch_negatives, rng)
    o_row, o_idx, o_label = query_pairs(Yq, beams, rest, cluster[rest], n_clusters, config.observed_negatives, 0,
                                        rng)
    o_item = rest[o_idx]
    nb = nbrs[g_item]
    u = pair_dots(X, queries[g_row], W, nb) + np.where(nb >= 0, bias[np.maximum(nb, 0)], 0.0)
    v = pair_dots(X, queries[g_row], titles, g_item, fb, n_blocks)
    fixed = pair_dots(X, queries[o_row], W, o_item)
    n_o = len(o_row)
    return _Pairs(
        query=queries[np.concatenate([g_row, o_row])],
        item=np.concatenate([g_item, np.full(n_o, -1)]),
        label=np.concatenate([g_label, o_label]),
        u=np.concatenate([u, np.zeros((n_o, u.shape[1]))]).astype(np.float32),
        v=np.concatenate([v, np.zeros((n_o, n_blocks))]).astype(np.float32),
        fixed=np.concatenate([np.zeros(len(g_row)), fixed + bias[o_item]]).astype(np.float32),
        log_path=log_path(beams, np.concatenate([g_row, o_row]),
                          np.concatenate([cluster[proxies[g_item]], cluster[o_item]])),
    )
