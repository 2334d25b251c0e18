"""Training: recipes, DeepSpeed or plain PyTorch engines, checkpoints."""
