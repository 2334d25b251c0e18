"""Argument types the command line shares: checked when parsed, one usage line when wrong."""

from __future__ import annotations

import argparse


def int_in(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high]; outside it, argparse's one-line usage error (status 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range ({low}..{high if high is not None else ''})")
        return value

    parse.__name__ = "integer"
    return parse
