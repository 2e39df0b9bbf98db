"""The CSR triple the compiled kernels (`xrmeta._core`) take: they check dtypes and never cast."""

from __future__ import annotations

import numpy as np
import scipy.sparse as smat


def csr_arrays(X: smat.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr int64, indices int32, data float32) of X as CSR; arrays already of those types are not copied
    (scipy gives some products and stacks int64 indices)."""
    X = smat.csr_matrix(X)
    return (X.indptr.astype(np.int64, copy=False), X.indices.astype(np.int32, copy=False),
            X.data.astype(np.float32, copy=False))
