import pytest
import yaml

from dnallm.config import RecipeError, kegg_recipe_class, load_recipe, recipe_from_dict


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  lr: 1.0e-4\n  max_steps: 10\nlora:\n  r: 4\n")
    recipe = load_recipe(
        path, ["train.lr=2e-4", "lora.target_modules=q_proj,v_proj", "deepspeed=recipes/deepspeed/zero2.json"]
    )
    assert recipe.train.lr == 2e-4 and recipe.train.max_steps == 10 and recipe.lora.r == 4
    assert recipe.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.deepspeed == "recipes/deepspeed/zero2.json"
    assert recipe_from_dict(recipe.to_dict()) == recipe


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", r"unknown recipe key 'train.lrr'; did you mean train.lr"),
        ("trian.lr=1", r"unknown recipe key 'trian.lr'; did you mean train.lr"),
        ("train.epochs=abc", r"recipe key 'train.epochs' expects a number, got 'abc'"),
        ("data.dna_window=1.5", r"recipe key 'data.dna_window' expects int, got 1.5"),
        ("llm.trust_remote_code=maybe", r"recipe key 'llm.trust_remote_code' expects true/false"),
        ("data=3", r"recipe key 'data' is a section"),
        ("train.lr", r"override 'train.lr' must look like key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, [override])


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("encoder:\n  name_or_pth: x\n")
    with pytest.raises(
        RecipeError, match=r"unknown recipe key 'encoder.name_or_pth'; did you mean encoder.name_or_path"
    ):
        load_recipe(path)


def test_shipped_recipes_load():
    from pathlib import Path

    recipes = sorted(Path(__file__).resolve().parent.parent.glob("recipes/kegg/*.yaml"))
    assert len(recipes) >= 5
    for path in recipes:
        recipe = load_recipe(
            path, cls=kegg_recipe_class(yaml.safe_load(path.read_text()))
        )  # GRPO recipes add a grpo section
        assert recipe.data.dna_window > 0
        if path.stem != "tiny":
            assert recipe.llm.name_or_path.startswith("Qwen/Qwen3-")
            if recipe.encoder.name_or_path.startswith("BGI-HangzhouAI/Genos-"):
                assert not recipe.encoder.trust_remote_code  # a standard Mixtral-shaped MoE


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_steps=-5", r"recipe key 'train.max_steps' must be >= 0, got -5"),
        ("train.lr=-1", r"recipe key 'train.lr' must be > 0, got -1.0"),
        ("train.lr=.nan", r"recipe key 'train.lr' must be > 0, got nan"),
        ("train.micro_batch_size=0", r"recipe key 'train.micro_batch_size' must be >= 1, got 0"),
        ("lora.dropout=1.0", r"recipe key 'lora.dropout' must be < 1, got 1.0"),
        (
            "deepspeed=recipes/deepspeed/zero9.json",
            r"recipe key 'deepspeed': no such file recipes/deepspeed/zero9.json",
        ),
    ],
)
def test_out_of_range_values_name_the_key(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, [override])


def test_coverage_recipe_checks_ranges_too():
    from dnallm.config import load_coverage_recipe

    with pytest.raises(RecipeError, match=r"recipe key 'train.global_batch_size' must be >= 0, got -8"):
        load_coverage_recipe(None, ["train.global_batch_size=-8"])


def test_one_encoder_section_and_each_recipe_refuses_the_keys_it_does_not_read(tmp_path):
    from dnallm.config import CoverageRecipe, Recipe, load_coverage_recipe

    assert type(CoverageRecipe().encoder) is type(Recipe().encoder)
    coverage = load_coverage_recipe(None, ["encoder.gradient_checkpointing=true"])
    assert coverage.encoder.gradient_checkpointing is True
    # A saved coverage recipe reads back as it was, without the keys coverage does not read.
    saved = yaml.safe_load(coverage.to_yaml())
    assert saved["encoder"] == {
        "name_or_path": "BGI-HangzhouAI/Genos-1.2B",
        "trust_remote_code": False,
        "gradient_checkpointing": True,
    }
    assert recipe_from_dict(saved, cls=CoverageRecipe) == coverage
    with pytest.raises(RecipeError, match=r"recipe key 'encoder.cache_dir' is not read by coverage recipes"):
        load_coverage_recipe(None, ["encoder.cache_dir=cache"])
    path = tmp_path / "r.yaml"
    path.write_text("encoder:\n  gradient_checkpointing: true\n")
    with pytest.raises(RecipeError, match=r"recipe key 'encoder.gradient_checkpointing' is not read by kegg recipes"):
        load_recipe(path)
    assert "gradient_checkpointing" not in Recipe().to_dict()["encoder"]


def test_the_baselines_train_the_kegg_recipe_they_were_given(tmp_path):
    from dnallm.eval.baselines import BaselinesRecipe, kegg_recipe

    recipe = recipe_from_dict({"encoder": {"layer": 3, "cache_dir": "cache"}, "lora": {"r": 4}}, cls=BaselinesRecipe)
    plain = kegg_recipe(recipe, tmp_path / "dna_text", use_dna=True)
    assert plain.encoder == recipe.encoder and plain.lora.r == 4 and plain.output_dir == str(tmp_path / "dna_text")
