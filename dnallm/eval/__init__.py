"""Evaluation: generation, answer parsing, metrics."""
