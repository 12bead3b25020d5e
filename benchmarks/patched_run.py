"""Run a benchmark script under a patch: the runner the ad hoc screens in ``results/`` share.

A screen's patch script changes one function of the package in memory and then hands over to a benchmark
script (``accuracy.py``, ``tissue.py``), so the screened setting is never a package option.
"""

from __future__ import annotations

import os
import runpy
import sys


def run_benchmark(argv: list[str]) -> None:
    """Run ``argv[0]`` (a benchmark script's path) as ``__main__`` with the arguments ``argv[1:]``."""
    script = argv[0]
    # the benchmark scripts import their neighbours (``from accuracy import ...``)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    sys.argv = list(argv)
    runpy.run_path(script, run_name="__main__")
