"""dnallm: fine-tune large language models that read DNA.

Data flows one way through the stages:
``data`` (records, windows, prompts) -> ``encoders`` (frozen DNA models)
-> ``fusion`` (projector, placeholder scatter, composite model)
-> ``train`` (recipes, DeepSpeed, checkpoints) -> ``eval`` (metrics).
"""

__version__ = "0.1.0"
