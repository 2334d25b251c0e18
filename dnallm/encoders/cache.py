"""The frozen encoder's embeddings, computed once and read back from disk.

A frozen encoder gives the same embeddings for a window on every epoch, so running it
on every training step is wasted work (for Genos-10B about as much as the LLM step).
``build_cache`` runs it once; ``CachedEncoder`` then stands in for ``DNAEncoder``
(same ``encode`` / ``tokenizer`` / ``hidden_size``) without loading any encoder weights.

Layout of a cache directory::

    manifest.json            identity (encoder, weights fingerprint, layer, window, dtype),
                             hidden size, shard list, and whether the cache is complete
    shard-00000.safetensors  one (positions, hidden) tensor per sequence, named by its key

A sequence's key is a hash of the sequence and the identity, so a stale entry can never
be read for a different encoder, layer or dtype. Shards are written whole (temporary
name, then rename) and the manifest after them, so an interrupted run loses at most one
shard of work and resumes from the shards on disk.
"""

from __future__ import annotations

import copy

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from dnallm.data.kegg import load_examples
from dnallm.encoders.hf import DNATokenizer
from dnallm.io import atomic_write_text, save_tensors

FORMAT = 2  # 2: keys no longer depend on the compute dtype (see check_identity)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CacheError(RuntimeError):
    """The cache cannot serve this run: stale, incomplete, or missing."""


@dataclass(frozen=True)
class CacheIdentity:
    """Everything that changes the embeddings of a window."""

    encoder: str
    weights: str  # fingerprint of the weight files (see ``weights_fingerprint``)
    layer: int
    dna_window: int
    dtype: str  # storage: float32 | float16 | bfloat16
    compute_dtype: str  # the encoder's forward precision


# Files beside config.json that decide the embeddings: weights in either format, whole or
# sharded (with their index), and a checkpoint's own modelling code.
FINGERPRINTED = ("*.safetensors", "*.bin", "*.index.json", "*.py")


def weights_fingerprint(name_or_path: str) -> str:
    """Hash of the encoder's config, weight files and own code, cheap to compute without loading them.

    Hub IDs resolve to their local snapshot (downloading the config if needed). Each weight
    file (``*.safetensors`` or ``*.bin``, one or many shards) contributes its name, its size
    and three 1 MiB samples of its bytes (a safetensors header, with every name, shape and
    offset, is hashed whole), so re-trained or converted weights change the fingerprint.
    """
    from transformers.utils import cached_file

    config = Path(cached_file(name_or_path, "config.json"))
    files = sorted({f for pattern in FINGERPRINTED for f in config.parent.glob(pattern)})
    if not any(f.suffix in (".safetensors", ".bin") for f in files):
        raise CacheError(
            f"no weight files (*.safetensors, *.bin) beside {config}: the embedding cache is keyed by "
            f"them; download {name_or_path} (or point encoder.name_or_path at its folder)"
        )
    digest = hashlib.sha256(config.read_bytes())
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as f:
            if path.suffix == ".safetensors":
                header_len = int.from_bytes(f.read(8), "little")
                digest.update(f.read(header_len))
            for offset in (0, size // 2, max(size - (1 << 20), 0)):
                f.seek(offset)
                digest.update(f.read(1 << 20))
    return digest.hexdigest()[:16]


def sequence_key(seq: str, identity: CacheIdentity) -> str:
    """A window's key: the sequence and what changes its embeddings, except the compute dtype,
    which the manifest records once for the whole cache (see ``check_identity``)."""
    fields = {k: v for k, v in asdict(identity).items() if k != "compute_dtype"}
    payload = json.dumps(fields, sort_keys=True) + "\n" + seq
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _read_manifest(cache_dir: Path) -> dict | None:
    path = cache_dir / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _write_manifest(
    cache_dir: Path, identity: CacheIdentity, hidden: int, shards: list[str], n: int, complete: bool
) -> None:
    manifest = {
        "format": FORMAT,
        "identity": asdict(identity),
        "hidden_size": hidden,
        "shards": shards,
        "n": n,
        "complete": complete,
    }
    atomic_write_text(cache_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")


def check_identity(cache_dir: Path, manifest: dict, identity: CacheIdentity, reading: bool = False) -> None:
    """Refuse a cache whose embeddings are not the ones ``identity`` describes.

    The compute dtype: ``encoder.dtype: auto`` is float32 on a CPU and bfloat16 on a GPU. A
    cache computed in float32 is as good as or better than a bfloat16 forward, so ``reading``
    accepts it whatever the reader's compute dtype (build on a CPU, train on a GPU). The other
    way round, a reader is told how to read the cache as built or to rebuild it. A cache being
    extended (``reading=False``) must keep the precision it started with.
    """
    stored = manifest.get("identity", {})
    compute = stored.get("compute_dtype"), identity.compute_dtype
    diff = [
        f"{k}: cached {stored.get(k)!r}, wanted {v!r}"
        for k, v in asdict(identity).items()
        if k != "compute_dtype" and stored.get(k) != v
    ]
    if (
        manifest.get("format") == FORMAT
        and not diff
        and compute[0] != compute[1]
        and not (reading and compute[0] == "float32")
    ):
        raise CacheError(
            f"embedding cache {cache_dir} was computed with the encoder in {compute[0]}, and here it runs in {compute[1]} "
            f"(encoder.dtype: auto is float32 on a CPU, bfloat16 on a GPU); set encoder.dtype={compute[0]} to use it as built, "
            "or rebuild it here with `dnallm cache-embeddings RECIPE --rebuild` (a cache built in float32, e.g. on a CPU "
            "or with encoder.dtype=float32, serves every device)"
        )
    if manifest.get("format") != FORMAT or diff:
        raise CacheError(
            f"embedding cache {cache_dir} is stale ({'; '.join(diff) or 'old format'}); "
            "rebuild it with `dnallm cache-embeddings RECIPE --rebuild`"
        )


def _shard_keys(path: Path) -> list[str]:
    with safe_open(path, framework="pt") as f:
        return list(f.keys())


def build_cache(
    encoder,
    sequences: list[str],
    cache_dir: str | Path,
    identity: CacheIdentity,
    *,
    batch_size: int = 8,
    shard_bytes: int = 512 << 20,
    rebuild: bool = False,
) -> dict:
    """Embed every sequence not yet in the cache; resume from the shards already written.

    ``encoder`` is a ``DNAEncoder``. Returns ``{"cached": n already there, "computed": n new, "total": n}``.
    """
    cache_dir = Path(cache_dir)
    if identity.dtype not in DTYPES:
        raise ValueError(f"encoder.cache_dtype must be one of {', '.join(DTYPES)}, got {identity.dtype!r}")
    dtype = DTYPES[identity.dtype]
    manifest = _read_manifest(cache_dir)
    if manifest is not None and rebuild:
        for old in [cache_dir / "manifest.json", *cache_dir.glob("shard-*.safetensors")]:
            old.unlink()
        manifest = None
    if manifest is not None:
        check_identity(cache_dir, manifest, identity)
    cache_dir.mkdir(parents=True, exist_ok=True)

    shards = sorted(p.name for p in cache_dir.glob("shard-*.safetensors"))
    have = {key for name in shards for key in _shard_keys(cache_dir / name)}
    wanted = {sequence_key(s, identity): s for s in sequences}  # unique windows, first-seen order
    todo = [(k, s) for k, s in wanted.items() if k not in have]
    _write_manifest(cache_dir, identity, encoder.hidden_size, shards, len(have), complete=False)

    buffer: dict[str, torch.Tensor] = {}
    buffered = 0

    def flush() -> None:
        nonlocal buffer, buffered
        if not buffer:
            return
        name = f"shard-{len(shards):05d}.safetensors"
        save_tensors(buffer, cache_dir / name, metadata={"format": str(FORMAT)})
        shards.append(name)
        have.update(buffer)
        _write_manifest(cache_dir, identity, encoder.hidden_size, shards, len(have), complete=False)
        buffer, buffered = {}, 0

    bar = tqdm(total=len(todo), desc="caching embeddings", unit="seq")
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        embeds, mask = encoder.encode([s for _, s in chunk])  # (batch, positions, hidden), (batch, positions)
        for (key, _), e, m in zip(chunk, embeds, mask):
            buffer[key] = e[m].to(dtype).cpu().contiguous()  # real positions only
            buffered += buffer[key].numel() * buffer[key].element_size()
        if buffered >= shard_bytes:
            flush()
        bar.update(len(chunk))
    flush()
    bar.close()
    _write_manifest(cache_dir, identity, encoder.hidden_size, shards, len(have), complete=True)
    return {"cached": len(wanted) - len(todo), "computed": len(todo), "total": len(wanted)}


class CachedEncoder:
    """Reads embeddings from a cache built by ``build_cache``; the encoder is never loaded.

    ``encode(sequences) -> (embeds, mask)`` as ``DNAEncoder.encode``: embeds in the cache
    dtype on ``device``, padded to the longest sequence.
    """

    def __init__(self, cache_dir: str | Path, identity: CacheIdentity, tokenizer: DNATokenizer, device: str = "cpu"):
        self.cache_dir = Path(cache_dir)
        manifest = _read_manifest(self.cache_dir)
        if manifest is None:
            raise CacheError(f"no embedding cache at {self.cache_dir}; build it with `dnallm cache-embeddings RECIPE`")
        check_identity(self.cache_dir, manifest, identity, reading=True)
        if not manifest["complete"]:
            raise CacheError(
                f"embedding cache {self.cache_dir} is incomplete ({manifest['n']} sequences; an interrupted run?); "
                "finish it with `dnallm cache-embeddings RECIPE` (it resumes)"
            )
        self.identity, self.tokenizer, self.device = identity, tokenizer, device
        self.hidden_size = manifest["hidden_size"]
        self._files = [safe_open(self.cache_dir / name, framework="pt") for name in manifest["shards"]]
        self._where = {key: f for f in self._files for key in f.keys()}

    def on_host(self) -> CachedEncoder:
        """The same cache, read into host memory: DataLoader workers read it ahead of the step,
        which copies the (pinned) result to the device."""
        host = copy.copy(self)
        host.device = "cpu"
        return host

    def missing(self, sequences) -> list[str]:
        return [s for s in sequences if sequence_key(s, self.identity) not in self._where]

    def require(self, sequences, what: str) -> None:
        """Raise unless every sequence of ``what`` (a file name) is cached."""
        absent = self.missing(sequences)
        if absent:
            raise CacheError(
                f"embedding cache {self.cache_dir} lacks {len(absent)} of {len(sequences)} windows of {what}; "
                f"add them with `dnallm cache-embeddings RECIPE --data {what}`"
            )

    def encode(self, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for seq in sequences:
            key = sequence_key(seq, self.identity)
            if key not in self._where:
                raise CacheError(
                    f"embedding cache {self.cache_dir} has no entry for a {len(seq)}-bp window starting {seq[:20]}..."
                )
            rows.append(self._where[key].get_tensor(key))  # (positions, hidden), memory-mapped
        longest = max(r.shape[0] for r in rows)
        embeds = torch.zeros(len(rows), longest, self.hidden_size, dtype=rows[0].dtype)
        mask = torch.zeros(len(rows), longest, dtype=torch.bool)
        for i, r in enumerate(rows):
            embeds[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = True
        return embeds.to(self.device, non_blocking=True), mask.to(self.device)


def dataset_windows(path: str | Path, dna_window: int) -> list[str]:
    """Reference and variant windows of every record, in record order."""
    ds = load_examples(path, dna_window)
    return [seq for ref, var in zip(ds["ref_window"], ds["var_window"]) for seq in (ref, var)]


def require_cached(encoder, path: str | Path, dna_window: int) -> None:
    """With a cache as DNA source, fail before training if any window of ``path`` is absent."""
    if isinstance(encoder, CachedEncoder):
        encoder.require(dataset_windows(path, dna_window), str(path))
