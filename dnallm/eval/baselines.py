"""Three models, one dataset, one harness: how many points does the DNA add?

- ``dna+text``: the fusion model (frozen encoder -> projector -> LoRA LLM), as trained by ``dnallm train``;
- ``text-only``: the same LLM + LoRA trained on the question alone (``data.use_dna=false``);
- ``dna-only``: the frozen encoder + a classifier head over the fusion model's pair features
  (``projector.summary``'s views; with ``summary: none``, the default views).

All three are scored by the same code (``dnallm.eval.kegg.score``) on the same test file.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dnallm.config import Recipe, RecipeError, recipe_from_dict
from dnallm.data.kegg import load_examples
from dnallm.eval.dna_only import DNAHeadConfig, examples_views, fit_dna_only, load_head, predict
from dnallm.data.labels import LabelSet
from dnallm.eval.kegg import OUTPUT_FILES, evaluate, load_eval_examples, score, write_outputs
from dnallm.eval.plots import plot_comparison
from dnallm.eval.table import markdown_table, text_table
from dnallm.fusion.config import DNAFusionConfig
from dnallm.fusion.pretrained import dna_source
from dnallm.hub import locate_models, pick_device
from dnallm.io import atomic_write_text, check_outputs
from dnallm.fusion.summary import DEFAULT_SUMMARY
from dnallm.train.finetune import train

MODELS = ("dna+text", "text-only", "dna-only")
RUN_DIRS = {"dna+text": "dna_text", "text-only": "text_only", "dna-only": "dna_only"}


@dataclass
class BaselinesRecipe(Recipe):
    """A KEGG recipe plus the test file, which models to run, and the DNA-only head's settings."""

    test: str = ""  # one KEGG JSONL, or several joined by commas (e.g. val + test)
    models: list = field(default_factory=lambda: list(MODELS))  # which baselines to run: dna+text, text-only, dna-only
    dna_head: DNAHeadConfig = field(default_factory=DNAHeadConfig)


def kegg_recipe(recipe: BaselinesRecipe, run_dir: Path, use_dna: bool) -> Recipe:
    """The plain KEGG recipe that ``dnallm train`` runs for one of the LLM models."""
    tree = {k: v for k, v in recipe.to_dict().items() if k not in ("test", "models", "dna_head")}
    plain = recipe_from_dict(tree)
    plain.output_dir = str(run_dir)
    plain.run_name = f"{recipe.run_name}-{run_dir.name}"
    plain.data.use_dna = use_dna
    return plain


def run_llm(recipe: BaselinesRecipe, name: str, out_dir: Path) -> dict:
    run_dir = out_dir / RUN_DIRS[name]
    tick = time.perf_counter()
    checkpoint = train(kegg_recipe(recipe, run_dir, use_dna=name == "dna+text"))
    train_s = time.perf_counter() - tick
    metrics = evaluate(checkpoint, eval_files(recipe), run_dir / "eval")
    return {**metrics, "train_seconds": train_s}


def run_dna_only(recipe: BaselinesRecipe, out_dir: Path) -> dict:
    run_dir = out_dir / RUN_DIRS["dna-only"]
    device = pick_device()
    fusion = kegg_recipe(recipe, run_dir, use_dna=True)
    config = DNAFusionConfig.from_recipe(fusion)
    encoder = dna_source(config, device, cache_dir=fusion.encoder.cache_dir, cache_dtype=fusion.encoder.cache_dtype)
    window, batch = recipe.data.dna_window, recipe.encoder.batch_size
    # The fusion model's own pair features, so that the baseline reads the DNA as it does.
    kind = DEFAULT_SUMMARY if recipe.projector.summary == "none" else recipe.projector.summary
    context = config.positions(encoder.tokenizer)[2]
    tick = time.perf_counter()
    fit = fit_dna_only(
        encoder,
        load_examples(recipe.data.train, window),
        recipe.dna_head,
        kind=kind,
        context=context,
        encoder_batch_size=batch,
        seed=recipe.seed,
        out_dir=run_dir / "head",
    )
    train_s = time.perf_counter() - tick
    head, meta = load_head(run_dir / "head")
    test = load_eval_examples(eval_files(recipe), window, need_dna=True)
    pred_labels = predict(head.to("cpu"), examples_views(encoder, test, batch, meta["context"]), meta["labels"])
    texts = [f"Answer: {p}" for p in pred_labels]  # same parsing path as the LLMs' replies
    truth, pred, scores = score(list(test["answer"]), texts, LabelSet(meta["labels"]), recipe.data.train)
    metrics = {"checkpoint": str(run_dir / "head"), "data": eval_files(recipe), "uses_dna": True, **scores, "fit": fit}
    write_outputs(run_dir / "eval", metrics, truth, pred, texts, title="dna-only")
    return {**metrics, "train_seconds": train_s}


def eval_files(recipe: BaselinesRecipe) -> list[str]:
    files = [p.strip() for p in recipe.test.split(",") if p.strip()]
    if not files:
        raise RecipeError("no test file: set test=PATH (several: test=val.jsonl,test.jsonl)")
    return files


def majority_share(answers: list[str]) -> float:
    """Accuracy of always answering the most common test label: the bar a model must beat."""
    labels = LabelSet(answers)
    counts = Counter(labels.canonical(a) for a in answers)
    return max(counts.values()) / len(answers)


def comparison_rows(results: dict[str, dict], chance: float) -> list[dict]:
    rows = []
    for name, m in results.items():
        rows.append(
            {
                "model": name,
                "dna": name != "text-only",
                "text": name != "dna-only",
                "n": m["n"],
                "accuracy": m["accuracy"],
                "macro_precision": m["macro_precision"],
                "macro_recall": m["macro_recall"],
                "macro_f1": m["macro_f1"],
                "macro_f1_truth_labels": m["macro"]["truth_labels_zero_division_0"]["f1"],
                "truncated": m.get("truncated", 0),
                "train_seconds": round(m["train_seconds"], 1),
                "chance": chance,
            }
        )
        if "binary" in m:
            rows[-1].update(positive_label=m["binary"]["positive_label"], positive_f1=m["binary"]["f1"])
    return rows


def write_comparison(out_dir: Path, rows: list[dict], title: str) -> str:
    """``comparison.md``, ``comparison.json``, ``comparison.png``; returns the terminal table."""
    binary = bool(rows) and all("positive_f1" in r for r in rows)
    header = (
        ["model", "DNA", "text", "n", "accuracy"]
        + ([f"F1 {rows[0]['positive_label']}"] if binary else [])
        + ["macro P", "macro R", "macro F1", "macro F1 (truth labels)", "truncated", "train s"]
    )
    cells = [
        [r["model"], "yes" if r["dna"] else "no", "yes" if r["text"] else "no", r["n"], r["accuracy"]]
        + ([r["positive_f1"]] if binary else [])
        + [
            r["macro_precision"],
            r["macro_recall"],
            r["macro_f1"],
            r["macro_f1_truth_labels"],
            r["truncated"],
            f"{r['train_seconds']:.1f}",
        ]
        for r in rows
    ]
    by_name = {r["model"]: r for r in rows}
    gain = ""
    if "dna+text" in by_name and "text-only" in by_name:
        points = 100 * (by_name["dna+text"]["accuracy"] - by_name["text-only"]["accuracy"])
        gain = f"DNA adds {points:+.1f} accuracy points over text alone."
    chance = rows[0]["chance"] if rows else 0.0
    note = f"Chance (always the most common test label): {chance:.3f}. {gain}".strip()
    markdown = f"# {title}\n\n{markdown_table(header, cells)}\n\n{note}\n"
    atomic_write_text(out_dir / "comparison.md", markdown)
    summary = {"title": title, "chance": chance, "rows": rows}
    atomic_write_text(out_dir / "comparison.json", json.dumps(summary, indent=2) + "\n")
    plot_comparison(rows, out_dir / "comparison.png", title=title)
    return f"{text_table(header, cells)}\n{note}"


def run_baselines(recipe: BaselinesRecipe) -> dict:
    """Train and score each model in ``recipe.models``; write the comparison to ``output_dir``."""
    unknown = [m for m in recipe.models if m not in MODELS]
    if unknown:
        raise RecipeError(f"unknown model(s) {', '.join(unknown)} in models; choose from {', '.join(MODELS)}")
    if recipe.eval.score != "label":
        raise RecipeError(
            f"eval.score={recipe.eval.score}: baselines compares models on label tasks (eval.score=label); "
            "score each model with `dnallm eval` instead"
        )
    out_dir = Path(recipe.output_dir)
    files = eval_files(recipe)
    run_dirs = [out_dir / RUN_DIRS[name] for name in recipe.models]
    check_outputs(
        [out_dir / f"comparison.{ext}" for ext in ("md", "json", "png")]
        + [d / "eval" / f for d in run_dirs for f in OUTPUT_FILES],
        dirs=[out_dir, *run_dirs],
        inputs=[recipe.data.train, recipe.data.val, *files],
    )
    locate_models(recipe)  # the runs' checkpoints then name the base models by absolute path
    chance = majority_share(list(load_eval_examples(files, recipe.data.dna_window, need_dna=False)["answer"]))
    results = {}
    for name in recipe.models:
        results[name] = run_dna_only(recipe, out_dir) if name == "dna-only" else run_llm(recipe, name, out_dir)
    rows = comparison_rows(results, chance)
    table = write_comparison(out_dir, rows, title=f"{recipe.run_name} on {', '.join(Path(f).name for f in files)}")
    return {"rows": rows, "chance": chance, "table": table, "results": results}
