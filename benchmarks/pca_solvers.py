"""Time and agreement of principal-component solvers on simulated, log-normalised sparse counts.

The setup's PCA (scikit-learn, ARPACK on the sparse matrix, centred implicitly) is the largest setup
step at a million cells. This compares it, on the same matrix, with the package's covariance PCA
(``CovariancePCA``: the Gram matrix built from dense row blocks on BLAS), scikit-learn's covariance
solver (``svd_solver="covariance_eigh"``, the Gram matrix of the sparse counts) and torch's
randomised PCA (``torch.pca_lowrank``, Halko et al., centred implicitly), each asked for a few more
components than kept. Agreement with ARPACK: the cosines between each solver's and ARPACK's
components, and the principal angles' cosines between the two 50-dimensional subspaces. Run it alone.

Usage::

    python benchmarks/pca_solvers.py --cells 300000     # 1,000,000 runs out of 24 GiB (torch's sparse copy)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _agreement(reference: np.ndarray, components: np.ndarray) -> tuple[float, float, float]:
    """Cosine of the first components (mean of the first 5), of all, and the subspaces' mean principal cosine."""
    per_component = np.abs((reference * components).sum(axis=1))
    subspace = np.linalg.svd(reference @ components.T, compute_uv=False)
    return float(per_component[:5].mean()), float(per_component.mean()), float(subspace.mean())


def _row(lines: list[str], n: int, name: str, seconds: float, reference: np.ndarray, components: np.ndarray) -> None:
    first, every, subspace = _agreement(reference, components)
    lines.append(f"| {n:,} | {name} | {seconds:.1f} | {first:.4f} | {every:.3f} | {subspace:.3f} |")
    print(lines[-1], flush=True)


def main() -> None:
    import scipy.sparse as sp
    import torch
    from sklearn.decomposition import PCA

    import scdmac
    from scdmac.data import log_normalize
    from scdmac.data._preprocess import COVARIANCE_PCA_MIN_CELLS, CovariancePCA

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", type=int, default=[100_000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--components", type=int, default=50)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pca_solvers.md")
    args = parser.parse_args()
    k = args.components
    lines = [
        "| cells | solver | s | cosine, first 5 components | cosine, all | subspace (mean principal cosine) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in args.cells:
        counts = scdmac.data.simulate(n_cells=n, n_genes=args.genes)
        X = sp.csr_matrix(log_normalize(counts.X), dtype=np.float32)
        del counts
        t0 = time.perf_counter()
        reference = PCA(k, svd_solver="arpack", random_state=0).fit(X).components_
        name = f"ARPACK (the default below {COVARIANCE_PCA_MIN_CELLS:,} cells)"
        _row(lines, n, name, time.perf_counter() - t0, reference, reference)
        t0 = time.perf_counter()
        ours = CovariancePCA(k).fit(X).components_
        name = f"CovariancePCA, dense row blocks on BLAS (the default from {COVARIANCE_PCA_MIN_CELLS:,} cells)"
        _row(lines, n, name, time.perf_counter() - t0, reference, ours)
        torch.manual_seed(0)
        triplets = X.tocoo()
        indices = torch.from_numpy(np.vstack([triplets.row, triplets.col]).astype(np.int64))
        # torch's sparse CSR tensors lack the column mean that centring needs: COO it is
        coo = torch.sparse_coo_tensor(indices, torch.from_numpy(triplets.data), X.shape).coalesce()
        del triplets, indices
        for niter in (2, 4):
            t0 = time.perf_counter()
            _, _, V = torch.pca_lowrank(coo, q=k + 10, niter=niter, center=True)
            name = f"torch.pca_lowrank, q={k + 10}, niter={niter}"
            _row(lines, n, name, time.perf_counter() - t0, reference, V[:, :k].T.numpy())
        del coo
        # last, so that a run that runs out of memory in the sparse Gram product still reports the others
        t0 = time.perf_counter()
        covariance = PCA(k, svd_solver="covariance_eigh").fit(X).components_
        _row(lines, n, "covariance_eigh", time.perf_counter() - t0, reference, covariance)
    table = "\n".join(lines)
    args.out.write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
