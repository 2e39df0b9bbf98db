"""Observed items carry their own title: the served classifier of a trained item mixes its XR-Linear classifier
with its title's TF-IDF vector, trusting each by how much click evidence the item has.

On Home Depot most products have one training query or none: a classifier learned from that little outranks
what the title says only by accident, while the title alone ranks observed products far better. Where an item
has many clicks, its classifier knows more than its title. So, with b the item's bucket of training-query counts
(`TitleTrust.edges`),

    w' = a[b] * w + beta[b] * z,      bias' = a[b] * bias + c[b]

and the search scores it as transform(w' . [x, 1]) * path ** path_exponent. The parameters are fitted on
held-out clicks (`coldstart.training.fit_title_trust`); without them (`TitleTrust.pecos()`) the leaf layer is
PECOS's own and xrmeta's top-k equals PECOS's predict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as smat

EDGES = (0, 1, 2, 3, 5, 9)  # bucket b holds items with edges[b] <= training queries < edges[b + 1] (last: open)


@dataclass
class TitleTrust:
    """Per click bucket: scale a of the classifier, weight beta of the title, bias shift c; and how the leaf
    layer turns a raw score into a search score (post_processor, path_exponent)."""

    a: list = field(default_factory=lambda: [1.0] * len(EDGES))
    beta: list = field(default_factory=lambda: [0.0] * len(EDGES))
    c: list = field(default_factory=lambda: [0.0] * len(EDGES))
    post_processor: str = "l3-hinge"
    path_exponent: float = 1.0
    edges: tuple = EDGES

    @classmethod
    def pecos(cls, post_processor: str = "l3-hinge") -> TitleTrust:
        """PECOS's leaf layer as trained: no title, transform(w . [x, 1]) * path score."""
        return cls(post_processor=post_processor)

    @property
    def is_pecos(self) -> bool:
        return (all(a == 1.0 for a in self.a) and not any(self.beta) and not any(self.c)
                and self.path_exponent == 1.0)

    def buckets(self, clicks: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.edges), np.asarray(clicks), side="right") - 1

    def apply(self, W: smat.spmatrix, Z: smat.spmatrix, clicks: np.ndarray, threshold: float) -> smat.csc_matrix:
        """The served leaf layer: W is PECOS's, (features + 1) x items with the bias weight in the last row (its
        input is 1); Z the items' title TF-IDF rows (items x features); clicks their training-query counts."""
        W = smat.csc_matrix(W, dtype=np.float32)
        if self.is_pecos:
            return W
        rows, bias = self.apply_rows(W[:-1].T.tocsr(), W[-1].toarray().ravel(), Z, clicks, threshold)
        out = smat.vstack([rows.T, smat.csr_matrix(bias.reshape(1, -1))]).tocsc()
        out.eliminate_zeros()
        out.sort_indices()
        return out

    def apply_rows(self, W: smat.csr_matrix, bias: np.ndarray, Z: smat.spmatrix, clicks: np.ndarray,
                   threshold: float) -> tuple[smat.csr_matrix, np.ndarray]:
        """(w', bias') for item-major classifier rows W (items x features) and their biases. Weights below
        threshold are pruned, as PECOS prunes its own."""
        W = smat.csr_matrix(W, dtype=np.float32)
        bias = np.asarray(bias, dtype=np.float32)
        if self.is_pecos:
            return W, bias
        b = self.buckets(clicks)
        a, beta, c = (np.asarray(v, dtype=np.float32)[b] for v in (self.a, self.beta, self.c))
        Z = smat.csr_matrix(Z, dtype=np.float32)
        out = (smat.diags(a) @ W + smat.diags(beta) @ Z).tocsr()
        out.data[np.abs(out.data) < threshold] = 0.0
        out.eliminate_zeros()
        out.sort_indices()
        return out.astype(np.float32), (a * bias + c).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TitleTrust:
        d = dict(d)
        d["edges"] = tuple(d.get("edges", EDGES))
        return cls(**d)

