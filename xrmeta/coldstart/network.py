"""The learned generator's network: a pre-LN transformer over [item token, neighbour tokens] (torch, used by
training only; the compiled `_core.meta_forward` runs the same forward pass when serving, and tests check that
the three -- torch, C++ and the numba oracle `kernels.meta.meta_forward` -- agree). `learned` says what the
tokens hold and how the outputs mix a classifier."""

from __future__ import annotations

import numpy as np

from .generate import Calibration
from .learned import N_FEATURES, LearnedConfig
from .training import import_torch


def make_net(config: LearnedConfig, k: int, n_blocks: int, calibration: Calibration, mu: np.ndarray,
             sd: np.ndarray):
    """The generator's network (a torch Module) for k neighbours and n_blocks n-gram blocks, initialised from
    config.seed at the mean_self baseline (the calibration of title vectors); mu, sd (2, N_FEATURES) float32:
    the token features' moments per token type (item, neighbour), by which the inputs are standardised.

    forward(tokens (n, k + 1, N_FEATURES) float32, valid (n, k + 1) bool) -> (alpha (n, k), out (n, n_blocks +
    1)): the neighbour coefficients and, per item, the title coefficient of each block then the bias;
    export() -> {name: float32 array} in `learned.PARAM_ORDER`, what `LearnedGenerator` serves."""
    torch = import_torch()
    nn = torch.nn

    class MetaNet(nn.Module):
        """Pre-LN transformer over [item token, neighbour tokens]; mirrored by `_core.meta_forward`."""

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
            """Plain float32 arrays for `_core.meta_forward`."""
            return {name: t.detach().numpy().astype(np.float32).copy() for name, t in self.state_dict().items()}

    return MetaNet()


def _inverse_softplus(y: float) -> float:
    return float(np.log(np.expm1(y)))
