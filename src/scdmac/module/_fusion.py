"""SCDSEC's structure-enhanced encoder: an autoencoder branch and a GCN branch fused layer by layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _layers(n_in: int, widths: Sequence[int], bias: bool = True) -> nn.ModuleList:
    dims = [n_in, *widths]
    return nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(dims[:-1], dims[1:], strict=True))


class FusionEncoder(nn.Module):
    """Encoder whose layers mix a cell's own features with its graph neighbourhood's.

    Layer ``l`` computes the internal representation ``H_l = act(W_l F_{l-1})`` and the structural one
    ``G_l = act(Â F_{l-1} U_l)``, and passes on ``F_l = α H_l + (1-α) G_l``. The last layer is
    linear and its fused output is the embedding. With ``layerwise=False`` the two branches run
    apart (``H_l`` reads ``H_{l-1}``, ``G_l`` reads ``G_{l-1}``) and are fused once, at the end
    (the paper's "w/o RE" ablation). ``α = 1`` leaves out the GCN branch, ``α = 0`` the
    autoencoder branch; the unused branch then has no parameters.

    Parameters
    ----------
    n_input
        Input features.
    hidden_widths
        Widths of the hidden layers.
    n_latent
        Embedding dimension.
    alpha
        Weight ``α`` of the autoencoder branch.
    layerwise
        Fuse at every layer (default) or only the last.
    dropout_rate
        Dropout on each hidden layer's output.
    """

    def __init__(
        self,
        n_input: int,
        hidden_widths: Sequence[int] = (500, 500, 2000),
        n_latent: int = 10,
        alpha: float = 0.5,
        layerwise: bool = True,
        dropout_rate: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
        widths = [*hidden_widths, n_latent]
        self.alpha = alpha
        self.layerwise = layerwise
        self.dropout_rate = dropout_rate
        self.ae = _layers(n_input, widths) if alpha > 0 else None
        self.gcn = _layers(n_input, widths, bias=False) if alpha < 1 else None
        # per-cell layer norm: batch statistics would be biased, batches being groups of similar cells
        self.norms = nn.ModuleList(nn.LayerNorm(w, elementwise_affine=False) for w in hidden_widths)
        self.n_layers = len(widths)

    def _act(self, y: torch.Tensor, i: int) -> torch.Tensor:
        if i == self.n_layers - 1:
            return y
        return F.dropout(F.relu(self.norms[i](y)), self.dropout_rate, self.training)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Embedding of the cells in ``x`` given their normalised adjacency ``adj`` (sparse, cells × cells)."""
        h_in = g_in = x
        for i in range(self.n_layers):
            last = i == self.n_layers - 1
            h = self._act(self.ae[i](h_in), i) if self.ae is not None else None
            # Â (F U): multiply the narrow dense product by the sparse graph, never the other way round
            g = self._act(torch.sparse.mm(adj, self.gcn[i](g_in)), i) if self.gcn is not None else None
            if h is None or g is None:
                only = h if g is None else g
                assert only is not None  # the constructor keeps at least one branch
                h_in = g_in = only
            elif self.layerwise or last:
                h_in = g_in = self.alpha * h + (1.0 - self.alpha) * g
            else:
                h_in, g_in = h, g
        return h_in
