"""What one training step asks of the device: aten operations and host syncs, counted.

On a GPU a LoRA step of a few thousand tokens is bound by kernel launches and by the host
waiting for the device, long before the device is busy. The CPU shows the same operations:
``count_step`` runs the recipe's objective through the trainer's own ``optimizer_step``
(forward, backward, optimizer) under a ``TorchDispatchMode`` that counts every aten operation
and each one that makes the host wait for the device's result:

- ``_local_scalar_dense``: ``.item()``, ``int(tensor)``, ``float(tensor)``, ``bool(tensor)``;
- ``nonzero``, ``masked_select``, ``unique``: outputs whose size depends on the data;
- ``index`` / ``index_put_`` with a boolean mask (a ``nonzero`` inside).

``non_view_ops`` leaves out the views (``view``, ``t``, ``transpose``, ``slice``, ...), which change
a tensor's metadata only: roughly the kernels a GPU would launch.

``scripts/count_ops.py`` prints the counts; a test keeps them from regressing.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = {
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
}
MASK_INDEX_OPS = {"index", "index_put", "index_put_", "_index_put_impl_"}


def _boolean_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(torch.is_tensor(i) and i.dtype == torch.bool for i in (indices or ()))


class OpCounter(TorchDispatchMode):
    """Counts aten operations by name (``ops``) and host syncs (``syncs``) while active."""

    def __init__(self):
        super().__init__()
        self.ops, self.syncs, self.views = Counter(), Counter(), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        self.views += func.is_view  # metadata only (view, t, transpose, slice, ...): no kernel on a GPU
        if name in SYNC_OPS or (name in MASK_INDEX_OPS and _boolean_index(args)):
            self.syncs[name] += 1
        return func(*args, **(kwargs or {}))

    def summary(self, top: int = 12) -> dict:
        total = sum(self.ops.values())
        return {
            "aten_ops": total,
            "non_view_ops": total - self.views,
            "host_syncs": sum(self.syncs.values()),
            "syncs_by_op": dict(self.syncs),
            "top_ops": dict(self.ops.most_common(top)),
        }


def count_step(recipe, steps_before: int = 0) -> dict:
    """Aten operations and host syncs of one optimizer step of a KEGG ``recipe`` (one process),
    after ``steps_before`` uncounted steps (0: the first step, whose optimizer state is created
    in it). The recipe's micro-batches, encoder and engine are the ones ``dnallm train`` runs."""
    from dnallm.train.checkpoint import seed_everything
    from dnallm.train.engine import build_engine, grad_accum_steps, pick_device
    from dnallm.train.finetune import FineTune
    from dnallm.train.trainer import LossWindow, micro_batches, optimizer_step

    seed_everything(recipe.seed)
    objective = FineTune(recipe)
    device = pick_device()
    model = objective.setup(device, 0, 1)
    grad_accum = grad_accum_steps(recipe, 1)
    engine = build_engine(
        recipe,
        model,
        objective.param_groups(model),
        total_steps=steps_before + 1,
        grad_accum=grad_accum,
        device=device,
    )
    data = micro_batches(objective, 0, objective.batches_per_epoch())
    window = LossWindow(engine.device)
    engine.module.train()
    for _ in range(steps_before):
        optimizer_step(objective, engine, [next(data) for _ in range(grad_accum)], window)
    group = [next(data) for _ in range(grad_accum)]
    with OpCounter() as counter:
        optimizer_step(objective, engine, group, window)
    loss, _, _ = window.read()
    return {**counter.summary(), "micro_batches": grad_accum, "loss": loss}
