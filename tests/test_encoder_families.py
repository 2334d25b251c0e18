"""Every supported encoder family, from tiny checkpoints saved as the hub ships them:
loading the trunk, hidden states, width, bases per token, and the command line end to end."""

import json
import random
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, modeling_utils, pytorch_utils
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from dnallm.cli import main
from dnallm.config import load_recipe
from dnallm.data.kegg import write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.encoders import DNAEncoder, DNATokenizer
from dnallm.encoders.hf import PROBE
from dnallm.encoders.remote_code import (
    builds_on_meta,
    fill_config_defaults,
    find_pruneable_heads_and_indices,
    removed_helpers,
    tensors_made_at_init,
)
from dnallm.fusion.projector import n_pooled
from dnallm.hub import CheckpointError, RemoteCodeNotAllowed
from dnallm.train.build import build_encoder, build_model, build_processor
from encoder_families import BUILDERS, wordpiece_bert

REPO = Path(__file__).resolve().parent.parent
FAMILIES = sorted(BUILDERS)


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    out = tmp_path_factory.mktemp("families")
    return {name: build(out / name) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("family-data")
    records = planted_records(24, n_classes=4, seed=3)
    write_jsonl(out / "train.jsonl", records[:16])
    write_jsonl(out / "test.jsonl", records[16:])
    return out


def _encoder(family, **kwargs):
    return DNAEncoder(str(family.path), trust_remote_code=family.trust_remote_code, **kwargs)


@pytest.mark.parametrize("name", FAMILIES)
def test_trunk_width_tokens_and_padding(families, name):
    family = families[name]
    encoder = _encoder(family)
    assert encoder.hidden_size == family.width
    assert encoder.tokenizer.bases_per_token == family.bases_per_token
    assert getattr(encoder.model, "pooler", None) is None  # masked-LM checkpoints carry none
    long, short = "ACGTTGCAAGGCTTACGATCGGATCCATGCAA" * 2, "TTGACCGTAGCATG"
    embeds, mask = encoder.encode([long, short])
    alone, _ = encoder.encode([short])
    n = int(mask[1].sum())
    assert n == encoder.tokenizer.n_positions(short) and not mask[1, n:].any()
    # Padding never reaches real positions, whether or not the model takes an attention mask.
    torch.testing.assert_close(embeds[1, :n], alone[0], rtol=1e-4, atol=1e-5)


def test_checkpoint_with_its_own_layers_names_the_recipe_key(families):
    # model_type 'bert' is transformers' own, but the weights fit only the checkpoint's code.
    with pytest.raises(CheckpointError, match=r"ships its own modelling code .*set encoder\.trust_remote_code=true"):
        DNAEncoder(str(families["dnabert2"].path))
    with pytest.raises(RemoteCodeNotAllowed, match=r"model_type='dnaconv'.*encoder\.trust_remote_code=true"):
        DNAEncoder(str(families["hyenadna"].path))


def test_command_line_names_the_recipe_key_in_one_line(families, tiny_models, data, tmp_path, capsys):
    code = main(
        [
            "train",
            str(REPO / "recipes/kegg/tiny.yaml"),
            f"encoder.name_or_path={families['dnabert2'].path}",
            f"llm.name_or_path={tiny_models['qwen3']}",
            f"data.train={data / 'train.jsonl'}",
            "data.val=",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    errors = [
        line for line in capsys.readouterr().err.splitlines() if "error" in line
    ]  # not transformers' progress bars
    assert code == 2 and len(errors) == 1 and errors[0].startswith("dnallm train: error: ")
    assert "encoder.trust_remote_code=true" in errors[0]


def test_own_code_without_an_automodel_entry_loads_the_task_class_trunk(families, tmp_path):
    # Nucleotide Transformer v2's layout: auto_map names only task classes.
    source = families["caduceus"]
    copy = tmp_path / "no-automodel"
    shutil.copytree(source.path, copy)
    config = json.loads((copy / "config.json").read_text())
    del config["auto_map"]["AutoModel"]
    (copy / "config.json").write_text(json.dumps(config))
    seq = ["ACGTTGCAAGGCTTACGATCGG"]
    reference = _encoder(source).encode(seq)[0]
    trunk = DNAEncoder(str(copy), trust_remote_code=True)
    assert type(trunk.model).__name__ == "Caduceus"
    assert torch.equal(trunk.encode(seq)[0], reference)


def test_layer_choice_needs_per_layer_hidden_states(families):
    hyena = families["hyenadna"]
    assert not torch.allclose(
        _encoder(hyena, layer=1).encode(["ACGTACGTAC"])[0], _encoder(hyena).encode(["ACGTACGTAC"])[0]
    )
    with pytest.raises(CheckpointError, match=r"no per-layer hidden states.*encoder\.layer=1.*encoder\.layer=-1"):
        _encoder(families["dnabert2"], layer=1)


def test_wordpiece_tokenizer_that_loses_dna_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="turns plain DNA .* into unknown tokens"):
        DNATokenizer(str(wordpiece_bert(tmp_path / "wordpiece")))


def test_probe_mixes_all_four_bases():
    counts = Counter(PROBE)
    assert sorted(counts) == list("ACGT") and min(counts.values()) > len(PROBE) / 5


def test_bpe_bases_per_token_is_the_mean_on_mixed_sequence(families):
    tokenizer = DNATokenizer(str(families["dnabert2"].path), trust_remote_code=True)
    rng = random.Random(11)
    fresh = ["".join(rng.choice("ACGT") for _ in range(480)) for _ in range(20)]
    mean = sum(map(len, fresh)) / sum(map(tokenizer.n_positions, fresh))  # 2.8 for this vocabulary
    assert tokenizer.bases_per_token == round(mean)
    # One repeated base tokenizes otherwise: a probe of 'T's alone would measure 2.
    assert round(480 / tokenizer.n_positions("T" * 480)) != tokenizer.bases_per_token


def test_token_counts_kept_between_steps_are_the_tokenizers_own(families, monkeypatch):
    """Counts are kept per window (asked for several times a step): each one is what the tokenizer
    gives, the first time and after, and after the store is emptied for holding too many bases."""
    import dnallm.encoders.hf as hf

    tokenizer = DNATokenizer(str(families["dnabert2"].path), trust_remote_code=True)  # BPE: counts vary
    rng = random.Random(5)
    windows = ["".join(rng.choice("ACGT") for _ in range(rng.randint(50, 300))) for _ in range(30)]
    truth = [len(tokenizer.tokenizer(w, add_special_tokens=False)["input_ids"]) for w in windows]
    assert len(set(truth)) > 5
    monkeypatch.setattr(hf, "POSITIONS_MEMO", 2_000)  # ~10 windows: emptied twice on the way
    for _ in range(2):
        assert [tokenizer.n_positions(w) for w in windows] == truth
    assert tokenizer._memo_bases <= 2_000


def _fresh_copy(family, folder: Path) -> str:
    """The checkpoint under a new folder name: transformers imports its code as a new module."""
    shutil.copytree(family.path, folder)
    return str(folder)


@pytest.mark.parametrize(
    "name, auto_class, failure",
    [
        ("dnabert2", AutoModel, r"has no attribute 'pad_token_id'"),  # transformers 4's config default
        ("caduceus", AutoModel, r"has no attribute 'all_tied_weights_keys'"),  # the trunk skips post_init()
        ("nucleotide_transformer", AutoModelForMaskedLM, r"cannot import name 'find_pruneable_heads_and_indices'"),
    ],
)
def test_stand_ins_break_under_plain_transformers_as_published_code_does(
    families, tmp_path, name, auto_class, failure
):
    path = _fresh_copy(families[name], tmp_path / f"plain-{name}")
    with pytest.raises((AttributeError, ImportError), match=failure):
        auto_class.from_pretrained(path, trust_remote_code=True)


def test_tensor_made_at_init_is_built_off_meta_keeping_the_random_state(families, tmp_path):
    family = families["dnabert2"]
    # With the config defaults alone, transformers 5 cannot build DNABERT-2 at all: on the meta device
    # its ALiBi table multiplies slopes made on the CPU by positions made on meta.
    path = _fresh_copy(family, tmp_path / "meta-dnabert2")
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    fill_config_defaults(config)
    with pytest.raises(RuntimeError, match="meta"):
        AutoModel.from_pretrained(path, config=config, trust_remote_code=True)
    assert not builds_on_meta(get_class_from_dynamic_module(config.auto_map["AutoModel"], path), config)

    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    encoder = _encoder(family)
    assert torch.equal(torch.rand(4), expected)  # loading (twice here) drew nothing from the random state
    assert not encoder.model.encoder.alibi.is_meta and not encoder.model.embeddings.token_type_ids.any()
    # Equal outputs to the trunk built on the CPU and filled by hand, as transformers 4 loaded it.
    reference = type(encoder.model)(encoder.model.config, add_pooling_layer=False)
    weights = load_file(family.path / "model.safetensors")
    reference.load_state_dict({k.removeprefix("bert."): v for k, v in weights.items() if k.startswith("bert.")})
    batch = encoder.tokenizer(["ACGTTGCAAGGCTTACGATCGGATCCATGCAA", "TTGACCGTAGCATG"])
    embeds, mask = encoder.encode(["ACGTTGCAAGGCTTACGATCGGATCCATGCAA", "TTGACCGTAGCATG"])
    want = reference.eval()(batch["input_ids"], attention_mask=batch["attention_mask"].long())[0]
    torch.testing.assert_close(embeds[mask], want[mask], rtol=1e-5, atol=1e-6)


def test_tensors_a_meta_build_loses_are_named():
    class MadeAtInit(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.ones(3)  # a plain attribute: on meta it has no data, and no checkpoint fills it
            self.register_buffer("zeros", torch.zeros(2), persistent=False)  # never in a checkpoint
            self.register_buffer("kept", torch.zeros(2))  # in the checkpoint: loading fills it
            self.linear = torch.nn.Linear(2, 2)

    with torch.device("meta"):
        assert tensors_made_at_init(MadeAtInit()) == ["table", "zeros"]


def test_removed_helpers_behave_as_transformers_4s(families):
    # Head 2 is already gone, so head 1 still sits second: its two rows go, of the three heads left.
    heads, keep = find_pruneable_heads_and_indices([1, 2], n_heads=3, head_size=2, already_pruned_heads={2})
    assert heads == {1} and keep.tolist() == [0, 1, 4, 5]
    with removed_helpers():  # where transformers 4 exported them: older code imports them from modeling_utils
        from transformers.modeling_utils import apply_chunking_to_forward, prune_linear_layer  # noqa: F401
    encoder = _encoder(families["nucleotide_transformer"])
    # present only while the code is imported
    assert not hasattr(pytorch_utils, "find_pruneable_heads_and_indices")
    assert not hasattr(modeling_utils, "prune_linear_layer")
    bias = encoder.model.get_extended_attention_mask(torch.tensor([[1, 1, 0]]), (1, 3))
    assert bias.shape == (1, 1, 1, 3) and bias[0, 0, 0].tolist() == [0.0, 0.0, torch.finfo(torch.float32).min]
    before = encoder.encode(["ACGTTGCAAGGCTTACGATCGG"])[0]
    encoder.model.layers[0].attention.prune_heads({1})  # the published code's own pruning, through the helper
    assert encoder.model.layers[0].attention.query.weight.shape == (36, 48)
    assert not torch.allclose(encoder.encode(["ACGTTGCAAGGCTTACGATCGG"])[0], before)


def _needing(family, folder: Path, line: str) -> Path:
    """A copy of the Caduceus stand-in whose code imports as the published code does (not in a try block)."""
    _fresh_copy(family, folder)
    modeling = folder / "modeling_caduceus.py"
    modeling.write_text(f"{line}\n{modeling.read_text()}")
    return folder


@pytest.mark.parametrize(
    "package, message",
    [
        (
            "mamba_ssm",
            r"mamba_ssm, which is not installed \(pip install mamba-ssm; it needs a CUDA GPU and a CUDA build of torch\)$",
        ),
        (
            "dnallm_absent_package",
            r"dnallm_absent_package, which is not installed \(pip install dnallm-absent-package\)$",
        ),
    ],
)
def test_missing_package_is_one_line_naming_it(families, tiny_models, data, tmp_path, capsys, package, message):
    path = _needing(families["caduceus"], tmp_path / f"needs-{package}", f"import {package}")
    code = main(
        [
            "train",
            str(REPO / "recipes/kegg/tiny.yaml"),
            f"encoder.name_or_path={path}",
            "encoder.trust_remote_code=true",
            f"llm.name_or_path={tiny_models['qwen3']}",
            f"data.train={data / 'train.jsonl'}",
            "data.val=",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"dnallm train: error: {path}: its own modelling code needs {package}")
    assert re.search(message, errors[0])


def test_import_failing_inside_the_code_is_one_line(families, tmp_path):
    # Caduceus raises its own ImportError, naming no package, when its fused kernels are missing.
    path = _fresh_copy(families["caduceus"], tmp_path / "fused-caduceus")
    config = json.loads((tmp_path / "fused-caduceus" / "config.json").read_text())
    (tmp_path / "fused-caduceus" / "config.json").write_text(json.dumps({**config, "fused_add_norm": True}))
    with pytest.raises(
        CheckpointError,
        match=r"fused-caduceus: its own modelling code cannot import what it needs "
        r"\(Failed to import the fused add \+ norm kernels\)$",
    ):
        DNAEncoder(path, trust_remote_code=True)


@pytest.mark.parametrize(
    "name, pool, kernel, want",
    [
        ("nucleotide_transformer", 12, 24, (2, 4)),  # 6 bases per token
        ("nucleotide_transformer", 4, 9, (1, 2)),  # rounded, never below one token
        ("genos", 8, 16, (8, 16)),  # one token per base
        ("dnabert2", 8, 16, (3, 5)),  # measured mean on mixed sequence: 2.8 bases per token
    ],
)
def test_pool_and_kernel_are_bases(families, tiny_models, tmp_path, name, pool, kernel, want):
    family = families[name]
    recipe = load_recipe(
        REPO / "recipes/kegg/tiny.yaml",
        [
            f"encoder.name_or_path={family.path}",
            f"encoder.trust_remote_code={str(family.trust_remote_code).lower()}",
            f"llm.name_or_path={tiny_models['qwen3']}",
            "projector.kind=conv",
            f"projector.pool={pool}",
            f"projector.kernel={kernel}",
        ],
    )
    encoder = build_encoder(recipe, "cpu")
    model, tokenizer = build_model(recipe, "cpu", encoder)
    processor = build_processor(recipe, tokenizer, encoder)
    assert (model.projector.pool, model.projector.kernel) == want and processor.pool == want[0]
    window = "ACGTTGCAAGGCTTACGATCGGATCCATGCAAGT"
    # Placeholders follow the real token count, and match the features the projector makes.
    assert processor.n_placeholders(window) == n_pooled(encoder.tokenizer.n_positions(window), want[0])
    features, valid = model.projector(*encoder.encode([window]))
    assert int(valid.sum()) == processor.n_placeholders(window)


def _losses(run: Path) -> list[float]:
    return [
        row["train/loss"]
        for row in map(json.loads, (run / "train_log.jsonl").read_text().splitlines())
        if "train/loss" in row
    ]


@pytest.mark.parametrize("name", FAMILIES)
def test_train_eval_cache_and_train_from_cache(families, tiny_models, data, tmp_path, single_process_env, name):
    family = families[name]
    common = [
        f"encoder.name_or_path={family.path}",
        f"encoder.trust_remote_code={str(family.trust_remote_code).lower()}",
        f"llm.name_or_path={tiny_models['qwen3']}",
        f"data.train={data / 'train.jsonl'}",
        "data.val=",
        "train.max_steps=3",
        "train.log_every=1",
        "train.save_every=0",
        "train.micro_batch_size=4",
        "encoder.cache_dtype=float32",
        "eval.max_new_tokens=4",
    ]
    recipe = str(REPO / "recipes/kegg/tiny.yaml")
    assert main(["train", recipe, *common, f"output_dir={tmp_path / 'live'}"]) == 0
    assert (
        main(
            ["eval", str(tmp_path / "live"), "--data", str(data / "test.jsonl"), "--out", str(tmp_path / "eval")]
            + (["--trust-remote-code"] if family.trust_remote_code else [])
        )
        == 0
    )
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == 8
    cache = [f"encoder.cache_dir={tmp_path / 'cache'}"]
    assert main(["cache-embeddings", recipe, *common, *cache, "--data", str(data / "test.jsonl")]) == 0
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text())["hidden_size"] == family.width
    assert main(["train", recipe, *common, *cache, f"output_dir={tmp_path / 'cached'}"]) == 0
    live, cached = _losses(tmp_path / "live"), _losses(tmp_path / "cached")
    assert len(live) == 3 and cached == pytest.approx(live, rel=1e-4)


def test_genos_stand_in_has_the_padded_vocabulary(families):
    from dnallm.tiny import genos_config

    encoder = _encoder(families["genos"])
    assert len(encoder.tokenizer.tokenizer) == 10 and encoder.model.get_input_embeddings().weight.shape[0] == 128
    assert (genos_config("1.2b").vocab_size, genos_config("10b").vocab_size) == (128, 256)
