"""Streaming coverage windows: sequence tokens and transformed per-base targets.

Only window coordinates are held in memory; each batch reads its bases from the FASTA
and its values from the bigWigs when it is drawn. Batches, not examples, are the unit
of iteration, so a ``DataLoader(batch_size=None, num_workers=k)`` keeps their order
(worker ``w`` builds batches ``w, w+k, ...``) and a resumed run can skip batches for free.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from dnallm.data.genome import Genome, Region, reverse_complement
from dnallm.data.tracks import CoverageReader
from dnallm.data.transform import TargetTransform


def base_lookup(token_ids: dict[str, int]) -> np.ndarray:
    """(256,) table from an upper-case ASCII base to its token id; -1 elsewhere."""
    table = np.full(256, -1, dtype=np.int64)
    for base, token_id in token_ids.items():
        table[ord(base)] = token_id
    return table


class CoverageWindows(IterableDataset):
    """Yields ``{"input_ids": (B, L), "attention_mask": (B, L), "targets": (B, L, T), "n_missing": (T,)}``.

    ``targets`` are transformed (``TargetTransform.forward``). With ``rc_augment`` each
    window is, with probability 1/2 (fixed by seed, epoch and window), read on the
    reverse strand: bases reverse-complemented, values reversed, ``+``/``-`` tracks swapped.
    Windows are dealt to ranks by ``rank::world_size`` after the epoch's shuffle;
    ``drop_last`` keeps whole batches only, the same number on every rank.
    """

    def __init__(
        self,
        genome: Genome,
        reader: CoverageReader,
        windows: list[Region],
        lookup: np.ndarray,
        transform: TargetTransform,
        *,
        batch_size: int,
        pad_id: int = 0,
        shuffle: bool = False,
        seed: int = 0,
        rc_augment: bool = False,
        partners: list[int] | None = None,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        if rc_augment and partners is None:
            raise ValueError("rc_augment needs the strand partner of every track")
        self.genome, self.reader, self.windows = genome, reader, list(windows)
        self.lookup, self.transform, self.pad_id = lookup, transform, pad_id
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rc_augment, self.partners = rc_augment, partners
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Next iteration draws the order of ``epoch`` and starts after ``skip`` batches."""
        self.epoch, self.skip = epoch, skip

    def _batches(self) -> list[list[int]]:
        order = np.arange(len(self.windows))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        if self.drop_last:
            order = order[: len(order) // (self.world_size * self.batch_size) * self.world_size * self.batch_size]
        mine = order[self.rank :: self.world_size].tolist()
        return [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self):
        batches = self._batches()[self.skip :]
        info = get_worker_info()
        if info is not None:
            batches = batches[info.id :: info.num_workers]
        for batch in batches:
            yield self.collate([self.example(i) for i in batch])

    def example(self, i: int) -> dict:
        """One window: ``codes`` (L,) uint8, raw ``values`` (L, T), ``n_missing`` (T,)."""
        window = self.windows[i]
        codes = self.genome.codes(window)
        values, n_missing = self.reader.read(window)
        if self.rc_augment and np.random.default_rng([self.seed, self.epoch, i]).random() < 0.5:
            codes = reverse_complement(codes)
            values = values[::-1, self.partners]
        return {"window": window, "codes": codes, "values": np.ascontiguousarray(values), "n_missing": n_missing}

    def collate(self, examples: list[dict]) -> dict:
        longest = max(len(e["codes"]) for e in examples)
        n_tracks = examples[0]["values"].shape[1]
        ids = torch.full((len(examples), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(examples), longest), dtype=torch.bool)
        raw = torch.zeros((len(examples), longest, n_tracks))
        for row, e in enumerate(examples):
            n = len(e["codes"])
            ids[row, :n] = torch.from_numpy(self.lookup[e["codes"]])
            mask[row, :n] = True
            raw[row, :n] = torch.from_numpy(e["values"])
        return {
            "input_ids": ids,  # (B, L)
            "attention_mask": mask,  # (B, L)
            "targets": self.transform.forward(raw),  # (B, L, T)
            "n_missing": torch.from_numpy(np.sum([e["n_missing"] for e in examples], axis=0)),  # (T,)
        }


def _window_examples(genome: Genome, reader: CoverageReader, windows: list[Region]):
    for w in windows:
        values, _ = reader.read(w)
        yield {
            "chrom": w.chrom,
            "start": w.start,
            "end": w.end,
            "sequence": genome.codes(w).tobytes().decode(),
            "coverage": values,
        }


def hf_dataset(genome: Genome, reader: CoverageReader, windows: list[Region]):
    """The windows as a streaming ``datasets.IterableDataset`` of raw examples.

    Each example: ``chrom``, ``start``, ``end``, ``sequence`` (str) and ``coverage``
    ``(L, n_tracks)`` float32 in raw units. ``datasets`` shards the window list between
    data-loader workers.
    """
    from datasets import Array2D, Features, IterableDataset as HFIterable, Value

    features = Features(
        {
            "chrom": Value("string"),
            "start": Value("int64"),
            "end": Value("int64"),
            "sequence": Value("string"),
            "coverage": Array2D(shape=(None, len(reader.tracks)), dtype="float32"),
        }
    )
    return HFIterable.from_generator(
        _window_examples, features=features, gen_kwargs={"genome": genome, "reader": reader, "windows": list(windows)}
    )
