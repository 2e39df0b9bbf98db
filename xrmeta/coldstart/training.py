"""Held-out clicks for what training learns after the tree: the title trust of observed items
(`xrmeta.ground.TitleTrust`) and the learned generator (`learned`).

Both must be fitted on clicks their classifiers never saw: a trained classifier scores its own training queries
far higher than a fresh query, so fitting on those would trust the classifiers too much. IRENE-style, a sample of
whole leaf clusters is drawn; in it, `proxy_frac` of the clicked items become proxies (stand-ins for new items:
their queries and titles are held out, and they are never their own neighbours), and `observed_query_frac` of the
other queries are held out too. The sampled items' leaf classifiers are retrained without either (PECOS's solver,
the tree's settings, their titles as instances as in training). Everything here takes arrays, not the model.

Fitting needs torch (`pip install 'xrmeta[train]'`); serving never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as smat
from sklearn.preprocessing import normalize

from .. import threads as thread_rule
from ..ground import TitleTrust


class TrainingError(ValueError):
    """Training data that cannot support a fit (too few clicks to hold any out)."""


TORCH_MISSING = "training {what} needs torch, which serving does not: pip install 'xrmeta[train]' (or torch)"


def import_torch(what: str = "the title trust or the learned generator"):
    """The torch module, or an ImportError that says how to install it."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(TORCH_MISSING.format(what=what)) from e
    return torch


@dataclass
class ServedLeaf:
    """The observed items' leaf layer as served, rows in slot order (slots 0..n_base-1, grouped by cluster)."""

    W: smat.csr_matrix  # (n_base, F) float32 item-major classifiers, without the bias
    bias: np.ndarray  # (n_base,) float32
    cluster: np.ndarray  # (n_base,) leaf cluster of each item
    cluster_ptr: np.ndarray  # (n_clusters + 1,) the first slot of each cluster

    @property
    def n_clusters(self) -> int:
        return len(self.cluster_ptr) - 1


@dataclass
class HeldOut:
    """Observed items (slots 0..n_base-1) with some clicks held out. W and bias are the leaf classifiers given
    to `hold_out` (as PECOS trained them when the title trust is fitted on them), but the sampled `rest` items'
    are retrained (by PECOS's solver, no title trust) without the held-out queries and the proxies; clicks counts
    the training queries each classifier saw."""

    proxies: np.ndarray  # slots of the stand-ins for new items
    rest: np.ndarray  # slots whose classifiers were retrained
    queries: np.ndarray  # held-out rows of X, in random order (a prefix is a random sample of them)
    W: smat.csr_matrix  # (n_base, n_features)
    bias: np.ndarray  # (n_base,)
    clicks: np.ndarray  # (n_base,)


def hold_out(X: smat.csr_matrix, Ys: smat.csr_matrix, Zs: smat.csr_matrix, W: smat.csr_matrix, bias: np.ndarray,
             slot_cluster: np.ndarray, base_slot_ptr: np.ndarray, tree, max_items: int, proxy_frac: float,
             observed_query_frac: float, rng, threads: int = -1) -> HeldOut:
    """X: training queries (rows), Ys: their relevance to the observed items in slot order, Zs: the items'
    titles in slot order, W / bias: their served PECOS classifiers (item-major), slot_cluster / base_slot_ptr:
    their leaf clusters; tree: the TreeConfig they were trained with."""
    proxies, rest = _choose_proxies(base_slot_ptr, Ys, max_items, proxy_frac, rng)
    queries = _held_out_queries(Ys, proxies, rest, observed_query_frac, rng)
    W_r, bias_r = _held_out_classifiers(X, Ys, Zs, W, bias, slot_cluster, proxies, rest, queries, tree, threads)
    held = np.zeros(X.shape[0], dtype=bool)
    held[queries] = True
    clicks = np.diff(Ys.tocsc().indptr).astype(np.int64)
    clicks[rest] -= np.asarray(Ys[held][:, rest].sum(axis=0)).ravel().astype(np.int64)
    return HeldOut(proxies, rest, rng.permutation(queries), W_r, bias_r, clicks)


def _choose_proxies(base_slot_ptr, Ys: smat.csr_matrix, max_items: int, proxy_frac: float, rng):
    """Sample whole leaf clusters up to max_items; in them, proxy_frac of the items that have a training query
    become proxies, the rest of the sampled items get held-out classifiers. Returns (proxies, rest), slots."""
    ptr = base_slot_ptr
    sizes = np.diff(ptr)
    order = rng.permutation(len(sizes))
    n_take = int(np.searchsorted(np.cumsum(sizes[order]), max_items)) + 1
    sample = np.concatenate([np.arange(ptr[c], ptr[c + 1]) for c in np.sort(order[:n_take])]).astype(np.int64)
    clicked = sample[np.diff(Ys.tocsc().indptr)[sample] > 0]
    if len(clicked) < 2:
        raise TrainingError("too few trained items with a training query to hold any out")
    n_proxies = max(1, int(round(proxy_frac * len(clicked))))
    proxies = np.sort(rng.choice(clicked, size=min(n_proxies, len(clicked) - 1), replace=False))
    return proxies, np.setdiff1d(sample, proxies)


def _held_out_queries(Ys: smat.csr_matrix, proxies, rest, frac: float, rng) -> np.ndarray:
    """Every query of a proxy (as a new item's queries are unseen), and `frac` of the other queries of the
    sampled items: on those, the observed items' scores are fresh (title trust, and the generalized setting)."""
    Ysc = Ys.tocsc()
    of_proxies = np.unique(Ysc[:, proxies].tocoo().row)
    others = np.setdiff1d(np.unique(Ysc[:, rest].tocoo().row), of_proxies)
    picked = rng.choice(others, size=int(round(frac * len(others))), replace=False)
    return np.union1d(of_proxies, picked).astype(np.int64)


def _held_out_classifiers(X, Ys, Zs, W, bias, slot_cluster, proxies, rest, queries, tree, threads: int):
    """Item-major CSR (n_base x F) of the leaf classifiers and their biases, where the `rest` items' classifiers
    are retrained as if the proxies and the held-out queries did not exist: PECOS's leaf-layer solver with the
    tree's settings, on the kept queries and, as in training, the rest items' own titles (weight
    tree.title_weight on their positive loss). Negatives are teacher-forced: an instance trains the classifiers
    of the clusters of its (non-proxy) positives."""
    from pecos.xmc.base import MLModel, MLProblem

    n_base = W.shape[0]
    W = smat.csr_matrix(W, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32).copy()
    cluster = np.asarray(slot_cluster[:n_base], dtype=np.int64)
    clusters, local = np.unique(cluster[rest], return_inverse=True)
    C = smat.csc_matrix((np.ones(len(rest), np.float32), (np.arange(len(rest)), local)),
                        shape=(len(rest), len(clusters)))
    n_clusters = int(cluster.max()) + 1 if n_base else 0
    cluster_col = np.full(n_clusters, -1)
    cluster_col[clusters] = np.arange(len(clusters))
    not_proxy = np.ones(n_base, dtype=np.float32)
    not_proxy[proxies] = 0.0
    Yr = (Ys @ smat.diags(not_proxy)).tocsr()
    Yr.eliminate_zeros()
    Yr = Yr.tocoo()
    col = cluster_col[cluster[Yr.col]]
    keep = col >= 0
    M = smat.csr_matrix((np.ones(keep.sum(), np.float32), (Yr.row[keep], col[keep])),
                        shape=(X.shape[0], len(clusters)))
    M.data[:] = 1.0
    held_out = np.zeros(X.shape[0], dtype=bool)
    held_out[queries] = True
    used = np.flatnonzero((M.getnnz(axis=1) > 0) & ~held_out)
    inst, Y, Mi = X[used], Ys[used][:, rest].astype(np.float32), M[used]
    R = None
    if tree.title_weight > 0 and tree.title_layers == "all":  # the rest items' titles, each its own positive
        n_r = len(rest)
        inst = smat.vstack([inst, Zs[rest]], format="csr")
        Y = smat.vstack([Y, smat.identity(n_r, dtype=np.float32, format="csr")], format="csr")
        Mi = smat.vstack([Mi, smat.csr_matrix((np.ones(n_r, np.float32), (np.arange(n_r), local)),
                                              shape=(n_r, len(clusters)))], format="csr")
        if tree.title_weight != 1:
            R = Y.copy()
            R.data[:] = 1.0
            R.data[R.indptr[-n_r - 1] :] = tree.title_weight
            R = R.tocsc()
    Y = Y.tocsr()
    Y.data[:] = 1.0
    prob = MLProblem(smat.csr_matrix(inst, dtype=np.float32), Y.tocsc(), C=C, M=Mi.tocsc(), R=R,
                     threads=thread_rule.resolve(threads))
    params = MLModel.TrainParams(threshold=tree.threshold, Cp=tree.Cp, Cn=tree.Cn, bias=1.0, threads=thread_rule.resolve(threads))
    Wr = smat.csc_matrix(MLModel.train(prob, params).W)  # (F + 1) x len(rest), bias weight in the last row
    n_features = Wr.shape[0] - 1
    retrained = Wr[:n_features].T.tocsr()
    row = np.arange(n_base)
    row[rest] = n_base + np.arange(len(rest))
    W = smat.vstack([W, retrained]).tocsr()[row]
    W.sort_indices()
    bias[rest] = Wr[n_features].toarray().ravel()  # the leaf layer's bias input is 1.0
    return W, bias.astype(np.float32)


# ---------------------------------------------------------------- (query, item) pairs
def log_path(beams: smat.csr_matrix, row: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """log path score of each (beam row, cluster) pair; a cluster outside the beam gets the row's lowest beam
    score, an upper bound of a score that search never reaches."""
    n_rows, n_clusters = beams.shape
    counts = np.diff(beams.indptr)
    lowest = np.ones(n_rows, dtype=np.float64)
    lowest[counts > 0] = np.minimum.reduceat(beams.data, beams.indptr[:-1][counts > 0])
    keys = np.repeat(np.arange(n_rows), counts) * n_clusters + beams.indices  # sorted: rows, then clusters
    want = row * n_clusters + cluster
    at = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
    hit = (keys[at] == want) if len(keys) else np.zeros(len(want), dtype=bool)
    out = np.where(hit, beams.data[at] if len(keys) else 0.0, lowest[row])
    return np.log(np.maximum(out, 1e-30)).astype(np.float32)


def beam_sample(beams, rows, pool_cluster, n_clusters: int, m: int, rng) -> np.ndarray:
    """For each beam row in rows, m indices into the pool drawn uniformly from the pool items that lie in the
    row's beam clusters (-1 where there is none)."""
    out = np.full((len(rows), m), -1, dtype=np.int64)
    if m == 0 or len(pool_cluster) == 0:
        return out
    by_cluster = np.argsort(pool_cluster, kind="stable")
    start = np.searchsorted(pool_cluster[by_cluster], np.arange(n_clusters + 1))
    for r, b in enumerate(rows):
        cl = beams.indices[beams.indptr[b] : beams.indptr[b + 1]]
        counts = start[cl + 1] - start[cl]
        total = counts.sum()
        if total == 0:
            continue
        ends = np.cumsum(counts)
        pick = rng.integers(0, total, size=m)
        which = np.searchsorted(ends, pick, side="right")
        out[r] = by_cluster[start[cl[which]] + pick - (ends - counts)[which]]
    return out


def query_pairs(Yq: smat.csr_matrix, beams: smat.csr_matrix, pool: np.ndarray, pool_cluster: np.ndarray,
                n_clusters: int, m_beam: int, m_random: int, rng):
    """For each held-out query (rows of Yq, its relevance to every observed slot): the pool items it is relevant
    to, m_beam pool items of its beam clusters and m_random random pool items. Returns (row, index into pool,
    label); a drawn "negative" may be relevant: labels come from Yq."""
    n_q = Yq.shape[0]
    relevant = Yq[:, pool].tocoo()
    picks = [beam_sample(beams, np.arange(n_q), pool_cluster, n_clusters, m_beam, rng),
             rng.integers(0, len(pool), size=(n_q, m_random))]
    row = np.concatenate([relevant.row] + [np.repeat(np.arange(n_q), p.shape[1]) for p in picks])
    idx = np.concatenate([relevant.col] + [p.ravel() for p in picks])
    row, idx = row[idx >= 0], idx[idx >= 0]
    return row, idx, np.asarray(Yq[row, pool[idx]]).ravel().astype(np.float32)


def pair_dots(X: smat.csr_matrix, query_rows: np.ndarray, M: smat.csr_matrix, item_rows: np.ndarray,
              feature_block: np.ndarray | None = None, n_blocks: int = 1, threads: int = -1) -> np.ndarray:
    """x_q . m_i for each pair (item_rows (P,) or (P, K); -1 = none, 0), per n-gram block when feature_block
    is given: (P,) / (P, K) / (..., n_blocks)."""
    M = smat.csr_matrix(M, dtype=np.float32)
    M.sort_indices()
    two_d = item_rows.ndim == 2
    rows = item_rows if two_d else item_rows[:, None]
    fb = np.zeros(0, np.int8) if feature_block is None else feature_block
    from ..kernels.coldstart import block_dots  # numba, a training helper: serving never imports numba
    out = thread_rule.run(
        block_dots, threads, X.indptr.astype(np.int64), X.indices, X.data, np.asarray(query_rows, np.int64),
        M.indptr.astype(np.int64), M.indices, M.data, np.ascontiguousarray(rows, np.int64),
        fb, n_blocks if feature_block is not None else 1)
    out = out if feature_block is not None else out[..., 0]
    return out if two_d else out[:, 0]


# ---------------------------------------------------------------- title trust
def fit_title_trust(X: smat.csr_matrix, Ys: smat.csr_matrix, Zs: smat.csr_matrix, held: HeldOut, beams,
                    slot_cluster: np.ndarray, n_clusters: int, rng, negatives: int = 32, steps: int = 200,
                    lr: float = 0.05, path_exponent: float = 0.0, verbose: bool = False,
                    threads: int = -1) -> TitleTrust:
    """Fit `TitleTrust` on held-out clicks: for each held-out query (beams: the beam clusters of the first
    beams.shape[0] of held.queries, which come in random order) its relevant
    retrained (rest) items against `negatives` observed items drawn from its whole beam, every one scored
    sigmoid(a[b] * (x . w + bias) + beta[b] * x . z + c[b]) with a classifier that never saw the query as a
    positive (an observed item outside the sample that is relevant to it is left out). The loss is listwise, the
    softmax cross-entropy of each query's candidates on the log of that search score (a learned temperature),
    full-batch Adam; the bucket b counts the clicks the classifier saw. The path exponent is given, not fitted:
    the tree was trained on these queries, so their beams reach their relevant clusters with path scores a
    fresh query does not get."""
    torch = import_torch()

    n_base = held.W.shape[0]
    pool = np.arange(n_base)
    retrained = np.zeros(n_base, dtype=bool)
    retrained[held.rest] = True
    queries = held.queries[: beams.shape[0]]
    row, items, label = query_pairs(smat.csr_matrix(Ys[queries]), beams, pool,
                                    np.asarray(slot_cluster[:n_base], dtype=np.int64), n_clusters, negatives, 0, rng)
    keep = retrained[items] | (label == 0)  # a classifier trained on the query as a positive would give it away
    row, items, label = row[keep], items[keep], label[keep]
    if label.sum() == 0:
        raise TrainingError("no held-out click on a retrained item: cannot fit the title trust")
    q = queries[row]
    u = pair_dots(X, q, held.W, items, threads=threads) + held.bias[items]
    v = pair_dots(normalize(X), q, normalize(Zs), items, threads=threads)
    trust = TitleTrust(post_processor="sigmoid", path_exponent=path_exponent)
    bucket = trust.buckets(held.clicks[items])
    lp = log_path(beams, row, np.asarray(slot_cluster, dtype=np.int64)[items]) * np.float32(path_exponent)
    n_b = len(trust.edges)
    T = {name: torch.as_tensor(a) for name, a in dict(u=u.astype(np.float32), v=v.astype(np.float32), lp=lp,
                                                       label=label, b=bucket.astype(np.int64),
                                                       group=row.astype(np.int64)).items()}
    # start: classifier as trained (a = 1), the title at weight 1, no shift
    p = {"a": torch.full((n_b,), 0.5413), "beta": torch.full((n_b,), 0.5413), "c": torch.zeros(n_b),
         "temp": torch.tensor(1.0)}  # softplus(0.5413) = 1
    for t in p.values():
        t.requires_grad_(True)
    opt = Adam(list(p.values()), lr=lr)
    softplus = torch.nn.functional.softplus
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # some ten thousand pairs: threads only add synchronization
    try:
        for _ in range(steps):
            s = softplus(p["a"])[T["b"]] * T["u"] + softplus(p["beta"])[T["b"]] * T["v"] + p["c"][T["b"]]
            loss = listwise_loss(p["temp"] * (torch.nn.functional.logsigmoid(s) + T["lp"]), T["group"], T["label"])
            opt.step(loss)
    finally:
        torch.set_num_threads(old_threads)
    with torch.no_grad():
        trust.a = [round(float(x), 6) for x in softplus(p["a"])]
        trust.beta = [round(float(x), 6) for x in softplus(p["beta"])]
        trust.c = [round(float(x), 6) for x in p["c"]]
    if verbose:
        print(f"  title trust: a {trust.a}, beta {trust.beta}, c {trust.c} ({int(label.sum())} held-out clicks, "
              f"{len(label)} pairs, loss {float(loss.detach()):.4f})", flush=True)
    return trust


class Adam:
    """Adam on a few tensors, full batch. torch.optim's first optimizer imports torch._dynamo (about a second
    and a half, more than either fit here); this is the same update rule."""

    def __init__(self, params: list, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        import torch

        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, loss) -> None:
        import torch

        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        self.t += 1
        b1, b2 = self.betas
        with torch.no_grad():
            for p, g, m, v in zip(self.params, grads, self.m, self.v):
                if g is None:  # a parameter this loss does not use (the BCE offset, under the listwise loss)
                    continue
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                p.sub_(self.lr * (m / (1 - b1**self.t)) / ((v / (1 - b2**self.t)).sqrt() + self.eps))


def listwise_loss(logit, group, label):
    """Mean over groups (queries) with a relevant pair of -log(softmax mass of the relevant pairs): the loss of
    ranking each query's candidates, which a pointwise loss only approximates."""
    import torch

    n = int(group.max()) + 1 if len(group) else 0
    top = torch.full((n,), -torch.inf).scatter_reduce(0, group, logit.detach(), reduce="amax")
    e = torch.exp(logit - top[group])
    total = torch.zeros(n).index_add(0, group, e)
    relevant = torch.zeros(n).index_add(0, group, e * label)
    has = relevant > 0
    return -(torch.log(relevant[has]) - torch.log(total[has])).mean()
