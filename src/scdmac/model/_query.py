"""New cells for a trained model: genes matched by name, samples checked, fields transferred from the reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField

from .._constants import REGISTRY_KEYS
from ..data._preprocess import in_memory
from ..data._validate import check_counts, get_counts


def align_genes(adata: AnnData, reference_genes: pd.Index, layer: str | None, model_name: str) -> AnnData:
    """``adata`` itself when it has the reference's genes in order, else a new AnnData of its counts for them.

    Genes are matched by name: a query with the same genes in another order, or with more genes,
    gives a new AnnData holding only the reference genes' counts in the reference order (and the
    query's ``obs``). A query lacking some reference genes is refused: zero counts for an unmeasured
    gene would read as "not expressed". scvi-tools' ``prepare_query_anndata`` fills them with
    zeros where that is what the user wants.
    """
    if adata.var_names.equals(reference_genes):
        return adata
    if adata.var_names.has_duplicates:
        dup = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
        raise ValueError(
            f"The query's gene names are not unique (e.g. {dup}): genes are matched by name, so make them "
            "unique first (adata.var_names_make_unique())."
        )
    missing = reference_genes.difference(adata.var_names)
    if len(missing):
        raise ValueError(
            f"{len(missing)} of the {len(reference_genes)} genes the {model_name} model was trained on are not in "
            f"the query (e.g. {missing[:5].tolist()}). Map cells measured on the reference genes; to treat the "
            f"missing ones as zero counts, run {model_name}.prepare_query_anndata(adata, model) first."
        )
    counts = get_counts(adata, layer)
    if not in_memory(counts):
        raise ValueError(
            "The query is backed on disk and its genes differ from the reference's in order or number: load it "
            "into memory, or subset it to the reference genes in their order (adata[:, model.adata.var_names])."
        )
    positions = adata.var_names.get_indexer(reference_genes)
    aligned = AnnData(obs=adata.obs.copy(), var=pd.DataFrame(index=reference_genes.copy()))
    columns = counts[:, positions]
    if layer is None:
        aligned.X = columns
    else:
        aligned.layers[layer] = columns
    return aligned


def check_query_samples(adata: AnnData, batch_key: str, known: np.ndarray, model_name: str) -> None:
    """Refuse a query whose sample column is missing or names samples the model was not trained on."""
    if batch_key not in adata.obs:
        raise KeyError(
            f"The {model_name} model was set up with batch_key={batch_key!r}, and the query has no obs[{batch_key!r}]: "
            "give each query cell the training sample it comes from."
        )
    unseen = sorted(set(pd.unique(adata.obs[batch_key].astype(str))) - {str(k) for k in known})
    if unseen:
        raise ValueError(
            f"The query holds cells of samples the {model_name} model was not trained on ({unseen[:5]}): it removes "
            "the effects of its training samples only. To map cells of new samples, train a model on the reference "
            f"and query cells together, with batch_key={batch_key!r}."
        )


def query_manager(adata: AnnData, reference: AnnDataManager, model_name: str) -> AnnDataManager:
    """Register ``adata`` with the reference's count layer (and sample), as scvi-tools transfers a setup.

    Only what a trained model reads from new cells is registered: no graph, row numbers or groups.
    """
    setup_args = reference.registry["setup_args"]
    layer, batch_key = setup_args.get("layer"), setup_args.get("batch_key")
    check_counts(get_counts(adata, layer), "the query's X" if layer is None else f"the query's layers[{layer!r}]")
    fields: list = [LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True, correct_data_format=False)]
    if REGISTRY_KEYS.BATCH_KEY in reference.data_registry:
        known = reference.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
        check_query_samples(adata, batch_key, known, model_name)
        fields.append(CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key))
    manager = AnnDataManager(fields=fields, setup_method_args=reference._get_setup_method_args())
    manager.register_fields(adata, source_registry=reference.registry)
    return manager
