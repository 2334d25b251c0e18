"""Write docs/recipe.md: every recipe key with its type, default, checks and meaning, from the schema.

    python scripts/recipe_reference.py            # rewrite docs/recipe.md
    python scripts/recipe_reference.py --check    # exit 1 if docs/recipe.md is not what the schema gives

The schema is the recipe dataclasses (``dnallm/config.py``, the baselines' in
``dnallm/eval/baselines.py``); a key's meaning is the comment on its line there, its checks
the ``check(...)`` ranges and choices the loader applies.
"""

from __future__ import annotations

import argparse
import inspect
import io
import sys
import tokenize
from dataclasses import fields, is_dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "recipe.md"

HEADER = """# Recipe reference

Every key a recipe can set, generated from the schema by `scripts/recipe_reference.py` (do not
edit by hand; `tests/test_recipe_reference.py` fails when this file and the schema differ).
Set a key in the YAML file under its section, or on the command line as `section.key=value`.
Ranges and fixed choices are checked when the recipe loads, before any model does; a misspelt
key is named with close suggestions.
"""


# (title, command, recipe class): one table per kind of run.
def recipe_kinds():
    from dnallm.config import CoverageRecipe, GRPORecipe, Recipe
    from dnallm.eval.baselines import BaselinesRecipe

    return [
        ("Fine-tuning (KEGG, VEP)", "dnallm train", Recipe),
        ("Reinforcement (GRPO)", "dnallm grpo", GRPORecipe),
        ("Baselines", "dnallm baselines", BaselinesRecipe),
        ("Coverage tracks", "dnallm train-tracks", CoverageRecipe),
    ]


def line_comments(cls) -> dict[str, str]:
    """Field name -> its meaning in ``cls``'s source: the comment at the end of its line, else
    the comment lines right above it."""
    skip = (tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.NEWLINE)
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(inspect.getsource(cls)).readline) if t.type not in skip]
    by_line: dict[int, list] = {}
    for tok in tokens:
        by_line.setdefault(tok.start[0], []).append(tok)
    out = {}
    for line, toks in by_line.items():
        if len(toks) < 3 or toks[0].type != tokenize.NAME or toks[1].string != ":":
            continue
        if toks[-1].type == tokenize.COMMENT:
            out[toks[0].string] = toks[-1].string.lstrip("#").strip()
            continue
        above, row = [], line - 1
        while row in by_line and len(by_line[row]) == 1 and by_line[row][0].type == tokenize.COMMENT:
            above.insert(0, by_line[row][0].string.lstrip("#").strip())
            row -= 1
        out[toks[0].string] = " ".join(above)
    return out


def field_comment(cls, name: str) -> str:
    for owner in cls.__mro__:  # a subclass that only changes a default keeps its parent's meaning
        if name in getattr(owner, "__annotations__", {}) and line_comments(owner).get(name):
            return line_comments(owner)[name]
    return ""


def checks_of(f) -> str:
    marks = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = [f"{marks[k]} {v}" for k, v in f.metadata.get("range", {}).items()]
    choices = f.metadata.get("choices", ())
    if choices:
        joined = f.metadata.get("joined", "")
        parts.append(" \\| ".join(choices) + (f" (joined by `{joined}`)" if joined else ""))
    return ", ".join(parts)


def rows(recipe, prefix: str = "", unused: tuple = ()) -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, checks, meaning) for every key of ``recipe`` (a default instance:
    its values are the defaults, a section's own where the recipe gives it some), in order;
    not the keys of a shared section the recipe does not read (``unused_keys``)."""
    unused = unused or getattr(recipe, "unused_keys", ())
    out = []
    for f in fields(recipe):
        value = getattr(recipe, f.name)
        if prefix + f.name in unused:
            continue
        if is_dataclass(value):
            out += rows(value, f"{prefix}{f.name}.", unused)
            continue
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        out.append((prefix + f.name, kind, repr(value), checks_of(f), field_comment(type(recipe), f.name)))
    return out


def escape(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    lines = [HEADER]
    for title, command, cls in recipe_kinds():
        lines += [
            f"## {title}",
            "",
            f"`{command} RECIPE.yaml [key=value ...]` ({cls.__module__}.{cls.__name__})",
            "",
            "| key | type | default | checked | meaning |",
            "| --- | --- | --- | --- | --- |",
        ]
        for key, kind, default, checks, meaning in rows(cls()):
            lines.append(f"| `{key}` | {kind} | `{escape(default)}` | {checks} | {escape(meaning)} |")
        lines.append("")
    lines += resume_section()
    return "\n".join(lines)


def resume_section() -> list[str]:
    """The keys a resumed run may change (``config.RESUMABLE_KEYS``)."""
    from dnallm.config import RESUMABLE_KEYS

    keys = ", ".join(f"`{k}*`" if k.endswith(".") else f"`{k}`" for k in RESUMABLE_KEYS)
    return [
        "## Resuming",
        "",
        "A run resumed with `train.resume_from_checkpoint` continues the recipe it was trained with. "
        "These keys may differ on resume; they change neither the model nor the data it trains on:",
        "",
        keys + ".",
        "",
        "Any other key that differs, and any file of the `data` section whose content changed (each run keeps "
        "a content hash of them in `trainer_state.json`; a file over 1 GiB is hashed by its size and its first "
        "and last 64 MiB), stops the resume with one line naming each (old -> new). A data file moved "
        "elsewhere with the same content is the same file. `train.allow_recipe_change=true` continues anyway.",
        "",
    ]


def main() -> int:
    from dnallm.io import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with docs/recipe.md instead of writing it")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/recipe_reference.py", file=sys.stderr)
            return 1
        return 0
    atomic_write_text(OUT, text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
