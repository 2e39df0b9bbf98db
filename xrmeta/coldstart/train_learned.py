"""Training of the learned generator (torch; serving needs none of it).

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

Calibration for the generalized setting (every item ranked): a last shift of gamma puts generated scores on the
trained items' scale (`LearnedConfig.bias_calibration`). By default ("match") the shift centres the scores new
items get for their relevant held-out queries on those trained items get for theirs (medians; the trained
items' classifiers were retrained without those queries, so neither side saw them): a relevant new item then
competes as a relevant trained one does. The alternative ("steal") is the largest shift at which, on held-out
queries with no relevant proxy, new items are expected to cost at most `steal_tolerance` of top-1 accuracy, with
`new_in_beam` of them in a query's beam, lowered by `bias_margin`; it kept new items far under trained ones (on
the new items' queries, every item ranked, PriceRunner P@1 27 against BM25's 68: benchmarks/feedback.py), and
its bisection over a few sampled competitors moved by 3 between two draws of held-out clicks. Either is floored
so that most relevant generated scores stay where float32 can still rank them.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as smat
from sklearn.preprocessing import normalize
from tqdm import tqdm

from ..layout import POST_PROCESSORS
from ..ground import TitleTrust
from .generate import Calibration
from .learned import N_FEATURES, GeneratorError, LearnedConfig, LearnedGenerator, _mix, slot_stats, token_features
from .network import make_net
from .select import Selector, neighbours_excluding
from .training import Adam, HeldOut, ServedLeaf, import_torch, listwise_loss, log_path, pair_dots, query_pairs

# A hinge transform is flat at s >= 1, so a negative pushed there gets no gradient and training can run away
# into saturation; in the loss only, scores above 1 lose this much log-score per unit.
SATURATION_SLOPE = 0.2
# exp(-(1 - s)^3) underflows float32 near s = -3.4 (sooner once multiplied by a path score); the sigmoid only near
# s = -87: the raw score below which a transformed score can no longer be ranked, per post-processor
UNDERFLOW_SCORE = {"hinge": -2.5, "sigmoid": -60.0}


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


def train_generator(X: smat.csr_matrix, Ys: smat.csr_matrix, held: HeldOut, leaf: ServedLeaf, selector: Selector,
                    upper, trust: TitleTrust, threshold: float, feature_block: np.ndarray, min_df: int,
                    calibration: Calibration, k: int, config: LearnedConfig | None = None, threads: int = -1,
                    verbose: bool = True, rng: np.random.Generator | None = None) -> LearnedGenerator:
    """Train the learned generator, the tree and the observed classifiers frozen, on held-out clicks.

    X: (n_queries, F) float32 CSR, the training queries' TF-IDF rows; Ys: (n_queries, n_base) their relevance to
    the observed items, columns in slot order; held: the clicks held out of them (`training.hold_out`); leaf: the
    observed items' leaf layer as served; selector: their title rows (its Z) and neighbour search; upper: the
    tree's layers above the leaves (`tree.UpperLayers`: the held-out queries' beams); trust: how the served leaf
    layer mixes titles in and scores (`ground.TitleTrust`); threshold: the pruning of served weights;
    feature_block (F,) int8 and min_df: the featurizer's n-gram block of each feature and its document-frequency
    floor; calibration: the title vectors' score scale (the network starts at mean_self); k: neighbours per
    item; rng: the random state the sampling of pairs goes on with (None: a fresh one from config.seed; the one
    that drew `held` when it was drawn for this training). The module docstring explains the proxies, the loss
    and the calibration of the bias."""
    torch = import_torch()
    config = config or LearnedConfig()
    config.validate()
    t0 = time.perf_counter()
    rng = np.random.default_rng(config.seed) if rng is None else rng
    torch.manual_seed(config.seed)
    Z, fb = selector.Z, feature_block
    n_blocks = int(fb.max()) + 1
    X = smat.csr_matrix(X, dtype=np.float32)
    X.sort_indices()
    n_base = leaf.W.shape[0]
    if Ys.shape != (X.shape[0], n_base):
        raise GeneratorError(f"Y is {Ys.shape}, expected {X.shape[0]} queries x {n_base} trained items")
    W, bias = _served_without_held_clicks(leaf, held, trust, Z, threshold)
    # tokens describe neighbours by their served classifiers (what `plan` sees), while the pair scores below
    # use the held-out ones
    stats = slot_stats(leaf.W.indptr, leaf.W.data, leaf.bias, np.diff(Ys.tocsc().indptr))
    titles = _as_if_unseen(Z, X, held.proxies, fb, n_blocks, min_df)
    nbrs, sims = neighbours_excluding(selector, titles, held.proxies, k, threads=threads)
    tokens, valid = token_features(titles, nbrs, sims, Z, stats, fb, n_blocks, threads)
    held = dataclasses.replace(held, queries=held.queries[: config.max_queries])
    beams = upper.beams(X[held.queries], config.beam_size, threads=threads).tocsr()
    beams.sort_indices()
    pairs = _make_pairs(X, Ys, held, titles, nbrs, W, bias, beams, leaf.cluster, leaf.n_clusters, fb, n_blocks,
                        config, rng, threads)
    pairs.log_path *= np.float32(trust.path_exponent)  # how much the path score counts at search time
    t_prep = time.perf_counter() - t0
    _log(f"  generator: {len(held.proxies)} proxies ({len(held.rest)} classifiers retrained), {len(pairs.query)} "
         f"pairs, prepared in {t_prep:.2f} s", verbose)

    net = make_net(config, k, n_blocks, calibration, *_token_moments(tokens, valid))
    post = POST_PROCESSORS[trust.post_processor]
    loss, scores = _fit(net, tokens, valid, pairs, post, config, verbose)
    if config.bias_calibration == "match":
        shift = _matched_shift(scores, pairs, post)
    else:
        shift = _generalized_shift(scores, pairs, post, config.steal_tolerance, config.new_in_beam,
                                   config.bias_margin)
    with torch.no_grad():
        net.b_self[-1] += shift
    info = dict(config=asdict(config), n_proxies=int(len(held.proxies)), n_retrained=int(len(held.rest)),
                n_pairs=int(len(pairs.query)), n_positive_pairs=int(pairs.label.sum()), final_loss=loss,
                bias_shift=round(shift, 4),
                prepare_seconds=round(t_prep, 3), seconds=round(time.perf_counter() - t0, 3))
    _log(f"  generator: loss {loss:.4f}, {info['seconds']:.2f} s", verbose)
    return LearnedGenerator(net.export(), stats, Z, fb, config.n_heads, info)


def _served_without_held_clicks(leaf: ServedLeaf, held: HeldOut, trust: TitleTrust, Z, threshold: float):
    """The observed classifiers as served, but those `held` retrained without the held-out clicks (its `rest`),
    with the title trust applied to them as to the served ones (a row's trust depends on that row alone)."""
    rest = held.rest
    W_rest, bias_rest = trust.apply_rows(held.W[rest], held.bias[rest], Z[rest], held.clicks[rest], threshold)
    n = leaf.W.shape[0]
    row = np.arange(n)
    row[rest] = n + np.arange(len(rest))
    W = smat.vstack([smat.csr_matrix(leaf.W, dtype=np.float32), W_rest]).tocsr()[row]
    W.sort_indices()
    bias = np.asarray(leaf.bias, dtype=np.float32).copy()
    bias[rest] = bias_rest
    return W, bias


def _fit(net, tokens, valid, pairs: _Pairs, post: int, config: LearnedConfig, verbose: bool):
    """Full-batch Adam on the loss of the search score; returns (final loss, scores of the pairs).

    The logit is an increasing function of the score a synthesized item gets at search time,
    log(transform(s) * path score ** path_exponent), so the loss sees what ranking sees: a hinge transform
    saturates at s >= 1 (a vector that is too large ties with everything) and the cluster's path score
    multiplies in. Listwise (the default): per held-out query, the softmax cross-entropy of its relevant pairs
    among all its pairs (new and observed items: the generalized setting, which calibrates s to the trained
    classifiers' scale) plus the same among its new items only (the zero-shot setting). A pointwise weighted BCE
    scored the easy candidates of the sampled clusters well and ranked new items worse at search time."""
    torch = import_torch()
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


def _floor(scores, pairs: _Pairs, post: int) -> float:
    """The lowest shift: most relevant generated pairs keep s >= UNDERFLOW_SCORE, or their transformed scores would
    underflow float32 to 0 and new items could no longer be ranked at all."""
    relevant = scores[(pairs.item >= 0) & (pairs.label > 0)]
    underflow = UNDERFLOW_SCORE["sigmoid" if post == 0 else "hinge"]
    return float(underflow - np.percentile(relevant, 10)) if len(relevant) else -8.0


def _matched_shift(scores, pairs: _Pairs, post: int) -> float:
    """The shift that moves the median score of relevant (held-out query, proxy) pairs onto that of relevant
    (held-out query, retrained item) pairs (0 when either is missing), floored (`_floor`). Raw scores: the
    transform is monotone, and with the path ignored (exponent 0, the fitted title trust's) medians of search
    scores match too."""
    generated, relevant = pairs.item >= 0, pairs.label > 0
    if not (generated & relevant).any() or not (~generated & relevant).any():
        return max(_floor(scores, pairs, post), 0.0)
    shift = float(np.median(scores[~generated & relevant]) - np.median(scores[generated & relevant]))
    return max(_floor(scores, pairs, post), shift)


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

    lo = floor = _floor(scores, pairs, post)
    hi = max(lo, 4.0)  # the loss grows with the shift: bisect
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
    return import_torch().where(T["item"] >= 0, generated, T["fixed"])


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
                n_blocks: int, config: LearnedConfig, rng, threads: int = -1) -> _Pairs:
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
    u = pair_dots(X, queries[g_row], W, nb, threads=threads) + np.where(nb >= 0, bias[np.maximum(nb, 0)], 0.0)
    v = pair_dots(X, queries[g_row], titles, g_item, fb, n_blocks, threads)
    fixed = pair_dots(X, queries[o_row], W, o_item, threads=threads)
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
