"""Where DNA enters the LLM: projector, placeholder scatter, the composite model and its config."""

from dnallm.fusion.config import DNAFusionConfig
from dnallm.fusion.model import DNAFusionLM
from dnallm.fusion.projector import DNAProjector

__all__ = ["DNAFusionConfig", "DNAFusionLM", "DNAProjector"]
