"""The Python API: load a trained model and ask it about a variant, embed sequences.

    import dnallm
    model = dnallm.load("runs/kegg-tiny")                      # a run directory or a checkpoint
    model.ask(reference=ref, variant=alt, question="Which disease?")   # -> reply text
    model.chat(messages)                                       # the same from chat messages (DNA parts)
    model.predict(records)                                     # -> [Prediction(label, probability, reply)]
    model.explain(reference=ref, variant=alt, question="Which disease?")  # -> .scores, .importance, .plot()
    emb = dnallm.embed(".dnallm/tiny/genos", sequences)       # -> (n, hidden) tensor
    tracks = dnallm.load("runs/coverage-tiny").predict_tracks("chr1:1-2,000")

These are the functions the command line runs: ``dnallm chat`` and ``serve`` load through
``ModelSession`` (as ``load`` does), ``annotate`` predicts through ``predict_batch`` (as
``Model.predict`` does), ``dnallm embed`` calls ``embed`` and ``predict-tracks`` reads a
``Predictor`` (as ``TrackModel`` does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from dnallm.data.dna import RecordError, clean_sequence, text_lines
from dnallm.data.genome import Genome, Region
from dnallm.data.kegg import examples_from_records, read_jsonl
from dnallm.data.vcf import InputError
from dnallm.encoders import DNAEncoder
from dnallm.encoders.coverage_pretrained import WEIGHTS as COVERAGE_WEIGHTS
from dnallm.eval.answers import Prediction, predict_batch
from dnallm.eval.explain import Explanation
from dnallm.eval.kegg import max_new_tokens_for
from dnallm.fusion.summary import masked_mean
from dnallm.hub import list_checkpoints, locate_model, pick_device, resolve_checkpoint, resolve_dtype
from dnallm.io import atomic_open, save_tensors
from dnallm.serve.session import Conversation, ModelSession, Sampling

POOLS = ("mean", "max", "last", "none")


class WrongKind:
    """What one kind of model answers when asked for the other kind's method: what the model
    is, and which kind the method is for, instead of an AttributeError."""

    kind, other_kind, other_methods = "", "", ()
    source = "this checkpoint"

    def __getattr__(self, name: str):
        if name in self.other_methods:
            raise TypeError(f"{self.source} is {self.kind}; {name} is for {self.other_kind}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class Model(WrongKind):
    """A trained fusion checkpoint (frozen encoder + projector + LoRA LLM)."""

    kind = "a KEGG fusion model"
    other_kind = "coverage models (dnallm.load of a train-tracks run)"
    other_methods = ("predict_tracks", "track_names")

    def __init__(self, session: ModelSession, max_dna_length: int = 100_000, source: str | Path = "this checkpoint"):
        self.session = session
        self.max_dna_length = max_dna_length
        self.source = str(source)

    @property
    def recipe(self):
        return self.session.recipe

    @cached_property
    def max_new_tokens(self) -> int:
        """``eval.max_new_tokens``, or (unset) the longest training reply plus a margin, as ``dnallm eval`` uses."""
        return max_new_tokens_for(self.recipe, self.session.tokenizer)[0]

    def ask(
        self,
        reference: str | None = None,
        variant: str | None = None,
        question: str = "",
        *,
        stream: bool = False,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> str | Iterator[str]:
        """The model's reply to ``question`` about the variant (greedy unless ``temperature`` > 0).

        Sequences are checked and cut to the training window as in training; ``stream=True``
        returns an iterator of text pieces as they are generated.
        """
        if not question.strip():
            raise ValueError("question: give the question to ask about the variant")
        if (reference is None) != (variant is None):
            raise ValueError("give both reference= and variant= (or neither, for a text-only model)")
        if reference is None and self.session.uses_dna:
            raise ValueError(f"{self.recipe.run_name} reads DNA: give reference= and variant=")
        dna = (
            self.session.prepare_dna(reference, variant, self.max_dna_length)
            if reference is not None and self.session.uses_dna
            else None
        )
        conv = Conversation(turns=[{"role": "user", "content": question}], dna=dna)
        sampling = Sampling(max_new_tokens=max_new_tokens or self.max_new_tokens, temperature=temperature, top_p=top_p)
        return self.session.stream(conv, sampling) if stream else self.session.reply(conv, sampling)

    def chat(
        self,
        messages: list[dict],
        *,
        stream: bool = False,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> str | Iterator[str]:
        """The model's next reply in a conversation in the chat layout: ``{"role", "content"}``
        messages, the content a string or parts, the DNA as ``{"type": "dna", "sequence", "pair":
        "reference" | "variant"}`` parts of one user message (as chat records hold them) or as
        ``<reference>``/``<variant>`` tags; the last message is the user's. The server reads
        a request's messages with the same code (``serve.protocol.to_conversation``)."""
        from dnallm.serve.protocol import APIError, Limits, parse_request, to_conversation

        try:
            request = parse_request({"model": self.session.name, "messages": messages})
            conv = to_conversation(request, self.session, Limits(max_dna_length=self.max_dna_length))
        except APIError as e:
            raise ValueError(
                f"{e.param}: {e.message}" if e.param and not e.message.startswith(e.param) else e.message
            ) from None
        sampling = Sampling(max_new_tokens=max_new_tokens or self.max_new_tokens, temperature=temperature, top_p=top_p)
        return self.session.stream(conv, sampling) if stream else self.session.reply(conv, sampling)

    def predict(
        self, records: list[dict] | str | Path, *, batch_size: int | None = None, progress: bool = False
    ) -> list[Prediction]:
        """Greedy answers for KEGG-format records (``question``, ``reference_sequence``,
        ``variant_sequence``; ``answer`` not needed) or a JSONL file of them, in batches.

        -> one ``Prediction(label, probability, reply)`` per record, in order; ``probability``
        is the model's own probability of the label it wrote (None without an 'Answer:').
        """
        if isinstance(records, (str, Path)):
            records = read_jsonl(records)
        s = self.session
        examples = list(
            examples_from_records(records, self.recipe.data.dna_window, need_dna=s.uses_dna, need_answer=False)
        )
        batch = batch_size or self.recipe.eval.batch_size
        out: list[Prediction] = []
        for start in tqdm(range(0, len(examples), batch), desc="predicting", unit="batch", disable=not progress):
            out += predict_batch(
                s.model,
                s.encoder,
                s.processor,
                examples[start : start + batch],
                max_new_tokens=self.max_new_tokens,
                encoder_batch_size=self.recipe.encoder.batch_size,
                device=s.device,
            )
        return out

    def explain(
        self,
        reference: str,
        variant: str,
        question: str,
        *,
        label: str | None = None,
        method: str | None = None,
        region: int | str | None = None,
        batch_size: int = 64,
        progress: bool = False,
    ) -> Explanation:
        """Which bases of the two windows move the answer's label (``dnallm.eval.explain``).

        ``label``: the label to explain (default: the model's own answer, generated once);
        ``method``: ``ism`` or ``gradient`` (default: ISM up to 256 bp of region, gradient above);
        ``region``: a width centred on the variant (default 64, cut to the window) or ``"START-END"``
        (1-based window positions). -> ``.scores`` (2 windows, bases, 4), ``.importance``, ``.plot()``.
        """
        if not question.strip():
            raise ValueError("question: give the question whose answer to explain")
        dna = self.session.prepare_dna(reference, variant, self.max_dna_length)
        return self.session.explain(
            dna,
            question,
            label=label,
            method=method,
            region=region,
            batch_size=batch_size,
            max_new_tokens=self.max_new_tokens,
            progress=progress,
        )


@dataclass
class Tracks:
    """Predicted coverage over one region: ``values[i, t]`` is track ``names[t]`` at base ``region.start + i``."""

    region: Region  # 0-based, end exclusive
    names: list[str]
    values: np.ndarray  # (bases, tracks), float32, raw units (the bigWigs' scale)


class TrackModel(WrongKind):
    """A trained coverage checkpoint: per-base, stranded coverage for a genome region."""

    kind = "a coverage-track model"
    other_kind = "fusion models that answer questions (dnallm.load of a train run)"
    other_methods = ("ask", "predict", "session")

    def __init__(self, predictor, source: str | Path = "this checkpoint"):
        self.predictor = predictor
        self.recipe = predictor.recipe
        self.source = str(source)

    @property
    def track_names(self) -> list[str]:
        return [t.name for t in self.predictor.tracks]

    def predict_tracks(
        self, region: str, *, fasta: str | Path | None = None, stitch: str | None = None, batch_size: int | None = None
    ) -> Tracks:
        """Coverage for ``region`` (``chr1:1,001-2,000``, 1-based inclusive, or a contig name),
        read from ``fasta`` (default: the recipe's ``data.fasta``), stitched as ``predict-tracks`` does."""
        from dnallm.data.regions import parse_region

        genome = Genome(fasta or self.recipe.data.fasta)
        where = parse_region(region, genome.sizes)
        chunks = [
            values
            for _, values in self.predictor.region(
                genome,
                where,
                stitch_mode=stitch or self.recipe.eval.stitch,
                batch_size=batch_size or self.recipe.eval.batch_size,
            )
        ]
        return Tracks(where, self.track_names, np.concatenate(chunks))


def load(
    checkpoint: str | Path,
    *,
    device: str | None = None,
    overrides: list[str] | tuple = (),
    trust_remote_code: bool = False,
) -> Model | TrackModel:
    """A run directory (its latest checkpoint) or a ``checkpoint-N`` directory, of either
    recipe: a fusion model (``Model``) or a coverage model (``TrackModel``).

    ``overrides`` (``key=value``) point at base models that moved since training, e.g.
    ``["llm.name_or_path=/models/Qwen3-4B"]``. ``trust_remote_code``: let the base models run the
    code the checkpoint was trained with; a checkpoint's own files never switch it on.
    """
    path = Path(checkpoint)
    if list_checkpoints(path, COVERAGE_WEIGHTS) or (path / COVERAGE_WEIGHTS).is_file():
        from dnallm.eval.coverage_predict import Predictor

        return TrackModel(
            Predictor(path, device=device, overrides=overrides, trust_remote_code=trust_remote_code), source=path
        )
    resolve_checkpoint(path)  # a clear error when there is none
    session = ModelSession.load(path, device=device, overrides=overrides, trust_remote_code=trust_remote_code)
    return Model(session, source=path)


@torch.no_grad()
def embed(
    model: str | Path | DNAEncoder,
    sequences: list[str],
    *,
    layer: int = -1,
    pool: str = "mean",
    batch_size: int = 8,
    device: str | None = None,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    progress: bool = False,
) -> torch.Tensor | list[torch.Tensor]:
    """Frozen-encoder embeddings of DNA ``sequences`` from hidden layer ``layer`` (-1: last).

    ``model``: a Hugging Face ID or folder (Genos, or any ``AutoModel`` DNA model), or a
    ``DNAEncoder`` already loaded. ``pool``: ``mean`` over positions, ``max``, ``last``
    (the last real position, natural for causal models such as Genos) -> ``(n, hidden)``
    float32 on the CPU; ``none`` -> one ``(positions, hidden)`` tensor per sequence.
    ``sequences`` is a list: a single string is refused (it would read as one-base sequences).
    """
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r}: choose one of {', '.join(POOLS)}")
    if isinstance(sequences, (str, bytes)):
        # A string is iterable, as one-base sequences: never what is meant.
        raise TypeError(
            f"sequences: give a list of sequences, got one {type(sequences).__name__} of {len(sequences)} "
            f"characters; for one sequence pass [sequence]"
        )
    if isinstance(model, DNAEncoder):
        encoder = model
        if layer != encoder.layer:
            raise ValueError(
                f"layer={layer}, but the encoder given reads layer {encoder.layer}; load it with layer={layer}"
            )
    else:
        device = device or pick_device()
        model = locate_model(str(model), "model", fix="pass a model folder or a hub ID as model=")
        encoder = DNAEncoder(
            str(model),
            layer=layer,
            dtype=resolve_dtype(dtype, device),
            device=device,
            trust_remote_code=trust_remote_code,
        )
    cleaned = [_clean(seq, i) for i, seq in enumerate(sequences)]
    out: list[torch.Tensor] = []
    for start in tqdm(range(0, len(cleaned), batch_size), desc="embedding", unit="batch", disable=not progress):
        embeds, mask = encoder.encode(cleaned[start : start + batch_size])  # (b, positions, hidden), (b, positions)
        embeds = embeds.float()
        if pool == "mean":
            out.append(masked_mean(embeds, mask).cpu())
        elif pool == "max":
            out.append(embeds.masked_fill(~mask[..., None], float("-inf")).amax(1).cpu())
        elif pool == "last":
            last = mask.long().sum(1) - 1  # (b,)
            out.append(embeds[torch.arange(len(last)), last].cpu())
        else:
            out += [e[m].cpu() for e, m in zip(embeds, mask)]
    if pool == "none":
        return out
    return torch.cat(out) if out else torch.empty(0, encoder.hidden_size)


def read_sequences(path: str | Path, field: str = "sequence") -> tuple[list[str], list[str]]:
    """(names, sequences) of a FASTA file (one per record) or a JSONL file (``field`` of each line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sequence file not found: {path}")
    if path.suffix == ".jsonl":
        records = read_jsonl(path)
        for rec in records:
            if not isinstance(rec.get(field), str):
                raise RecordError(
                    f"{rec['_where']}: no string field '{field}' (fields: {', '.join(k for k in rec if k != '_where')}); choose one with --field"
                )
        return [rec.get("name") or rec["_where"] for rec in records], [rec[field] for rec in records]
    from dnallm.serve.inputs import parse_fasta

    records = parse_fasta("".join(line for _, line in text_lines(path)), str(path))
    return [name for name, _ in records], [seq for _, seq in records]


def save_embeddings(
    path: str | Path, vectors: torch.Tensor | None, names: list[str] = (), metadata: dict[str, str] | None = None
) -> None:
    """``(n, hidden)`` embeddings to ``.safetensors`` (tensor ``embeddings``; names and
    ``metadata`` in its header) or ``.npy`` (the array alone), written whole.
    ``vectors=None`` only checks the suffix."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".npy"):
        raise InputError(f"--out {path}: name a .safetensors or .npy file")
    if vectors is None:
        return
    if path.suffix == ".npy":
        with atomic_open(path, "wb") as f:
            np.save(f, vectors.numpy())
    else:
        save_tensors(
            {"embeddings": vectors.contiguous()}, path, metadata={**(metadata or {}), "names": json.dumps(list(names))}
        )


def _clean(seq: str, index: int) -> str:
    seq = "".join(seq.split())
    if not seq:
        raise ValueError(f"sequence {index}: empty")
    return clean_sequence(seq, where=f"sequence {index}", field="sequence")
