"""Checkpoints of every objective: one directory per saved step, written whole, pruned per run.

Layout of ``<output_dir>/checkpoint-<step>/``::

    recipe.yaml             the resolved recipe
    <weights file>          the tensors the objective keeps (``Objective.weights_file``), fp32
    optimizer.safetensors   optimizer state per trainable parameter (for resuming)
    rng_state.safetensors   random-number state of every rank: torch, CUDA, numpy, Python
    trainer_state.json      optimizer step, epoch, data position, history, run id
    ...                     the objective's own files (a LoRA adapter, a track list, ...)

Each directory is written under a temporary name and renamed when complete, so a
directory called ``checkpoint-*`` is always whole. Tensors and optimizer state are stored
un-partitioned, so a run can resume on a different number of GPUs or ZeRO stage.

Every checkpoint names the run that wrote it (``run_id``, kept across resumes): a run
prunes only its own checkpoints, and a fresh run refuses an ``output_dir`` that holds
another run's (``check_output_dir``).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from dnallm.config import RESUMABLE_KEYS, RecipeError
from dnallm.hub import CheckpointError, first_line
from dnallm.hub import list_checkpoints, load_trainable, read_tensors, resolve_checkpoint  # noqa: F401 (the training side's names)
from dnallm.io import atomic_directory, save_tensors

STATE = "trainer_state.json"
OPTIMIZER = "optimizer.safetensors"
RNG = "rng_state.safetensors"
LOG = "train_log.jsonl"


def find_resume_checkpoint(wanted: str, run_dir: str | Path, marker: str = "trainable.safetensors") -> Path | None:
    """``train.resume_from_checkpoint``: '' (start afresh), 'auto' (latest in ``run_dir``, if any) or a path."""
    if not wanted:
        return None
    if wanted == "auto":
        found = list_checkpoints(run_dir, marker)
        return found[-1] if found else None
    return resolve_checkpoint(wanted, marker)


def read_state(checkpoint: str | Path) -> dict:
    return json.loads((Path(checkpoint) / STATE).read_text())


def run_id_of(checkpoint: Path) -> str:
    """The run a checkpoint belongs to: every readable checkpoint names it (README, "Checkpoints")."""
    run_id = read_state(checkpoint).get("run_id")
    if run_id is None:
        raise CheckpointError(
            f"{checkpoint}: {STATE} names no run, a layout older than those a run reads (README, Checkpoints): "
            f"resume from a newer checkpoint, or move this one out of {checkpoint.parent}"
        )
    return run_id


# ---- a resume continues the same recipe -------------------------------------------------------

WHOLE_FILE_BYTES = 1 << 30  # larger data files (a genome) are fingerprinted by size and their two ends
END_BYTES = 64 << 20


def file_digest(path: Path) -> str:
    """sha256 of the file's content (a file over 1 GiB: of its size, first and last 64 MiB)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= WHOLE_FILE_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(str(size).encode())
            h.update(f.read(END_BYTES))
            f.seek(size - END_BYTES)
            h.update(f.read(END_BYTES))
    return h.hexdigest()


def data_digests(recipe) -> dict[str, dict]:
    """{recipe key: {path, sha256}} of every file the recipe's ``data`` section names: kept in
    the training state, so a resume can tell a data file edited in place."""
    out = {}
    for key, value in _flat(recipe.to_dict()).items():
        if key.startswith("data.") and isinstance(value, str) and value and Path(value).is_file():
            out[key] = {"path": value, "sha256": file_digest(Path(value))}
    return out


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in tree.items():
        flat.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return flat


def _resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_KEYS)


def check_resume(recipe, checkpoint: Path, digests: dict[str, dict]) -> None:
    """A resume continues the run it resumes: the model and data keys of ``recipe`` must be the
    checkpoint's (``config.RESUMABLE_KEYS`` may differ), and each data file hold what it held then
    (compared by content, so a moved file is the same file). Else a ``RecipeError`` naming each
    differing key (old -> new) and each changed file, unless ``train.allow_recipe_change``."""
    if recipe.train.allow_recipe_change:
        return
    try:
        theirs = _flat(yaml.safe_load((checkpoint / "recipe.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError) as e:
        raise CheckpointError(f"{checkpoint / 'recipe.yaml'}: cannot be read ({first_line(e)})") from None
    saved_digests = read_state(checkpoint).get("data_digests", {})
    ours = _flat(recipe.to_dict())
    changed = [
        f"{key} {theirs[key]!r} -> {ours[key]!r}"
        for key in ours
        if key in theirs
        and theirs[key] != ours[key]
        and not _resumable(key)
        and not (key in saved_digests and key in digests)  # files: by content, below
    ]
    for key, old in saved_digests.items():
        new = digests.get(key)
        if new is None:
            changed.append(f"{key} {old['path']!r} -> {ours.get(key)!r}")
        elif new["sha256"] != old["sha256"]:
            same = new["path"] == old["path"]
            changed.append(
                f"{key} {new['path']} changed since the checkpoint (content hash differs)"
                if same
                else f"{key} {old['path']!r} -> {new['path']!r} (other content)"
            )
    if changed:
        raise RecipeError(
            f"train.resume_from_checkpoint: {checkpoint} was trained with another recipe: {'; '.join(changed)}. "
            "Resume with the recipe it was trained with (its recipe.yaml), start afresh in another output_dir=DIR, "
            "or continue anyway with train.allow_recipe_change=true"
        )


# ---- output directory ------------------------------------------------------------------------


@dataclass
class RunStart:
    """Where a run starts: the checkpoint it resumes (or None), its id, and other runs' checkpoints
    in its ``output_dir`` (removed by ``clear_foreign`` when the recipe asks to overwrite)."""

    resume: Path | None
    run_id: str
    foreign: list[Path]

    def clear_foreign(self, out_dir: Path) -> None:
        """``train.overwrite_output_dir``: the other runs' checkpoints and log go (rank 0, once set up)."""
        for old in self.foreign:
            shutil.rmtree(old, ignore_errors=True)
        if self.foreign and self.resume is None:
            (out_dir / LOG).unlink(missing_ok=True)


def check_output_dir(train_cfg, out_dir: str | Path, marker: str) -> RunStart:
    """Resolve ``train.resume_from_checkpoint`` and refuse to write beside another run.

    Any complete checkpoint (whatever the objective) in ``out_dir`` that the run does not
    continue belongs to another run: a fresh run always, a resumed one when the run ids
    differ. Such a folder is refused unless ``train.overwrite_output_dir`` is set, so runs
    never mix checkpoints or logs. ``marker``: the file of the objective's checkpoints.
    """
    out_dir = Path(out_dir)
    resume = find_resume_checkpoint(train_cfg.resume_from_checkpoint, out_dir, marker)
    run_id = run_id_of(resume) if resume else uuid.uuid4().hex
    foreign = [c for c in list_checkpoints(out_dir, STATE) if resume is None or run_id_of(c) != run_id]
    if foreign and not train_cfg.overwrite_output_dir:
        names = ", ".join(c.name for c in foreign[-3:])
        raise RecipeError(
            f"output_dir {out_dir} holds checkpoints of another run ({names}): continue that run with "
            f"train.resume_from_checkpoint=auto, or write to another output_dir=DIR, or replace them with train.overwrite_output_dir=true"
        )
    return RunStart(resume, run_id, foreign)


# ---- random-number state ---------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every CUDA device too


def _rng_tensors() -> tuple[dict[str, torch.Tensor], dict]:
    """This process's generators: tensors plus the scalars that go with them."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    tensors = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "python": torch.tensor(py_internal, dtype=torch.int64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = state
    scalars = {"numpy": [np_kind, int(np_pos), int(np_has_gauss), float(np_gauss)], "python": [py_version, py_gauss]}
    return tensors, scalars


def gather_rng(world_size: int) -> list[tuple[dict, dict]] | None:
    """Every rank's generator state, on rank 0 (a collective; None on other ranks)."""
    mine = _rng_tensors()
    if world_size == 1:
        return [mine]
    everyone = [None] * world_size
    torch.distributed.all_gather_object(everyone, mine)
    return everyone if torch.distributed.get_rank() == 0 else None


def _save_rng(states: list[tuple[dict, dict]], path: Path) -> None:
    tensors = {f"rank{r}.{k}": v.contiguous() for r, (t, _) in enumerate(states) for k, v in t.items()}
    save_tensors(tensors, path, metadata={f"rank{r}": json.dumps(s) for r, (_, s) in enumerate(states)})


def restore_rng(checkpoint: Path, rank: int) -> bool:
    """Put this rank's generators where they were when ``checkpoint`` was saved.

    False (generators left as seeded) when the checkpoint has no state for this rank: written
    by a run with fewer ranks.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(checkpoint / RNG), "pt") as f:
            meta = (f.metadata() or {}).get(f"rank{rank}")
            if meta is None:
                return False
            prefix = f"rank{rank}."
            tensors = {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
        scalars = json.loads(meta)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{checkpoint / RNG}: not a readable safetensors file ({first_line(e)}); restore it, or use another checkpoint"
        ) from None
    torch.set_rng_state(tensors["torch"])
    cuda = sorted((int(k[4:]), v) for k, v in tensors.items() if k.startswith("cuda"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([v for _, v in cuda])
    kind, pos, has_gauss, gauss = scalars["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_gauss = scalars["python"]
    random.setstate((version, tuple(int(x) for x in tensors["python"].tolist()), py_gauss))
    return True


# ---- save / load ------------------------------------------------------------------------------


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    engine,
    objective,
    recipe_yaml: str,
    state: dict,
    *,
    keep_last: int = 0,
    run_id: str = "",
) -> Path | None:
    """Gather the objective's tensors, optimizer state and RNG state on every rank (collectives);
    rank 0 writes, then prunes this run's older checkpoints. Returns the path on rank 0."""
    model = engine.module
    tensors = objective.checkpoint_tensors(engine)
    moments = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            for key, value in (engine.full_moments(p) or {}).items():
                moments[f"{name}::{key}"] = value.contiguous()
    rng = gather_rng(engine.world_size)
    path = None
    if engine.rank == 0:
        path = Path(run_dir) / f"checkpoint-{step}"
        with atomic_directory(path) as tmp:
            (tmp / "recipe.yaml").write_text(recipe_yaml)
            save_tensors({n: v.contiguous() for n, v in tensors.items()}, tmp / objective.weights_file)
            if moments:
                save_tensors(moments, tmp / OPTIMIZER)
            _save_rng(rng, tmp / RNG)
            objective.write_checkpoint_files(tmp, model, tensors)
            (tmp / STATE).write_text(json.dumps({**state, "step": step, "run_id": run_id}, indent=2))
        if keep_last > 0:
            # Only this run's: another run's checkpoints in the folder are never touched.
            own = [c for c in list_checkpoints(run_dir, STATE) if c != path and run_id_of(c) == run_id]
            for old in own[: max(0, len(own) - (keep_last - 1))]:
                shutil.rmtree(old, ignore_errors=True)
    engine.barrier()
    return path


def load_moments(model, checkpoint: str | Path) -> dict:
    """{parameter: {state key: tensor}} for resuming; empty if none were saved."""
    path = Path(checkpoint) / OPTIMIZER
    if not path.is_file():
        return {}
    params = dict(model.named_parameters())
    out: dict = {}
    for key, value in read_tensors(path).items():
        name, moment = key.rsplit("::", 1)
        # (shapes are the optimizer's own: a factored optimizer keeps rows and columns)
        if name not in params:
            raise CheckpointError(
                f"{path}: optimizer state for '{name}', no parameter of the model its recipe builds; "
                "resume with the recipe the checkpoint was trained with"
            )
        out.setdefault(params[name], {})[moment] = value
    return out
