"""Where DNA enters the LLM: projector, placeholder scatter, the composite model."""

from dnallm.fusion.model import DNAFusionLM, build_fusion_lm
from dnallm.fusion.projector import DNAProjector

__all__ = ["DNAFusionLM", "DNAProjector", "build_fusion_lm"]
