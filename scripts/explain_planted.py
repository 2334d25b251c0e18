"""Attribution where the answer is known: train the tiny fusion model on planted signals, explain
held-out records with ISM and gradient x input, and print how often the planted bases come out
on top (JSON). The numbers of the README's attribution section; tests/test_explain.py asserts them.

    python scripts/explain_planted.py --records 40 --plot docs/images/explain_planted_motif.png
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from dnallm.config import load_recipe
from dnallm.data.kegg import examples_from_records, read_jsonl, write_jsonl
from dnallm.data.synthetic import FIXED_CLASSES, planted_signal_records
from dnallm.eval.explain import Explainer, attribution_metrics, explain_examples, planted_positions
from dnallm.fusion.model import DNAFusionLM
from dnallm.train.finetune import train

REPO = Path(__file__).resolve().parent.parent
# Steps per signal at k = 8, within the 300 tests/test_fidelity.py gives every signal (the planted recipe allows 600).
STEPS = {"motif": 200, "centre": 200, "substitution": 300}


def tiny_recipe(models: dict, train_file: Path, out: Path, *overrides: str):
    """The planted recipe's model and schedule (recipes/baselines/planted_tiny.yaml) as a plain KEGG recipe."""
    return load_recipe(
        REPO / "recipes/kegg/tiny.yaml",
        [
            f"output_dir={out}",
            f"encoder.name_or_path={models['genos']}",
            f"llm.name_or_path={models['qwen3']}",
            f"data.train={train_file}",
            "data.val=",
            "train.save_every=0",
            "train.keep_last=1",
            *overrides,
        ],
    )


def planted_checkpoint(models: dict, root: Path, signal: str, steps: int) -> dict:
    """Train on 600 records of ``signal`` (the fidelity tests' data). -> {"checkpoint", "test": 200 held out}"""
    data = root / signal
    records = planted_signal_records(800, n_classes=FIXED_CLASSES.get(signal, 4), length=4001, seed=11, signal=signal)
    write_jsonl(data / "test.jsonl", records[:200])
    write_jsonl(data / "train.jsonl", records[200:])
    checkpoint = train(tiny_recipe(models, data / "train.jsonl", data / "run", f"train.max_steps={steps}"))
    return {"checkpoint": checkpoint, "test": data / "test.jsonl"}


def explain_planted(entry: dict, method: str, n_records: int, batch_size: int = 192, **kwargs):
    """The model's own answers for the first ``n_records`` test records, explained."""
    loaded = DNAFusionLM.from_pretrained(entry["checkpoint"], "cpu")
    recipe, encoder, model, processor = loaded.recipe, loaded.dna_source, loaded.model, loaded.processor
    examples = list(examples_from_records(read_jsonl(entry["test"])[:n_records], recipe.data.dna_window))
    explainer = Explainer(model, encoder, processor, device="cpu", encoder_batch_size=recipe.encoder.batch_size)
    return explain_examples(
        explainer, examples, labels=[None] * len(examples), method=method, batch_size=batch_size, **kwargs
    )


def main() -> None:
    from dnallm.tiny import make_tiny

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=40, help="held-out records explained per signal")
    parser.add_argument("--plot", type=Path, help="write the first motif record's ISM picture here")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = make_tiny(Path(tmp) / "tiny")
        for signal, steps in STEPS.items():
            entry = planted_checkpoint(models, Path(tmp), signal, steps)
            for method in ("ism", "gradient"):
                explanations = explain_planted(entry, method, args.records)
                planted = planted_positions(signal, len(explanations[0].variant))
                results[f"{signal}/{method}"] = {"steps": steps, **attribution_metrics(explanations, planted)}
                if args.plot and signal == "motif" and method == "ism":
                    explanations[0].where = "planted motif, held-out record 1"
                    explanations[0].plot(args.plot)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
