"""Aten operations and host syncs of one training step, as JSON (``dnallm.train.opcount``).

# the tiny recipe's first step: micro-batch 4, live encoder, forward + backward + AdamW
python scripts/count_ops.py recipes/kegg/tiny.yaml train.micro_batch_size=4
# a step in the steady state (optimizer state already made)
python scripts/count_ops.py recipes/kegg/tiny.yaml train.micro_batch_size=4 --steps-before 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dnallm.config import load_recipe
from dnallm.train.opcount import count_step


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", type=Path)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--steps-before", type=int, default=0, help="uncounted optimizer steps first (0: count the first)")
    args = p.parse_args(argv)
    out = {
        "recipe": str(args.recipe),
        "overrides": args.overrides,
        "steps_before": args.steps_before,
        **count_step(load_recipe(args.recipe, args.overrides), args.steps_before),
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
