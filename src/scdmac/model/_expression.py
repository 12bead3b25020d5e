"""Denoised expression and differential expression on it, with scvi-tools' signatures and DE machinery."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model.base import BaseModelClass
from scvi.model.base._de_core import _de_core
from scvi.utils import de_dsp

from .._constants import REGISTRY_KEYS
from ..data._preprocess import library_size as observed_library
from ..data._preprocess import row_chunks
from ..data._validate import check_indices


class ExpressionMixin(BaseModelClass):
    """``get_normalized_expression`` and ``differential_expression`` for a model with a ZINB decoder.

    The model provides :meth:`_decoded_scale`: the decoder's expression of the modelled genes for
    some cells, decoded for a given sample (or each cell's own). Only the modelled (highly variable)
    genes have an expression: they are the columns.
    """

    hvg_key: Callable[[], str]

    def _decoded_scale(self, adata: AnnData, rows: np.ndarray | None, sample: int | None, batch_size: int | None):
        """Cells × modelled genes of the decoder's ZINB mean at the median library.

        ``sample``: a sample code, or ``None`` for each cell's own sample (the average sample without
        one registered).
        """
        raise NotImplementedError

    def _modelled_genes(self, adata: AnnData) -> pd.Index:
        return adata.var_names[self.module.gene_indices.cpu().numpy()]

    def _sample_codes(self, transform_batch) -> list[int | None]:
        """Sample codes to decode for: ``[None]`` (each cell's own) or the codes of the named samples."""
        if transform_batch is None:
            return [None]
        names = [transform_batch] if isinstance(transform_batch, str | int | np.integer) else list(transform_batch)
        if REGISTRY_KEYS.BATCH_KEY not in self.adata_manager.data_registry:
            raise ValueError("transform_batch needs a sample: this model was set up without batch_key.")
        mapping = [str(c) for c in self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping]
        codes: list[int | None] = []
        for name in names:
            if str(name) not in mapping:
                raise ValueError(f"transform_batch {name!r} is not one of the training samples {mapping}.")
            codes.append(mapping.index(str(name)))
        return codes

    def get_normalized_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        transform_batch: str | int | Sequence[str | int] | None = None,
        gene_list: Sequence[str] | None = None,
        library_size: float | Literal["latent"] = 1,
        n_samples: int = 1,
        n_samples_overall: int | None = None,
        batch_size: int | None = None,
        return_mean: bool = True,
        return_numpy: bool | None = None,
        silent: bool = True,
        **kwargs,
    ) -> np.ndarray | pd.DataFrame:
        """Denoised expression of the modelled genes, normalised per cell, as scvi-tools returns it.

        The ZINB decoder's mean for each cell, scaled to sum to ``library_size`` over the modelled
        genes (scvi-tools scales over all genes; these models decode only the highly variable ones).
        The models are deterministic: every sample of a cell is the same.

        Parameters
        ----------
        adata
            AnnData of the training cells or new cells (default: the training data).
        indices
            Cells to return (default: all).
        transform_batch
            Sample(s) to decode every cell for (names or codes; several are averaged). ``None``: each
            cell's own sample (with ``batch_key``), or the average sample.
        gene_list
            Modelled genes to return (default: all of them).
        library_size
            Total of each cell's row, or ``"latent"`` for the cell's own library size.
        n_samples
            Samples per cell (identical: the model is deterministic).
        n_samples_overall
            Draw this many cells at random (with replacement) from ``indices``, as scvi-tools does.
        batch_size
            Cells per forward pass.
        return_mean
            Average the ``n_samples`` samples.
        return_numpy
            Return an array instead of a DataFrame (always an array for several samples not averaged).
        silent, **kwargs
            Accepted for scvi-tools' signature (``weights``, ``dataloader``…); not used.

        Returns
        -------
        :class:`pandas.DataFrame` or :class:`numpy.ndarray`
            Cells × genes (``n_samples`` × cells × genes when samples are not averaged).
        """
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        rows = check_indices(indices, adata.n_obs)
        if n_samples_overall is not None:
            pool = np.arange(adata.n_obs) if rows is None else rows
            rows = np.random.choice(pool, n_samples_overall)
        genes = self._modelled_genes(adata)
        columns = np.arange(len(genes))
        if gene_list is not None:
            unknown = [g for g in gene_list if g not in genes]
            if unknown:
                raise ValueError(
                    f"Genes {unknown[:5]} are not modelled by this model (only its {len(genes)} highly variable "
                    f"genes are, adata.var[{self.hvg_key()!r}])."
                )
            columns = genes.get_indexer(list(gene_list))
        codes = self._sample_codes(transform_batch)
        # each sample's expression normalised, then averaged over the samples (as scvi-tools does)
        decoded = [self._decoded_scale(adata, rows, code, batch_size) for code in codes]
        scale = np.mean([d / d.sum(1, keepdims=True) for d in decoded], axis=0)
        if library_size == "latent":
            counts = self.get_anndata_manager(adata, required=True).get_from_registry(REGISTRY_KEYS.X_KEY)
            libraries = observed_library(counts)
            scale = scale * (libraries if rows is None else libraries[rows])[:, None]
        else:
            scale = scale * float(library_size)
        scale = scale[:, columns].astype(np.float32)
        if n_samples > 1 and not return_mean:
            return np.repeat(scale[None], n_samples, axis=0)
        if return_numpy:
            return scale
        names = adata.obs_names if rows is None else adata.obs_names[rows]
        return pd.DataFrame(scale, index=names, columns=genes[columns])

    @de_dsp.dedent
    def differential_expression(
        self,
        adata: AnnData | None = None,
        groupby: str | None = None,
        group1: Sequence[str] | None = None,
        group2: str | None = None,
        idx1: Sequence[int] | Sequence[bool] | str | None = None,
        idx2: Sequence[int] | Sequence[bool] | str | None = None,
        mode: Literal["vanilla", "change"] = "change",
        delta: float = 0.25,
        batch_size: int | None = None,
        all_stats: bool = True,
        batch_correction: bool = False,
        batchid1: Sequence[str] | None = None,
        batchid2: Sequence[str] | None = None,
        fdr_target: float = 0.05,
        silent: bool = False,
        **kwargs,
    ) -> pd.DataFrame:
        r"""Differential expression of the modelled genes between groups of cells, by scvi-tools' machinery.

        scvi-tools' Bayesian DE (``_de_core``, as :meth:`scvi.model.SCVI.differential_expression`)
        on :meth:`get_normalized_expression`; raw-count statistics (``all_stats``) from scvi-tools
        too, for the modelled genes. Typical use: ``groupby=model.cluster_key``.

        Parameters
        ----------
        %(de_adata)s
        %(de_groupby)s
        %(de_group1)s
        %(de_group2)s
        %(de_idx1)s
        %(de_idx2)s
        %(de_mode)s
        %(de_delta)s
        %(de_batch_size)s
        %(de_all_stats)s
        %(de_batch_correction)s
        %(de_batchid1)s
        %(de_batchid2)s
        %(de_fdr_target)s
        %(de_silent)s
        **kwargs
            Passed to scvi-tools' ``DifferentialComputation.get_bayes_factors``.

        Returns
        -------
        :class:`pandas.DataFrame`
            One row per modelled gene and comparison, scvi-tools' columns (``proba_de``,
            ``bayes_factor``, ``lfc_mean``, … and the raw-count statistics).
        """
        from scvi.model._utils import scrna_raw_counts_properties

        adata = self._validate_anndata(adata)
        # scvi-tools reads raw counts (pseudocounts, statistics) from its manager over all of its genes:
        # give it one over the modelled genes, whose expression the model has
        groups = _de_groups(adata, self._modelled_genes(adata), self.get_anndata_manager(adata, required=True))

        if group1 is None and idx1 is None and groupby is not None:
            # every non-empty group (a cluster may hold no cell; scvi-tools would fail on it)
            sizes = adata.obs[groupby].astype("category").value_counts(sort=False)
            group1 = [g for g, n in sizes.items() if n > 0]

        def expression(_, **args):
            return self.get_normalized_expression(adata, return_numpy=True, batch_size=batch_size, **args)

        return _de_core(
            groups,
            expression,
            None,
            groupby,
            group1,
            group2,
            idx1,
            idx2,
            all_stats,
            scrna_raw_counts_properties,
            groups.adata.var_names,
            mode,
            batchid1,
            batchid2,
            delta,
            batch_correction,
            fdr_target,
            silent,
            **kwargs,
        )


def _de_groups(adata: AnnData, genes: pd.Index, manager: AnnDataManager) -> AnnDataManager:
    """A manager of the modelled genes' raw counts and the cells' obs (and sample), for scvi-tools' DE."""
    counts = manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    positions = adata.var_names.get_indexer(genes)
    block = sp.vstack([rows[:, positions] for _, rows in row_chunks(counts)], format="csr")
    cells = AnnData(X=block, obs=adata.obs.copy(), var=pd.DataFrame(index=genes))
    fields: list = [LayerField(REGISTRY_KEYS.X_KEY, None, is_count_data=True)]
    if REGISTRY_KEYS.BATCH_KEY in manager.data_registry:
        batch_key = manager.registry["setup_args"]["batch_key"]
        fields.append(CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key))
    groups = AnnDataManager(fields=fields)
    groups.register_fields(cells)
    return groups
