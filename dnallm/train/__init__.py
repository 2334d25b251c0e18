"""Training: one loop, engine and checkpoint format for every objective.

The core, shared by all objectives:
    trainer.py     the loop (set-up, accumulation, logging, checkpoints, resume, SIGTERM)
                   and the contract an objective fulfils
    engine.py      DeepSpeed ZeRO or plain PyTorch, distributed set-up, schedule
    checkpoint.py  checkpoint directories: save, prune, resume, RNG state, output_dir rule
    tracking.py    train_log.jsonl, TensorBoard, W&B
The recipe schema (shared sections, a section set per objective) is ``dnallm.config``.

The objectives, each only what is its own (build, batches, loss, validation, kept tensors):
    finetune.py    KEGG: DNA encoder -> projector -> LoRA LLM (build.py, embed_cache.py)
    coverage.py    coverage tracks: DNA trunk + conv head (coverage_data.py, coverage_validation.py)
"""
