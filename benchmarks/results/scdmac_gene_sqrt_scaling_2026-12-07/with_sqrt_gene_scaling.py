"""Run a benchmark script with SCDMAC's per-gene input scaling softened (an ad hoc screen, not in the package).

``SCDMAC(input_scaling="gene")`` divides each gene of the masked autoencoder's input by the standard deviation
of its log expression. Patched here to divide by the square root of that deviation, halfway (on a log scale)
between the default's one overall scale and ``sc.pp.scale``'s weights. Usage::

    python with_sqrt_gene_scaling.py benchmarks/tissue.py --model-kwargs '{"input_scaling": "gene"}' ...
"""

import sys
from pathlib import Path

from scdmac.module import _nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from patched_run import run_benchmark  # noqa: E402

_standardize_init = _nn.Standardize.__init__


def _init_with_sqrt_scale(self, mean, var, per_feature=True, clip=10.0):
    _standardize_init(self, mean, var, per_feature=per_feature, clip=clip)
    if per_feature:
        self.scale.copy_(self.scale.sqrt())


_nn.Standardize.__init__ = _init_with_sqrt_scale

if __name__ == "__main__":
    run_benchmark(sys.argv[1:])
