"""The registered counts held on the training device, so that minibatches are cut there."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ._preprocess import in_memory

#: share of a GPU's free memory the counts may take for ``counts_on_device="auto"`` to move them there
DEVICE_MEMORY_SHARE = 0.25


def fits_on_gpu(nbytes: int, device: torch.device | str = "cuda") -> bool:
    """Whether ``nbytes`` take at most :data:`DEVICE_MEMORY_SHARE` of a GPU's free memory (false off a GPU).

    Parameters
    ----------
    nbytes
        Size of the data to place, in bytes.
    device
        The device asked about; any device other than a CUDA one gives ``False``.

    Returns
    -------
    bool
        Whether the data fit in the device's share.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_MEMORY_SHARE * free


def check_counts_on_device(value) -> None:
    """Refuse a ``counts_on_device`` setting other than ``True``, ``False`` or ``"auto"``.

    Parameters
    ----------
    value
        The ``counts_on_device`` setting given to ``train()`` or :class:`~scdmac.data.CellDataModule`.
    """
    if value not in (True, False, "auto"):
        raise ValueError(f"counts_on_device must be True, False or 'auto', not {value!r}.")


class DeviceCounts:
    """A cells × genes count matrix as compressed sparse rows on one device, read there row by row.

    A minibatch then moves only its cells' row numbers from the loader to the device; the rows are
    gathered and densified on the device (no per-batch copy of counts from host memory, no sparse
    slicing in the loader's process). Nothing is converted until first use; the copy on a device is
    made then and kept while this object lives.

    Parameters
    ----------
    matrix
        The registered counts (scipy sparse or dense, in memory); never written to.
    """

    def __init__(self, matrix):
        if not in_memory(matrix):
            raise ValueError(
                "Counts can be held on the training device only when they are in memory; this AnnData is "
                "backed on disk. Read it without backed= (anndata.read_h5ad(path)) or leave counts_on_device='auto'."
            )
        self.matrix = matrix
        self.shape = tuple(matrix.shape)
        self._host: dict[str, torch.Tensor] | None = None
        self._on: dict[torch.device, dict[str, torch.Tensor]] = {}

    @property
    def nbytes(self) -> int:
        """Bytes the matrix takes on a device (float32 values, 32-bit gene and 64-bit row positions)."""
        nnz = self.matrix.nnz if sp.issparse(self.matrix) else int(np.count_nonzero(self.matrix))
        return 8 * nnz + 8 * (self.shape[0] + 1)

    def fits(self, device: torch.device | str) -> bool:
        """Whether the matrix takes at most :data:`DEVICE_MEMORY_SHARE` of a GPU's free memory (false off a GPU).

        Parameters
        ----------
        device
            The training device (see :func:`fits_on_gpu`).

        Returns
        -------
        bool
            Whether the counts fit in the device's share (:attr:`nbytes`).
        """
        return fits_on_gpu(self.nbytes, device)

    def _tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        if self._host is None:
            # shares the AnnData's arrays where it can (a canonical float32 CSR matrix)
            csr = sp.csr_matrix(self.matrix, dtype=np.float32)
            if not csr.has_canonical_format:
                # a row gather assumes one entry per (row, gene), in a matrix of our own
                csr = csr.copy()
                csr.sum_duplicates()
            self._host = {
                "indptr": torch.from_numpy(csr.indptr.astype(np.int64)),
                "indices": torch.from_numpy(np.asarray(csr.indices, dtype=np.int32)),
                "data": torch.from_numpy(np.asarray(csr.data)),
            }
        if device.type == "cpu":
            return self._host
        if device not in self._on:
            self._on[device] = {name: t.to(device) for name, t in self._host.items()}
        return self._on[device]

    def rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Dense float32 counts of ``rows``, on ``rows``' device, in their order.

        Parameters
        ----------
        rows
            Row numbers (repeats allowed), on the device to read on.

        Returns
        -------
        :class:`torch.Tensor`
            ``(len(rows), n_genes)`` float32.
        """
        parts = self._tensors(rows.device)
        rows = rows.long().view(-1)
        start = parts["indptr"][rows]
        length = parts["indptr"][rows + 1] - start
        n_entries = int(length.sum())
        # for every stored entry of the requested rows: which output row it fills, and where it is stored
        out_row = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), length, output_size=n_entries)
        first_out = torch.cumsum(length, 0) - length
        stored = torch.arange(n_entries, device=rows.device) - first_out[out_row] + start[out_row]
        dense = torch.zeros(len(rows), self.shape[1], dtype=torch.float32, device=rows.device)
        dense[out_row, parts["indices"][stored].long()] = parts["data"][stored]
        return dense
