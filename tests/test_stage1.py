"""Stage 1: the variant summary's pair encoder learns the answers first, the summary starts centred
over the training pairs, and the pair encoder then learns slower than the parts trained from scratch."""

import pytest
import torch

from dnallm.data.kegg import load_examples, write_jsonl
from dnallm.data.synthetic import planted_signal_records
from dnallm.fusion.processor import dna_inputs
from dnallm.train.finetune import FineTune, param_groups
from tiny_recipes import tiny_kegg_recipe


@pytest.fixture(scope="module")
def kmer_task(tmp_path_factory):
    out = tmp_path_factory.mktemp("kmer")
    write_jsonl(out / "train.jsonl", planted_signal_records(160, n_classes=4, length=401, seed=3, signal="kmer"))
    return out / "train.jsonl"


def test_stage_one_leaves_a_centred_summary_that_tells_the_answers_apart(tmp_path, tiny_models, kmer_task):
    recipe = tiny_kegg_recipe(tiny_models, tmp_path / "run", kmer_task)
    objective = FineTune(recipe)
    model = objective.setup("cpu", 0, 1)
    assert objective.stage1["stage1_train_accuracy"] >= 0.9, objective.stage1
    examples = load_examples(kmer_task, recipe.data.dna_window)
    sequences = [s for pair in zip(examples["ref_window"], examples["var_window"]) for s in pair]
    with torch.no_grad():
        summary = model.summary(**dna_inputs(objective.encoder, sequences, 32))  # (n_pairs, positions, hidden)
    # Centred over the training pairs: the part common to every pair is gone.
    assert summary.mean(0).pow(2).mean() < 1e-3 * summary.pow(2).mean(), "summary not centred"
    # What is left tells the answers apart: most of its energy lies between the classes.
    labels = sorted(set(examples["answer"]))
    y = torch.tensor([labels.index(a) for a in examples["answer"]])
    between = sum((summary[y == c].mean(0).pow(2).sum() * (y == c).sum()) for c in range(len(labels)))
    assert between / summary.pow(2).sum() > 0.5


def test_the_stage_one_encoder_learns_at_its_own_rate(tmp_path, tiny_models, kmer_task):
    recipe = tiny_kegg_recipe(tiny_models, tmp_path / "run", kmer_task, "train.lr=2e-3", "train.projector_lr=1e-3")
    model = FineTune(recipe).setup("cpu", 0, 1)
    groups = param_groups(model, recipe)
    names = {id(p): n for n, p in model.named_parameters()}
    lrs = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(lrs) == sorted(trainable)  # each trained tensor in exactly one group
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    for name, lr in lrs.items():
        if name.startswith("llm."):
            assert lr == 2e-3, name
        elif name.startswith("summary.encoder."):
            assert lr == pytest.approx(1e-4), name  # 0.1 x the projector's
        else:
            assert lr == 1e-3, name
    scratch = tiny_kegg_recipe(tiny_models, tmp_path / "run", kmer_task, "projector.pretrain_epochs=0")
    assert len(param_groups(FineTune(scratch).setup("cpu", 0, 1), scratch)) == 2  # no stage 1: one fusion rate
