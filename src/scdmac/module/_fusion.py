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

    def forward(self, x: torch.Tensor, adj: torch.Tensor, products: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Embedding of the cells in ``x`` given their normalised adjacency ``adj`` (sparse, cells × cells).

        ``products``: a list that receives each layer's ``F_{l-1} U_l`` (what neighbours contribute
        to a cell's structural representation), so that new cells can later be placed on these
        cells (:meth:`place`).
        """

        def aggregate(i: int, g_in: torch.Tensor) -> torch.Tensor:
            assert self.gcn is not None  # called only when the graph branch exists
            product = self.gcn[i](g_in)
            if products is not None:
                products.append(product)
            # Â (F U): multiply the narrow dense product by the sparse graph, never the other way round
            return torch.sparse.mm(adj, product)

        return self._layers(x, aggregate)

    def place(
        self,
        x: torch.Tensor,
        to_reference: torch.Tensor,
        self_weight: torch.Tensor,
        reference_products: list[torch.Tensor],
    ) -> torch.Tensor:
        """Embedding of new cells whose graph neighbours are fixed reference cells.

        Each new cell's structural representation aggregates its own features (weight
        ``self_weight``) and its reference neighbours' layer products (``to_reference``, sparse new ×
        reference normalised weights; ``reference_products`` from :meth:`forward` on the reference).
        New cells neither link to each other nor change the reference, so a cell's embedding does
        not depend on which other new cells come with it.
        """

        def aggregate(i: int, g_in: torch.Tensor) -> torch.Tensor:
            assert self.gcn is not None  # called only when the graph branch exists
            own = self.gcn[i](g_in) * self_weight.unsqueeze(-1)
            return torch.sparse.mm(to_reference, reference_products[i]) + own

        return self._layers(x, aggregate)

    def _layers(self, x: torch.Tensor, aggregate) -> torch.Tensor:
        """The fused layers, with the graph branch's ``Â F U`` given by ``aggregate(layer, F)``."""
        h_in = g_in = x
        for i in range(self.n_layers):
            last = i == self.n_layers - 1
            h = self._act(self.ae[i](h_in), i) if self.ae is not None else None
            g = self._act(aggregate(i, g_in), i) if self.gcn is not None else None
            if h is None or g is None:
                only = h if g is None else g
                assert only is not None  # the constructor keeps at least one branch
                h_in = g_in = only
            elif self.layerwise or last:
                h_in = g_in = self.alpha * h + (1.0 - self.alpha) * g
            else:
                h_in, g_in = h, g
        return h_in
