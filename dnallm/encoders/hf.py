"""Any Hugging Face DNA model (Genos, masked or causal, own code or not) as a frozen encoder.

The same three rules hold for every family, whatever its architecture or output type:

- **Trunk only**: the model's base class (``AutoModel``, or the ``AutoModel`` entry of its own
  code's ``auto_map``), built without a pooler where its constructor offers
  ``add_pooling_layer``; when its own code names only task classes (masked or causal LM), the
  base model inside that class. Heads in the checkpoint are left out.
- **Hidden states**: the first output (``last_hidden_state``, or element 0 of a tuple) for
  ``layer=-1``; ``hidden_states[layer]`` otherwise.
- **Width**: read from the hidden states of a forward pass, never from a config key
  (``hidden_size``, ``d_model``, ...).
"""

from __future__ import annotations

import contextlib
import inspect
import random
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer
from transformers.dynamic_module_utils import (
    TRANSFORMERS_DYNAMIC_MODULE_NAME,
    custom_object_save,
    get_class_from_dynamic_module,
)
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.utils import logging as hf_logging

from dnallm.data.dna import BASES
from dnallm.encoders.remote_code import (
    add_removed_methods,
    builds_on_meta,
    fill_config_defaults,
    loadable,
    missing_package,
    removed_helpers,
    restore_buffers,
)
from dnallm.hub import CheckpointError, check_remote_code, first_line, remote_code_hint
from dnallm.norms import fused_rms_norm

RECIPE_KEY = "encoder.trust_remote_code"


def _random_dna(n_bases: int, seed: int) -> str:
    rng = random.Random(seed)  # one generator for the whole sequence: reseeding per base repeats one base
    return "".join(rng.choice(BASES) for _ in range(n_bases))


# A fixed pseudo-random DNA sequence of all four bases: measures bases per token (a BPE
# tokenizer's mean token length depends on the mix) and the output width. Its length is a
# multiple of every k up to 6 (a k-mer tokenizer gives exactly k) and stays within a 512-token
# model limit.
PROBE = _random_dna(480, seed=0)
POSITIONS_MEMO = 64 << 20  # bases of the windows whose token counts DNATokenizer keeps (64 MiB of strings at most)

# Task classes whose base model is the trunk, for checkpoints whose own code has no AutoModel.
_TASK_CLASSES = ("AutoModelForMaskedLM", "AutoModelForCausalLM")


def _runs_own_code(config, trust_remote_code: bool) -> bool:
    return trust_remote_code and bool(getattr(config, "auto_map", None))


def _trunk_class(config, name_or_path: str, trust_remote_code: bool) -> tuple[type, bool]:
    """-> (class to load, whether its ``base_model`` is the trunk)."""
    if _runs_own_code(config, trust_remote_code):
        auto_map = config.auto_map
        for key in ("AutoModel", *_TASK_CLASSES):
            if key in auto_map:
                return get_class_from_dynamic_module(auto_map[key], name_or_path), key != "AutoModel"
        raise CheckpointError(
            f"{name_or_path}: its auto_map names no AutoModel, masked-LM or causal-LM class ({sorted(auto_map)})"
        )
    try:
        return MODEL_MAPPING[type(config)], False
    except KeyError:
        raise CheckpointError(
            f"{name_or_path}: transformers has no base model for model_type={config.model_type!r}"
        ) from None


def load_backbone(name_or_path: str, dtype, trust_remote_code: bool, device: str = "cpu") -> nn.Module:
    """The model's trunk, without the task heads or pooler a checkpoint may carry. On a GPU the
    weight files are read straight onto it (no whole host copy on each rank: 20 GB for Genos-10B).

    Heads in the checkpoint are expected to be left out, so transformers' load report is
    kept quiet; weights the trunk needs but the checkpoint lacks would stay randomly
    initialised, so they are an error. Loading leaves the random state as it was (weights the
    trunk's class initialises and drops would otherwise draw from it), so a run that loads the
    encoder and one that reads its cache go on identically.
    """
    check_remote_code(name_or_path, trust_remote_code, RECIPE_KEY)
    with _running_own_code(name_or_path, trust_remote_code):
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        model_class, take_base = _trunk_class(config, name_or_path, trust_remote_code)
    kwargs = _without_pooler(model_class)
    if device.startswith("cuda"):
        kwargs["device_map"] = {"": device}
    with torch.random.fork_rng(devices=_cuda_index(device)):
        if _runs_own_code(config, trust_remote_code):
            with _running_own_code(name_or_path, trust_remote_code):
                model, info = _load_own_code(model_class, name_or_path, config, dtype, kwargs)
        else:
            model, info = _from_pretrained(model_class, name_or_path, config, dtype, kwargs)
    missing = sorted(info["missing_keys"]) + sorted(k for k, *_ in info["mismatched_keys"])
    if take_base:  # only the trunk inside the task class has to be complete
        missing = [k for k in missing if k.startswith(model_class.base_model_prefix + ".")]
    if missing:
        listed = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        hint = "" if trust_remote_code else remote_code_hint(name_or_path, RECIPE_KEY)
        raise CheckpointError(
            f"{name_or_path}: the checkpoint lacks or mis-shapes weights the encoder needs: {listed}"
            + (f"; {hint}" if hint else "")
        )
    return model.base_model if take_base else model


def build_backbone(config, trust_remote_code: bool) -> nn.Module:
    """The trunk ``load_backbone`` would load for ``config`` (read from a checkpoint folder, or made
    for a benchmark), built with random weights that its caller then replaces: a checkpoint's own
    code made buildable the same way, and built on the CPU, as transformers 4 built it."""
    name_or_path = config.name_or_path
    if name_or_path:  # a checkpoint folder: its own code runs only when asked
        check_remote_code(name_or_path, trust_remote_code, RECIPE_KEY)
    with _running_own_code(name_or_path, trust_remote_code):
        model_class, take_base = _trunk_class(config, name_or_path, trust_remote_code)
        if _runs_own_code(config, trust_remote_code):
            fill_config_defaults(config)
            add_removed_methods(model_class)
            model = loadable(model_class, on_meta=False)._from_config(config, **_without_pooler(model_class))
            model.__class__ = model_class  # the checkpoint's own class, not the building subclass
        else:  # as AutoModel.from_config builds it
            model = model_class._from_config(config, **_without_pooler(model_class))
    return model.base_model if take_base else model


def save_own_code(model: nn.Module, folder: Path) -> None:
    """Copy the modelling code ``model``'s class came from (its module and the files that module
    imports relatively) into ``folder``, next to the config whose ``auto_map`` names it, so the folder
    builds the model again; nothing for transformers' own classes."""
    if not type(model).__module__.startswith(TRANSFORMERS_DYNAMIC_MODULE_NAME + "."):
        return
    custom_object_save(model, folder)


def _without_pooler(model_class: type) -> dict:
    """``add_pooling_layer=False`` where the class's constructor offers it (BERT-like trunks)."""
    offers = "add_pooling_layer" in inspect.signature(model_class.__init__).parameters
    return {"add_pooling_layer": False} if offers else {}


def _cuda_index(device: str) -> list[int]:
    """The CUDA device index of ``device``, as a list (empty for the CPU)."""
    if not device.startswith("cuda"):
        return []
    index = torch.device(device).index
    return [torch.cuda.current_device() if index is None else index]


def _from_pretrained(model_class: type, name_or_path: str, config, dtype, kwargs: dict):
    """-> (model, transformers' loading info), its report of heads left out kept quiet."""
    with _transformers_quiet():
        return model_class.from_pretrained(
            name_or_path, config=config, dtype=dtype, output_loading_info=True, **kwargs
        )


@contextlib.contextmanager
def _transformers_quiet():
    """transformers' warnings off: reports that are expected here, or that our own error replaces."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def _load_own_code(model_class: type, name_or_path: str, config, dtype, kwargs: dict):
    """A checkpoint's own classes, written for transformers 4, loaded under transformers 5 (see
    ``remote_code``): built on the meta device as transformers does, unless the code makes tensors
    in ``__init__`` that a meta build loses or cannot make; then on the CPU, where ``__init__``
    gives them their values."""
    fill_config_defaults(config)
    add_removed_methods(model_class)
    on_meta = builds_on_meta(model_class, config)
    as_loaded = loadable(model_class, on_meta)
    model, info = _from_pretrained(as_loaded, name_or_path, config, dtype, kwargs)
    if not on_meta:
        restore_buffers(model, as_loaded)
    model.__class__ = model_class  # the checkpoint's own class, not the loading subclass
    return model, info


@contextlib.contextmanager
def _running_own_code(name_or_path: str, trust_remote_code: bool):
    """Around importing and running a checkpoint's own code: transformers' removed helpers present,
    and an import it cannot make one line naming the package (and whether it needs CUDA)."""
    if not trust_remote_code:
        yield
        return
    try:
        with removed_helpers(), _transformers_quiet():  # its warning on a failed import repeats our error
            yield
    except ImportError as e:
        reason = missing_package(e) or f"cannot import what it needs ({first_line(e)})"
        raise CheckpointError(f"{name_or_path}: its own modelling code {reason}") from None


def takes_attention_mask(model: nn.Module) -> bool:
    """Whether ``model``'s forward takes an attention mask (HyenaDNA's and Caduceus's take none)."""
    return "attention_mask" in inspect.signature(model.forward).parameters


def run_unpadded(run, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``run`` (ids -> hidden states) for a model that takes no attention mask: padding would reach
    real positions (a bidirectional model reads right to left too), so sequences of one token count
    run together, unpadded. (batch, positions) ids and mask -> (batch, positions, hidden), zeros at
    padding; differentiable."""
    lengths = mask.sum(1)  # (batch,)
    hidden = None
    for n in lengths.unique().tolist():
        rows = (lengths == n).nonzero().squeeze(1)
        part = run(ids[rows, :n])  # (rows, n, hidden)
        if hidden is None:
            hidden = part.new_zeros(len(ids), ids.shape[1], part.shape[-1])
        hidden[rows, :n] = part
    return hidden


class DNATokenizer:
    """The encoder's tokenizer, without special tokens: one position per token.

    Kept apart from the model so prompts can be laid out (placeholder counts) without
    loading encoder weights.
    """

    def __init__(self, name_or_path: str, trust_remote_code: bool = False):
        check_remote_code(name_or_path, trust_remote_code, RECIPE_KEY)
        with _running_own_code(name_or_path, trust_remote_code):
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        probe = self.tokenizer(PROBE, add_special_tokens=False)["input_ids"]
        if self.tokenizer.unk_token_id is not None and self.tokenizer.unk_token_id in probe:
            raise CheckpointError(
                f"{name_or_path}: its tokenizer turns plain DNA (A/C/G/T) into unknown tokens; "
                "it is not a tokenizer of raw DNA sequence"
            )
        self.bases_per_token = max(1, round(len(PROBE) / len(probe)))
        # Each window's count is asked for several times a step (the prompt's placeholders, the summary's
        # layout, the spans), every epoch: counted once, while the windows kept total POSITIONS_MEMO bases.
        self._positions: dict[str, int] = {}
        self._memo_bases = 0

    def n_positions(self, seq: str) -> int:
        n = self._positions.get(seq)
        if n is None:
            n = len(self.tokenizer(seq, add_special_tokens=False)["input_ids"])
            if self._memo_bases + len(seq) > POSITIONS_MEMO:
                self._positions.clear()
                self._memo_bases = 0
            self._positions[seq] = n
            self._memo_bases += len(seq)
        return n

    def to_tokens(self, n_bases: int) -> int:
        """``n_bases`` as a count of encoder positions (at least 1).

        ``bases_per_token`` is measured once on ``PROBE``: 1 for one token per base, k for
        a k-mer tokenizer, the mean token length for BPE (on random sequence; real genomic
        sequence, richer in repeats, gives somewhat longer tokens).
        """
        return max(1, round(n_bases / self.bases_per_token))

    def __call__(self, seqs: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(seqs), add_special_tokens=False)["input_ids"]
        longest = max(len(e) for e in enc)
        # Padded as lists, then one tensor each: not a copy per sequence.
        ids = torch.tensor([e + [self.pad_id] * (longest - len(e)) for e in enc], dtype=torch.long)
        mask = torch.tensor([[True] * len(e) + [False] * (longest - len(e)) for e in enc], dtype=torch.bool)
        return {"input_ids": ids, "attention_mask": mask, "lengths": [len(e) for e in enc]}


class DNAEncoder(nn.Module):
    """Frozen DNA model: ``encode(sequences) -> (embeds, mask)``.

    ``embeds`` is ``(batch, positions, hidden)`` from ``layer`` (-1: last hidden state),
    ``mask`` is ``(batch, positions)``, True where a position holds a real token.
    Weights never receive gradients and no autograd graph is kept.
    """

    def __init__(
        self,
        name_or_path: str,
        *,
        layer: int = -1,
        dtype=torch.float32,
        device: str = "cpu",
        trust_remote_code: bool = False,
        model: nn.Module | None = None,
    ):
        """``model``: an already built model to wrap instead of loading weights (benchmarks
        of published shapes from their configs); the tokenizer still comes from ``name_or_path``."""
        super().__init__()
        self.name_or_path = name_or_path
        self.layer = layer
        self.tokenizer = DNATokenizer(name_or_path, trust_remote_code)
        if model is None:
            model = load_backbone(name_or_path, dtype, trust_remote_code, device)
        self.model = model
        self.model.to(device)
        self.model.requires_grad_(False)
        self.model.eval()
        fused_rms_norm(self.model)
        # Models that take no attention mask (HyenaDNA, Caduceus) never see padding: see ``encode``.
        self.takes_mask = takes_attention_mask(self.model)
        self.hidden_size = self.encode([PROBE[:64]])[0].shape[-1]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True):
        # Frozen: dropout and MoE router noise stay off whatever the parent module does.
        return super().train(False)

    def hidden_states(
        self, ids: torch.Tensor, mask: torch.Tensor | None, inputs_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, positions) ids -> (batch, positions, hidden) from ``self.layer``.
        ``inputs_embeds`` (batch, positions, input width) replaces the ids' embedding rows
        (attribution differentiates through them)."""
        kwargs = {"attention_mask": mask.long()} if mask is not None else {}
        if self.layer != -1:
            kwargs["output_hidden_states"] = True
        inputs = {"input_ids": ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
        out = self.model(**inputs, **kwargs)
        if self.layer == -1:
            return out[0]  # last_hidden_state of a ModelOutput, or the first element of a tuple
        per_layer = out.get("hidden_states") if isinstance(out, dict) else None
        if per_layer is None:
            raise CheckpointError(
                f"{self.name_or_path}: the model returns no per-layer hidden states, so "
                f"encoder.layer={self.layer} cannot be read; use encoder.layer=-1"
            )
        if not -len(per_layer) <= self.layer < len(per_layer):
            # Checked on the probe at load time: a wrong layer fails before any work.
            n = len(per_layer)
            raise CheckpointError(
                f"{self.name_or_path}: layer {self.layer} is out of range: the model gives hidden states 0..{n - 1} "
                f"(0: the embeddings; -{n}..-1 from the end); set encoder.layer (layer= in dnallm.embed, --layer "
                "for dnallm embed) within that range"
            )
        return per_layer[self.layer]

    @torch.no_grad()
    def encode(self, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(sequences)
        lengths = batch["lengths"]  # on the host: deciding from them makes the host wait for nothing
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        if self.takes_mask:
            # One token count: no padding, so no mask for the model to build and check.
            model_mask = mask if min(lengths) < max(lengths) else None
            return self.hidden_states(ids, model_mask).detach(), mask  # (batch, positions, hidden), (batch, positions)
        return run_unpadded(lambda rows_ids: self.hidden_states(rows_ids, None), ids, mask).detach(), mask
