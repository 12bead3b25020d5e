"""Saved models you can trust: a checksum written at save and checked at load, clear messages for bad files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from anndata import AnnData

MODEL_FILE = "model.pt"
#: suffix of the checksum file written beside ``model.pt``
CHECKSUM_SUFFIX = ".sha256"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_path(dir_path: str | Path, prefix: str | None) -> Path:
    """Where ``model.save(dir_path, prefix=...)`` writes the weights."""
    return Path(dir_path) / f"{prefix or ''}{MODEL_FILE}"


def check_save_target(dir_path: str | Path) -> None:
    """Refuse a save into a path that is a file (scvi-tools would fail inside ``os.makedirs``)."""
    if Path(dir_path).is_file():
        raise ValueError(f"{str(dir_path)!r} is a file: save() writes a folder, so pass a folder path.")


def write_checksum(dir_path: str | Path, prefix: str | None) -> None:
    """Record the SHA-256 of the saved weights beside them."""
    path = model_path(dir_path, prefix)
    path.with_name(path.name + CHECKSUM_SUFFIX).write_text(f"{_sha256(path)}  {path.name}\n")


def check_saved_model(dir_path: str | Path, prefix: str | None, model_name: str) -> Path:
    """The saved weights' path, after checking that the folder and file exist and match their checksum.

    Models saved by scdmac before checksums existed (no ``model.pt.sha256``) are read unchecked.
    """
    folder = Path(dir_path)
    if not folder.exists():
        raise FileNotFoundError(f"No saved model at {str(folder)!r}: the folder does not exist.")
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is a file: load() reads the folder that {model_name}.save() wrote.")
    path = model_path(folder, prefix)
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} holds no {path.name}: it is not a folder written by {model_name}.save()"
            + (f" with prefix={prefix!r}." if prefix else ".")
        )
    checksum = path.with_name(path.name + CHECKSUM_SUFFIX)
    if checksum.is_file():
        recorded = checksum.read_text().split()
        if _sha256(path) != (recorded[0] if recorded else ""):
            raise ValueError(
                f"{path} does not match the checksum written when it was saved: the file is damaged or was "
                "changed. Save the model again, or restore the file from a copy."
            )
    return path


def check_saved_anndata(dir_path: str | Path, prefix: str | None, model_name: str) -> None:
    """Refuse ``load()`` without ``adata`` when the folder holds no AnnData (saved without ``save_anndata``)."""
    if not (Path(dir_path) / f"{prefix or ''}adata.h5ad").is_file():
        raise ValueError(
            f"{str(dir_path)!r} holds no AnnData: the model was saved without save_anndata=True. Pass the "
            f"training cells, {model_name}.load(dir_path, adata=adata), with the genes the model was trained on."
        )


def read_saved_var_names(path: Path, model_name: str) -> np.ndarray:
    """The genes the saved model was trained on (reads the file; only load models you trust)."""
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch and pickle raise many types for a damaged file
        raise ValueError(
            f"Cannot read {path} ({type(err).__name__}: {err}): the file is truncated, damaged or not a "
            f"model saved by {model_name}.save()."
        ) from err
    if not isinstance(saved, dict) or "var_names" not in saved:
        raise ValueError(f"{path} is not a model saved by {model_name}.save() (no gene names in it).")
    return np.asarray(saved["var_names"]).astype(str)


def check_same_genes(adata: AnnData, saved: np.ndarray) -> None:
    """Refuse an AnnData whose genes differ from the model's or come in another order (naming a few)."""
    given = np.asarray(adata.var_names).astype(str)
    if given.shape == saved.shape and (given == saved).all():
        return
    missing = [g for g in saved if g not in set(given)]
    extra = [g for g in given if g not in set(saved)]
    if not missing and not extra:
        raise ValueError(
            "adata has the model's genes in another order: reorder it first, e.g. "
            "adata = adata[:, model_genes].copy() with model_genes from the training data's var_names."
        )
    raise ValueError(
        f"adata's genes differ from the model's ({len(saved)} genes): {len(missing)} missing "
        f"(e.g. {missing[:3]}) and {len(extra)} not in the model (e.g. {extra[:3]}). Load onto an AnnData "
        "with exactly the training genes, in the same order."
    )


CHECKPOINT_FILE = "checkpoint.pt"


def _random_states() -> dict:
    import random

    import torch

    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_random_states(states: dict) -> None:
    import random

    import torch

    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_checkpoint(
    folder: str | Path, run: str, finished: list[str], module_state: dict, history: dict | None
) -> None:
    """After a finished stage: the weights, history and random states, replaced atomically.

    Parameters
    ----------
    folder
        The checkpoint folder (created).
    run
        A description of the run's settings; a checkpoint resumes only the same run.
    finished
        Names of the stages done so far.
    module_state, history
        The module's state dict and the model's history.
    """
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{CHECKPOINT_FILE}.tmp"
    state = {"run": run, "finished": list(finished), "module": module_state, "history": history}
    torch.save({**state, "random": _random_states()}, tmp)
    tmp.replace(folder / CHECKPOINT_FILE)  # a crash while writing leaves the previous checkpoint whole


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be resumed from: damaged, or written by another run."""


def read_checkpoint(folder: str | Path, run: str) -> dict | None:
    """The checkpoint of this run in ``folder`` (random states restored), or ``None`` when there is none.

    A checkpoint written by a run with other settings is refused rather than silently mixed in.
    """
    import torch

    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a damaged file
        raise CheckpointError(
            f"Cannot read the checkpoint {path} ({type(err).__name__}): delete it to start over."
        ) from err
    if state.get("run") != run:
        raise CheckpointError(
            f"The checkpoint in {str(folder)!r} comes from a run with other settings or data; pass another "
            "checkpoint folder, or delete it to start over."
        )
    _restore_random_states(state["random"])
    return state


def remove_checkpoint(folder: str | Path) -> None:
    """Drop the checkpoint once the run it belongs to has finished."""
    (Path(folder) / CHECKPOINT_FILE).unlink(missing_ok=True)
