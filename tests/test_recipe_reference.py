"""docs/recipe.md: every recipe key, with its type, default, checks and meaning, as the schema says."""

import importlib.util
from pathlib import Path

from dnallm.config import all_keys

REPO = Path(__file__).resolve().parents[1]


def reference_script():
    spec = importlib.util.spec_from_file_location("recipe_reference", REPO / "scripts" / "recipe_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_recipe_key_is_in_the_reference_with_its_meaning():
    script = reference_script()
    text = (REPO / "docs" / "recipe.md").read_text()
    for title, _, cls in script.recipe_kinds():
        section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
        documented = {row[0] for row in script.rows(cls())}
        missing = [key for key in all_keys(cls()) if f"| `{key}` |" not in section]
        assert not missing, f"{title}: keys missing from docs/recipe.md: {missing}"
        assert documented == set(all_keys(cls()))
        unexplained = [key for key, *_, meaning in script.rows(cls()) if not meaning]
        assert not unexplained, f"{title}: keys without a comment in the schema: {unexplained}"


def test_the_reference_is_what_the_schema_gives():
    # Rewritten by `python scripts/recipe_reference.py` whenever a key, default or check changes.
    assert (REPO / "docs" / "recipe.md").read_text() == reference_script().render()
