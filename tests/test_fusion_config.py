"""The fusion model's description: built from a recipe, checked when built, saved and read back;
recipe mistakes named in one line before any weights load."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dnallm.cli import main
from dnallm.config import GRPORecipe, ProjectorConfig, RecipeError, load_recipe
from dnallm.fusion.config import CONFIG_FILE, DNAFusionConfig

REPO = Path(__file__).resolve().parents[1]
KEGG_TINY = REPO / "recipes/kegg/tiny.yaml"


def test_config_holds_the_recipe_model_and_round_trips_through_its_file(tmp_path):
    recipe = load_recipe(KEGG_TINY, ["data.dna_window=48", "train.logits=full", "lora.r=2"])
    config = DNAFusionConfig.from_recipe(recipe)
    assert (config.dna_window, config.logits, config.lora.r) == (48, "full", 2)
    assert config.projector == recipe.projector and config.llm.name_or_path == recipe.llm.name_or_path
    assert config.save(tmp_path).name == CONFIG_FILE
    assert DNAFusionConfig.load(tmp_path) == config
    other = DNAFusionConfig.from_recipe(load_recipe(KEGG_TINY, ["projector.summary_tokens=2"]))
    want = [("projector.summary_tokens", recipe.projector.summary_tokens, 2)]
    assert config.differences(other, ignore=("dna_window", "logits", "lora.r")) == want


@pytest.mark.parametrize(
    "section, value, message",
    [
        (
            {"kind": "mpl"},
            "mpl",
            r"^recipe key 'projector\.kind' must be one of linear, mlp, conv, got 'mpl' \(did you mean mlp\?\)$",
        ),
        (
            {"summary": "pooled+center"},
            "pooled+center",
            r"^recipe key 'projector\.summary' must be one of pooled, aligned, kmers, "
            r"centre or several joined with '\+', or none, got 'pooled\+center' "
            r"\(did you mean centre\?\)$",
        ),
        (
            {"summary": "none+pooled"},
            "none+pooled",
            r"^recipe key 'projector\.summary' must be .* got 'none\+pooled'$",
        ),
        (
            {"kind": "conv", "pool": 8, "kernel": 4},
            4,
            r"^recipe key 'projector\.kernel' \(4\) must be >= projector\.pool \(8\)",
        ),
    ],
)
def test_a_config_is_checked_when_it_is_built(section, value, message):
    with pytest.raises(RecipeError, match=message):
        DNAFusionConfig(projector=ProjectorConfig(**section))


def test_a_damaged_config_file_is_named_with_its_path(tmp_path):
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"projector": {"kind": "mpl"}}))
    with pytest.raises(RecipeError, match=rf"^{tmp_path / CONFIG_FILE}: recipe key 'projector\.kind' must be one of"):
        DNAFusionConfig.load(tmp_path)
    (tmp_path / CONFIG_FILE).write_text('{"projector": ')
    with pytest.raises(RecipeError, match=rf"^{tmp_path / CONFIG_FILE}: not valid JSON"):
        DNAFusionConfig.load(tmp_path)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_a_misspelt_projector_kind_fails_before_any_weights_load(tmp_path, capsys):
    # The base models named here do not exist: a check made after loading them would report them instead.
    missing = [
        f"encoder.name_or_path={tmp_path}/no-encoder",
        f"llm.name_or_path={tmp_path}/no-llm",
        f"output_dir={tmp_path}/run",
    ]
    assert main(["train", str(KEGG_TINY), "projector.kind=mpl", *missing]) == 2
    line = one_error_line(capsys)
    assert line == (
        "dnallm train: error: recipe key 'projector.kind' must be one of linear, mlp, conv, got 'mpl' "
        "(did you mean mlp?)"
    )
    assert not (tmp_path / "run").exists()


def test_invalid_yaml_is_one_line_with_its_line_and_column(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("data:\n  train: x.jsonl\n  val: [unclosed\nlora:\n  r: 4\n")
    assert main(["train", str(recipe)]) == 2
    line = one_error_line(capsys)
    assert line == f"dnallm train: error: {recipe}: invalid YAML at line 4, column 5: expected ',' or ']', but got ':'"
    assert main(["train", str(KEGG_TINY), "train.report_to=[tensorboard"]) == 2
    line = one_error_line(capsys)
    assert "override 'train.report_to=[tensorboard': invalid YAML at line 1" in line, line


def test_fixed_choices_and_grpo_ranges_are_checked_when_the_recipe_loads():
    with pytest.raises(
        RecipeError, match=r"^recipe key 'train\.report_to' must be one of tensorboard, wandb, got \['tensorbord'\]"
    ):
        load_recipe(KEGG_TINY, ["train.report_to=[tensorbord]"])
    with pytest.raises(
        RecipeError, match=r"^recipe key 'encoder\.dtype' must be one of auto, float32, bfloat16, float16"
    ):
        load_recipe(KEGG_TINY, ["encoder.dtype=fp16"])
    grpo = REPO / "recipes/grpo/tiny.yaml"
    for override, message in (
        ("grpo.top_p=1.5", r"'grpo\.top_p' must be <= 1, got 1\.5"),
        ("grpo.group_size=1", r"'grpo\.group_size' must be >= 2, got 1"),
        ("grpo.kl_beta=-0.1", r"'grpo\.kl_beta' must be >= 0, got -0\.1"),
    ):
        with pytest.raises(RecipeError, match=message):
            load_recipe(grpo, [override], cls=GRPORecipe)


def test_the_recipe_schema_imports_without_torch():
    code = (
        "import sys, dnallm.config; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
