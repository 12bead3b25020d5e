"""Placing new cells on a trained graph model's training cells: their neighbours and graph weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._constants import REGISTRY_KEYS
from ..data._graph import BalancedIndex, KnnMethod, NeighborIndex, _to_torch, neighbour_links
from ..data._preprocess import CovariancePCA, fit_pca, log_expression, unit_variance

if TYPE_CHECKING:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from ._scdsec import SCDSEC


@dataclass
class _Reference:
    """The training cells as a fixed graph that new cells attach to.

    Attributes
    ----------
    pca
        The principal components the training graph was built on (refitted on the training cells'
        log expression of the modelled genes, as setup did: the same neighbours, up to the sign of
        a component).
    components
        The training cells' coordinates on them.
    samples
        Training cells' sample codes (``None`` without a sample): neighbours are then balanced across samples.
    n_neighbors, metric, method
        The training graph's settings.
    degrees
        Each training cell's degree in the normalised training graph (self-loop included).
    products
        Each encoder layer's ``F_{l-1} U_l`` (``F_{l-1}`` where the layer widens) for the training cells
        (what a neighbour passes on).
    target_sum
        Total counts each cell is scaled to before ``log1p`` (the model's, for new cells too).
    gene_scaler
        Divides each modelled gene by its standard deviation over the training cells, as setup did
        before PCA (``None`` when setup did not scale genes; see :func:`~scdmac.data._preprocess.unit_variance`).
    index
        The neighbour search over ``components`` (built on the first query, then kept).
    """

    pca: PCA | CovariancePCA
    components: np.ndarray
    samples: np.ndarray | None
    n_neighbors: int
    metric: str
    method: KnnMethod
    degrees: np.ndarray
    products: list[torch.Tensor]
    target_sum: float
    gene_scaler: StandardScaler | None = None
    #: the neighbour search over ``components``, built on the first query
    index: NeighborIndex | BalancedIndex | None = None

    @classmethod
    def build(cls, model: SCDSEC) -> _Reference:
        """From a trained model and its training AnnData."""
        from ._base import _seed

        args = model.adata_manager.registry["setup_args"]
        counts = model.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        genes = model.module.gene_indices.cpu().numpy()
        target = model._normalization_target()
        log_selected = log_expression(counts, genes, target)
        gene_scaler = None
        if args.get("scale_genes", False):
            log_selected, gene_scaler = unit_variance(log_selected)
        # models saved before pcs_above_noise existed built their graph on all n_pcs components
        components, pca = fit_pca(
            log_selected,
            args["n_pcs"],
            random_state=_seed(),
            above_noise=args.get("pcs_above_noise", False),
        )
        samples = None
        if REGISTRY_KEYS.BATCH_KEY in model.adata_manager.data_registry:
            samples = np.asarray(model.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
        graph = model._cell_graph()
        degrees = np.asarray(graph.adjacency.sum(axis=1)).ravel() + 1.0
        x_in = model._encoder_input(model.adata, None, None)
        device = torch.device(model.device)
        products: list[torch.Tensor] = []
        with model._evaluating():
            model.module.encoder(torch.from_numpy(x_in).to(device), graph.normalized(device), products=products)
        return cls(
            pca=pca,
            components=components,
            samples=samples,
            n_neighbors=int(args["n_neighbors"]),
            metric=args.get("metric") or "euclidean",
            method=args.get("knn_method") or "auto",
            degrees=degrees.astype(np.float32),
            products=[p.cpu() for p in products],
            target_sum=target,
            gene_scaler=gene_scaler,
        )

    def neighbors_of(self, counts, gene_indices: np.ndarray) -> np.ndarray:
        """Each new cell's nearest training cells (balanced across samples as the training graph was)."""
        log_selected = log_expression(counts, gene_indices, self.target_sum)
        if self.gene_scaler is not None:
            log_selected = unit_variance(log_selected, self.gene_scaler)[0]
        coords = self.pca.transform(log_selected).astype(np.float32)
        if self.index is None:
            # built on the first query and kept: an approximate index of a large reference costs minutes
            if self.samples is None:
                self.index = NeighborIndex(self.components, self.metric, self.method, n_neighbors=self.n_neighbors)
            else:
                self.index = BalancedIndex(
                    self.components, self.samples, self.metric, self.method, per_group=self._per_sample()
                )
        if isinstance(self.index, BalancedIndex):
            return self.index.query(coords, self._per_sample())[0]
        return self.index.query(coords, self.n_neighbors)[0]

    def _per_sample(self) -> int:
        assert self.samples is not None
        return max(1, -(-self.n_neighbors // len(np.unique(self.samples))))

    def weights(self, neighbors: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """New cells' normalised weights to their training neighbours (sparse) and to themselves.

        As in the training graph's ``D^-1/2 (A + I) D^-1/2``: a new cell with ``k`` distinct neighbours
        has degree ``k + 1``; its neighbours keep their training degrees (the training graph is fixed).
        """
        links = neighbour_links(neighbors, self.degrees.size)  # a padded repeat is one link, as in training
        own_degree = np.diff(links.indptr) + 1.0
        rows = np.repeat(np.arange(links.shape[0]), np.diff(links.indptr))
        links.data = (1.0 / np.sqrt(own_degree[rows] * self.degrees[links.indices])).astype(np.float32)
        return _to_torch(links), torch.from_numpy((1.0 / own_degree).astype(np.float32))
