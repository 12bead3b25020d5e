"""Train a model on easy simulated data with Lightning's DDP over CPU processes (gloo) and save its labels.

Run as a script (Lightning starts the other ranks by running this file again):
``python train_distributed.py MODEL DEVICES OUT_PREFIX``; each rank writes ``OUT_PREFIX_rank{r}.npy``.
"""

import os
import sys

import numpy as np
import scvi

import scdmac


def main() -> None:
    model_name, devices, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    adata = scdmac.data.simulate(n_cells=600, n_genes=200, n_clusters=3, de_fraction=0.15, seed=0)
    scvi.settings.seed = 0
    model_cls = getattr(scdmac.model, model_name)
    model_cls.setup_anndata(adata, layer="counts")
    model = model_cls(adata, n_clusters=3)
    model.train(accelerator="cpu", devices=devices, strategy="ddp", enable_progress_bar=False)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    np.save(f"{out}_rank{rank}.npy", np.asarray(model.predict(), dtype=np.int64))


if __name__ == "__main__":
    main()
