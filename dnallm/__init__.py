"""dnallm: fine-tune large language models that read DNA.

Data flows one way through the stages:
``data`` (records, windows, prompts) -> ``encoders`` (frozen DNA models)
-> ``fusion`` (projector, placeholder scatter, composite model)
-> ``train`` (recipes, DeepSpeed, checkpoints) -> ``eval`` (metrics) -> ``serve`` (chat, HTTP).

The Python API (``dnallm.load``, ``dnallm.embed``) lives in ``dnallm.api`` and is imported
on first use, so that ``import dnallm`` stays cheap.
"""

__version__ = "0.1.0"
__all__ = ["load", "embed"]


def __getattr__(name: str):
    if name in __all__:
        from dnallm import api

        return getattr(api, name)
    raise AttributeError(f"module 'dnallm' has no attribute {name!r}")
