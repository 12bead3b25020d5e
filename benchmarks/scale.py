"""Where the time and memory go as the number of cells grows: simulate, each setup step, each stage.

Each (model, size) runs in its own process, so its peak resident memory is its own. Per run it
reports: simulation time; each setup step (log-normalisation and gene selection, PCA, kNN search,
partition); each training stage's wall time, optimiser steps and samples per second; the time of
the loss step alone (forward, backward and Adam on a batch already in memory) against the full
step (the stage's wall time per step: loading, collation, logging, target refreshes); peak RSS; on a
GPU, peak GPU memory and the mean utilisation sampled during training; ARI to the simulated types.
With ``--scvi``, scVI's default training runs on the same counts in the same process after the
model (``--scvi-max-epochs`` caps it on large data; the table says when it was capped).

Usage::

    python benchmarks/scale.py --models SCDMAC SCDSEC --cells 10000 100000
    python benchmarks/scale.py --models SCDMAC --cells 1000000 --scvi --scvi-max-epochs 1
    python benchmarks/scale.py --models SCDSEC --cells 100000 --model-kwargs '{"hidden_widths": [128, 128, 512]}'
    python benchmarks/scale.py --models SCDSEC --cells 100000 --precision 32-true
    python benchmarks/scale.py --models SCDMAC --cells 1000000 --counts-on-device off  # GPU: loader reads counts

Writes ``benchmarks/results/scale.md`` and ``scale.csv`` (``--out`` to change), appending rows to
an existing CSV so sizes run at different times end up in one table.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = [
    "model",
    "n_cells",
    "device",
    "threads",
    "simulate_s",
    "setup_s",
    "setup_steps",
    "train_s",
    "stages",
    "end_to_end_s",
    "loss_step_ms",
    "full_step_ms",
    "peak_rss_gib",
    "peak_gpu_gib",
    "gpu_util",
    "ari",
    "scvi_train_s",
    "scvi_epochs",
]


class _SetupSteps(logging.Handler):
    """Collects the setup step durations the models log at debug level."""

    pattern = re.compile(r"setup step '(.+)' took ([0-9.]+) s")

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.steps: dict[str, float] = {}

    def emit(self, record):
        match = self.pattern.match(record.getMessage())
        if match:
            self.steps[match.group(1)] = round(float(match.group(2)), 1)


class _GpuSampler:
    """Mean GPU utilisation over a period, sampled every 0.2 s through NVML (GPU runs only)."""

    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        import torch

        if torch.cuda.is_available():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        import torch

        while not self._stop.wait(0.2):
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception:  # noqa: BLE001 - NVML missing: no utilisation figure
                return

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def _stage_timer():
    """A Lightning callback recording each stage's wall time and optimiser steps."""
    from lightning.pytorch import Callback

    class StageTimer(Callback):
        def __init__(self):
            self.stages: dict[str, dict] = {}

        def on_train_start(self, trainer, pl_module):
            self._start = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            self.stages[pl_module.stage.name] = {
                "s": round(time.perf_counter() - self._start, 1),
                "steps": int(trainer.global_step),
                "batch_size": None,
            }

    return StageTimer()


def _loss_step_ms(model, stage_name: str, batch_size: int, precision: str, repeats: int = 20) -> float:
    """Median time of forward, backward and Adam step of one stage on a batch already on the device.

    ``precision``: the training's (Lightning's name); ``"bf16-mixed"`` runs the loss under bfloat16 autocast.
    """
    import numpy as np
    import torch

    from scdmac.data._loaders import CellDataModule
    from scdmac.train import StagePlan

    stage = next(s for s in model.stages if s.name == stage_name)
    plan = StagePlan(model.module, stage)
    data = CellDataModule(model.adata_manager, batch_size, stage.batches, **model._batch_inputs(stage.batches))
    device = model.device
    batch = next(iter(data.train_dataloader()))
    batch = {k: v.to(device) for k, v in batch.items()}
    optimizer = plan.configure_optimizers()
    plan.set_stage_mode()
    times = []
    try:
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            optimizer.zero_grad()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
                loss = plan.stage_loss(batch).loss
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    finally:
        plan.release_parts()
    return round(1000 * float(np.median(times[2:])), 2)


def _one(
    model_name: str,
    n_cells: int,
    n_genes: int,
    seed: int,
    run_scvi: bool,
    scvi_max_epochs: int | None,
    model_kwargs: dict | None = None,
    precision: str | None = None,
    counts_on_device: str = "auto",
) -> dict:
    import copy

    import scvi
    import torch
    from sklearn.metrics import adjusted_rand_score

    import scdmac
    from scdmac.train._precision import default_precision

    steps_log = _SetupSteps()
    logging.getLogger("scdmac").addHandler(steps_log)
    logging.getLogger("scdmac").setLevel(logging.DEBUG)
    t0 = time.perf_counter()
    adata = scdmac.data.simulate(n_cells=n_cells, n_genes=n_genes, n_clusters=10, seed=seed)
    t_sim = time.perf_counter() - t0
    pristine = copy.copy(adata) if run_scvi else None
    model_cls = getattr(scdmac.model, model_name)
    scvi.settings.seed = seed
    t0 = time.perf_counter()
    model_cls.setup_anndata(adata, layer="counts")
    t_setup = time.perf_counter() - t0
    model = model_cls(adata, n_clusters=10, **(model_kwargs or {}))
    timer = _stage_timer()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    precision = precision or default_precision("auto")  # the package's default unless asked for
    with _GpuSampler() as gpu:
        t0 = time.perf_counter()
        on_device = {"auto": "auto", "on": True, "off": False}[counts_on_device]
        model.train(enable_progress_bar=False, callbacks=[timer], precision=precision, counts_on_device=on_device)
        t_train = time.perf_counter() - t0
    batch_size = model._default_batch_size
    first = model.stages[0].name
    stage_rows = {
        name: {**v, "samples_per_s": round(v["steps"] * batch_size / max(v["s"], 1e-9))}
        for name, v in timer.stages.items()
    }
    for v in stage_rows.values():
        v.pop("batch_size")
    full_step = 1000 * timer.stages[first]["s"] / max(1, timer.stages[first]["steps"])
    row = {
        "model": model_name,
        "n_cells": n_cells,
        "device": (torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)")
        + f", {precision}"
        + ("" if counts_on_device == "auto" else f", counts on device {counts_on_device}"),
        "threads": torch.get_num_threads(),
        "simulate_s": round(t_sim, 1),
        "setup_s": round(t_setup, 1),
        "setup_steps": json.dumps(steps_log.steps),
        "train_s": round(t_train, 1),
        "stages": json.dumps(stage_rows),
        "end_to_end_s": round(t_setup + t_train, 1),
        "loss_step_ms": _loss_step_ms(model, first, batch_size, precision),
        "full_step_ms": round(full_step, 2),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "gpu_util": gpu.mean,
        "ari": round(adjusted_rand_score(adata.obs["cell_type"], model.predict()), 3),
        "scvi_train_s": None,
        "scvi_epochs": None,
    }
    if run_scvi:
        scvi.model.SCVI.setup_anndata(pristine, layer="counts")
        peer = scvi.model.SCVI(pristine)
        default_epochs = min(round((20_000 / n_cells) * 400), 400)
        epochs = default_epochs if scvi_max_epochs is None else min(default_epochs, scvi_max_epochs)
        t0 = time.perf_counter()
        peer.train(max_epochs=epochs, enable_progress_bar=False)
        row["scvi_train_s"] = round(time.perf_counter() - t0, 1)
        row["scvi_epochs"] = f"{epochs}" + ("" if epochs == default_epochs else f" of {default_epochs} (capped)")
    row["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return row


def _markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join("–" if r.get(c) in (None, "") else str(r[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["SCDMAC", "SCDSEC"])
    parser.add_argument("--cells", nargs="+", type=int, default=[10_000, 100_000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scvi", action="store_true", help="also time scVI's default training on the same counts")
    parser.add_argument("--scvi-max-epochs", type=int, default=None, help="cap scVI's epochs (large data)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scale", help="output path without suffix")
    parser.add_argument(
        "--model-kwargs",
        default=None,
        help="JSON of model arguments other than the defaults, e.g. '{\"hidden_widths\": [128, 128, 512]}' "
        "(the row's model name says them)",
    )
    parser.add_argument(
        "--precision",
        default=None,
        help="Lightning precision of the training, e.g. 32-true (default: the package's; the device column names it)",
    )
    parser.add_argument(
        "--counts-on-device",
        choices=["auto", "on", "off"],
        default="auto",
        help="train(counts_on_device=...): auto (default: on a GPU when they fit), on or off (the device column says)",
    )
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        kwargs = json.loads(args.model_kwargs) if args.model_kwargs else None
        model, n_cells = args.models[0], args.cells[0]
        row = _one(
            model,
            n_cells,
            args.genes,
            args.seed,
            args.scvi,
            args.scvi_max_epochs,
            kwargs,
            args.precision,
            args.counts_on_device,
        )
        if kwargs:
            row["model"] += " " + ", ".join(f"{k}={v}" for k, v in kwargs.items())
        print(json.dumps(row))
        return
    csv_path = args.out.with_suffix(".csv")
    rows: list[dict] = []
    if csv_path.exists():
        with csv_path.open() as f:
            rows = list(csv.DictReader(f))
    for n in args.cells:
        for model in args.models:
            cmd = [sys.executable, __file__, "--_child", "--models", model, "--cells", str(n)]
            cmd += ["--genes", str(args.genes), "--seed", str(args.seed)]
            if args.scvi:
                cmd.append("--scvi")
            if args.scvi_max_epochs is not None:
                cmd += ["--scvi-max-epochs", str(args.scvi_max_epochs)]
            if args.model_kwargs:
                cmd += ["--model-kwargs", args.model_kwargs]
            if args.precision:
                cmd += ["--precision", args.precision]
            cmd += ["--counts-on-device", args.counts_on_device]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{model} at {n} cells failed:\n{proc.stderr[-3000:]}", file=sys.stderr, flush=True)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            name = row["model"]
            rows = [r for r in rows if (r["model"], str(r["n_cells"]), r["device"]) != (name, str(n), row["device"])]
            rows.append(row)
            print(json.dumps(row), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with csv_path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows({c: r.get(c) for c in COLUMNS} for r in rows)
            rows.sort(key=lambda r: (r["device"], int(r["n_cells"]), r["model"]))
            args.out.with_suffix(".md").write_text(
                "Command: `python benchmarks/scale.py` (see the module docstring); one run per row, "
                "simulated counts (2,000 genes, 10 types), default settings unless the model column names others.\n\n"
                + _markdown(rows)
                + "\n"
            )
    print(_markdown(rows))


if __name__ == "__main__":
    main()
