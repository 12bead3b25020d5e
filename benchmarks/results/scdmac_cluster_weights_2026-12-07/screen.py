"""SCDMAC's clustering-stage weights, learning rate and kernel, screened from one pretrained network (paired runs).

Eq. 23 of the paper leaves the weights of its four terms open. SCDMAC's clustering stage weighs DEC's
KL term 1, the weighted soft k-means term 0.1 and the masked autoencoder's reconstruction 1 (it keeps
the embedding from drifting away from what pretraining learnt), and runs at ``cluster_lr=1e-4``. For
each dataset and seed the model is pretrained once; the clustering stage then runs from that network
with each variant (other weights or another learning rate). Only the tuning half and
``benchmarks/tissue.py``'s redrawn and simulated sets are accepted.

Usage (from the repository root)::

    python benchmarks/results/scdmac_cluster_weights_2026-12-07/screen.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from accuracy import SPLIT, recluster  # noqa: E402
from dec_target import label_scores, paired_pretrainings, refuse_unseen_sets  # noqa: E402
from scdsec_tuning import append_row  # noqa: E402
from tissue import RESAMPLED  # noqa: E402

# name -> (the clustering stage's weights that differ from the default, train() arguments, cluster head
# attributes: the Student's t degrees of freedom ν and the soft k-means sharpening α)
VARIANTS = {
    "default": ({}, {}, {}),
    "mask3": ({"mask": 3.0}, {}, {}),
    "mask0.3": ({"mask": 0.3}, {}, {}),
    "kmeans1": ({"kmeans": 1.0}, {}, {}),
    "kmeans0": ({"kmeans": 0.0}, {}, {}),
    "lr3e-5": ({}, {"cluster_lr": 3e-5}, {}),
    "lr3e-4": ({}, {"cluster_lr": 3e-4}, {}),
    "dof3": ({}, {}, {"dof": 3.0}),
    "dof10": ({}, {}, {"dof": 10.0}),
    "inflation0.1": ({}, {}, {"inflation": 0.1}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=SPLIT["tuning"] + list(RESAMPLED))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--csv", type=Path, default=HERE / "screen_runs.csv")
    args = parser.parse_args()
    refuse_unseen_sets(args.datasets)

    import torch

    torch.set_num_threads(2)
    for ds, seed, truth, model, pretrained, pre in paired_pretrainings("SCDMAC", args.datasets, args.seeds):
        defaults = dict(model.module.stage_weights["cluster"])
        head = model.module.cluster_head
        head_defaults = {"dof": head.dof, "inflation": head.inflation}
        for name in args.variants:
            weights, train_kwargs, head_settings = VARIANTS[name]
            model.module.stage_weights["cluster"] = {**defaults, **weights}
            for attribute, value in {**head_defaults, **head_settings}.items():
                setattr(head, attribute, value)
            t1 = time.perf_counter()
            recluster(model, pretrained, seed, **train_kwargs)
            scores = label_scores(truth, np.asarray(model.predict()), truth.nunique())
            # the columns in the order of screen_runs.csv
            scores = {"ari": scores["ari"], "nmi": scores["nmi"], "ari_pretrained": pre["ari_pretrained"], **scores}
            row = dict(dataset=ds, seed=seed, variant=name, **scores, cluster_s=round(time.perf_counter() - t1, 1))
            append_row(args.csv, row)


if __name__ == "__main__":
    main()
