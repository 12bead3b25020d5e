"""SCDSEC's structure-enhanced encoder: an autoencoder branch and a GCN branch fused layer by layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
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
        self.n_input = n_input
        self.widths = widths
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

    def forward(
        self,
        x: torch.Tensor,
        adj: torch.Tensor | Sequence[torch.Tensor],
        products: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Embedding of the cells in ``x`` given their normalised adjacency ``adj``.

        ``adj`` is sparse (cells × cells), or a sequence of sparse row blocks that stack to it (as
        :meth:`~scdmac.data.CellGraph.normalized` gives). With blocks, every layer is computed one
        block of cells at a time and only what the graph product needs is held for all cells; the
        embedding is the same up to float rounding (a widening layer projects each block's aggregate).

        ``products``: a list that receives, per layer, what neighbours contribute to a cell's
        structural representation (``F_{l-1} U_l``, or ``F_{l-1}`` where the layer widens and the
        projection follows the aggregation), so that new cells can later be placed on these cells
        (:meth:`place`).
        """
        blocks = [adj] if isinstance(adj, torch.Tensor) else list(adj)

        def aggregate(i: int, block: int, rows: slice, product: torch.Tensor) -> torch.Tensor:
            if block == 0 and products is not None:
                products.append(product)
            # the sparse graph times the narrower of F and F U (see _layers)
            return _sparse_mm(blocks[block], product)

        return self._layers(x, _row_slices([b.shape[0] for b in blocks]), aggregate)

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

        def aggregate(i: int, block: int, rows: slice, product: torch.Tensor) -> torch.Tensor:
            own = product[rows] * self_weight[rows].unsqueeze(-1)
            return _sparse_mm(to_reference, reference_products[i]) + own

        return self._layers(x, [slice(0, x.shape[0])], aggregate)

    def _layers(
        self,
        x: torch.Tensor,
        row_blocks: list[slice],
        aggregate: Callable[[int, int, slice, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """The fused layers over the cells of ``x``, taken in the row blocks ``row_blocks``.

        ``aggregate(layer, block, rows, product)`` gives the graph branch's ``Â F U`` for the cells
        ``rows`` (the ``block``-th block), ``product`` being ``F U`` over all cells: the one quantity
        a cell's output needs from other cells. A widening layer (``U`` maps to more features than
        it reads) computes ``(Â F) U`` instead: ``product`` is then ``F`` and ``U`` is applied to the
        aggregate, so the graph product, and what is held for all cells, stay at the narrower width
        (at the paper's 500 → 2,000 layer, a quarter). Everything else is row by row, so a layer's
        outputs are written block by block, and before a narrower layer they are kept only as that
        layer's two projections (``W F`` and ``F U``), not at their own width.
        """
        n = x.shape[0]
        h_in: torch.Tensor | None = x  # the layer's inputs over all cells, or
        g_in: torch.Tensor | None = x
        h_pre: torch.Tensor | None = None  # ... their projections by the layer's weights
        g_pre: torch.Tensor | None = None
        for i in range(self.n_layers):
            last = i == self.n_layers - 1
            project_next = not last and self.widths[i + 1] < self.widths[i]
            # Â F U on the narrower side: a widening layer aggregates its inputs F and projects after,
            # so neither the graph product nor what is held for all cells is at the wider width
            widening = self.widths[i] > (self.widths[i - 1] if i else self.n_input)
            product = None
            project_after: nn.Module | None = None  # U, where it follows the aggregation
            if self.gcn is not None:
                if g_pre is not None:
                    product = g_pre
                elif widening:
                    product, project_after = _present(g_in), self.gcn[i]
                else:
                    product = self.gcn[i](g_in)
            # one output for both branches when they are fused here (or one is absent): never two copies
            shared = not project_next and (self.ae is None or self.gcn is None or self.layerwise or last)
            h_out = _Rows(n)
            g_out = h_out if shared else _Rows(n)
            for block, rows in enumerate(row_blocks):
                h = g = None
                if self.ae is not None:
                    pre = h_pre[rows] if h_pre is not None else self.ae[i](_present(h_in)[rows])
                    h = self._act(pre, i)
                if product is not None:
                    neighbourhood = aggregate(i, block, rows, product)
                    g = self._act(neighbourhood if project_after is None else project_after(neighbourhood), i)
                if h is None or g is None:
                    h = g = _present(h if g is None else g)
                elif self.layerwise or last:
                    h = g = self.alpha * h + (1.0 - self.alpha) * g
                if project_next:
                    if self.ae is not None:
                        h_out.put(rows, self.ae[i + 1](h))
                    if self.gcn is not None:
                        g_out.put(rows, self.gcn[i + 1](g))
                else:
                    h_out.put(rows, h)
                    if not shared:
                        g_out.put(rows, g)
            if project_next:
                h_in = g_in = None
                h_pre, g_pre = h_out.whole, g_out.whole
            else:
                h_in, g_in = h_out.whole, g_out.whole
                h_pre = g_pre = None
            del product
        assert h_in is not None  # the last layer never projects ahead
        return h_in


def _sparse_mm(graph: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``graph @ dense`` in the graph's precision, also under mixed-precision autocast.

    torch's sparse products take neither bfloat16 nor a mix of dtypes, and their backward fails under
    autocast; the aggregation is a small share of a step's arithmetic, so it stays in float32.
    """
    with torch.autocast(dense.device.type, enabled=False):
        return torch.sparse.mm(graph, dense.to(graph.dtype))


def _present(t: torch.Tensor | None) -> torch.Tensor:
    """``t``, which the branch structure guarantees is there (the constructor keeps at least one branch)."""
    assert t is not None
    return t


def _row_slices(sizes: Sequence[int]) -> list[slice]:
    """Consecutive row ranges of blocks with ``sizes`` rows each."""
    ends = np.cumsum([0, *sizes])
    return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:], strict=True)]


class _Rows:
    """A tensor over ``n`` cells written one block of rows at a time (one block covering all is kept as is)."""

    def __init__(self, n: int):
        self.n = n
        self.whole: torch.Tensor | None = None

    def put(self, rows: slice, block: torch.Tensor) -> None:
        if rows.start == 0 and rows.stop == self.n:
            self.whole = block
            return
        if self.whole is None:
            self.whole = block.new_empty((self.n, *block.shape[1:]))
        self.whole[rows] = block
