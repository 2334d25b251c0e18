"""The tiny KEGG recipe pointed at the tests' tiny models and a planted training file: what many
tests train or load, built in one place."""

from contextlib import contextmanager
from pathlib import Path

import torch

from dnallm.config import load_recipe

TINY_KEGG = Path(__file__).resolve().parent.parent / "recipes/kegg/tiny.yaml"
# Stage 1 (projector.pretrain_epochs) as the recipe runs it, for 2 of its 30 epochs: for the tests of how a
# run behaves (resume, signals, checkpoints), not of what it learns, which keep the recipe's 30.
BRIEF_STAGE1 = "projector.pretrain_epochs=2"


@contextmanager
def two_threads():
    """Torch on two threads while a fixture builds what its tests' numbers were measured on (the
    planted attribution checkpoints and their ISM, the coverage run): the workers compute on one
    thread each, and float sums come out in another order on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tiny_kegg_recipe(tiny_models: dict, out_dir: Path, train: Path, *overrides: str):
    """recipes/kegg/tiny.yaml with its models, training file and output folder replaced, no
    validation file, then ``overrides``."""
    return load_recipe(
        TINY_KEGG,
        [
            f"output_dir={out_dir}",
            f"encoder.name_or_path={tiny_models['genos']}",
            f"llm.name_or_path={tiny_models['qwen3']}",
            f"data.train={train}",
            "data.val=",
            *overrides,
        ],
    )
