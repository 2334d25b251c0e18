"""Frozen DNA encoders: sequences in, per-position embeddings out."""

from dnallm.encoders.hf import DNAEncoder, DNATokenizer

__all__ = ["DNAEncoder", "DNATokenizer"]
