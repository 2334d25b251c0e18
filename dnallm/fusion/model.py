"""The composite model: a LoRA-tuned causal LM reading projected DNA embeddings.

One module owns where DNA enters the LLM: ``DNAFusionLM.embed`` projects the encoder's
embeddings and ``masked_scatter``s them into the ``<|dna_pad|>`` positions of the text
embeddings, in prompt order: sample 0 reference block, sample 0 variant block, sample 0
variant summary (when the model has one, see ``dnallm.fusion.summary``), sample 1 reference
block, ... ``<|dna_start|>``/``<|dna_end|>`` get trainable rows of their own.

The model is described by a ``DNAFusionConfig`` (``dnallm.fusion.config``): ``from_config``
builds it, ``from_pretrained`` rebuilds a checkpoint (``dnallm.fusion.pretrained``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import ModelOutput

from dnallm.data.chat import DNA_END, DNA_PAD, DNA_START, DNA_TOKENS
from dnallm.fusion.config import DNAFusionConfig
from dnallm.fusion.kernels import apply_liger, lean_lora
from dnallm.fusion.packing import (
    CAUSAL_ONLY,
    PACKED_ATTENTION,
    PACKING_ATTENTION,
    chunked_token_logps,
    packed_kwargs,
    register,
    shifted_targets,
)
from dnallm.fusion.projector import DNAProjector
from dnallm.fusion.summary import VariantSummary
from dnallm.hub import check_remote_code, enable_activation_checkpointing, resolve_dtype
from dnallm.norms import fused_rms_norm


@dataclass
class DNAFusionOutput(ModelOutput):
    """What ``DNAFusionLM.forward`` returns, whichever of its three uses it served."""

    loss: torch.Tensor | None = None  # () mean next-token loss over the labelled tokens (with labels)
    logits: torch.Tensor | None = None  # (batch, tokens, vocab) where the LM head ran at every position
    token_logps: torch.Tensor | None = None  # (batch, tokens) fp32 log p of each token where score_mask is set


class DNAFusionLM(nn.Module):
    def __init__(
        self,
        config: DNAFusionConfig,
        llm: nn.Module,
        projector: DNAProjector,
        token_ids: dict[str, int],
        summary: VariantSummary | None = None,
    ):
        super().__init__()
        self.config = config
        self.llm = llm
        self.projector = projector
        self.summary = summary
        self.dna_start_id = token_ids[DNA_START]
        self.dna_pad_id = token_ids[DNA_PAD]
        self.dna_end_id = token_ids[DNA_END]
        table = llm.get_input_embeddings().weight
        # Rows for <|dna_start|>, <|dna_end|>: start at the mean text embedding, then train.
        self.dna_boundary = nn.Parameter(table.detach().float().mean(0, keepdim=True).repeat(2, 1))
        self.logits = config.logits  # "reply": LM head on labelled tokens only, chunked; "full": every position
        self.logits_chunk = config.logits_chunk  # positions per LM-head chunk

    @classmethod
    def from_config(
        cls,
        config: DNAFusionConfig,
        dna_hidden: int = 1,
        dna_tokenizer=None,
        *,
        device: str = "cpu",
        packing: bool = False,
        gradient_checkpointing: bool | int = False,
        liger: bool = False,
        llm: nn.Module | None = None,
        place: bool = True,
    ):
        """Load the base LLM, add the DNA tokens, wrap it in LoRA, attach projector and summary.
        -> (model, text tokenizer). Trainable parts are fp32; the frozen base takes ``llm.dtype``.

        ``dna_hidden``, ``dna_tokenizer``: the encoder's width and tokenizer (bases -> positions,
        ``DNAFusionConfig.positions``; none: one position per base). ``packing``: attention that
        reads packed rows (``dnallm.fusion.packing``); the LLM keeps its own implementation if
        that is already a varlen flash-attention one. ``place``: move the model to ``device``
        (under ZeRO-3 the engine partitions it from host memory instead). ``llm``: an already
        built causal LM to wrap instead of loading weights (benchmarks of published shapes
        from their configs); the tokenizer still comes from ``llm.name_or_path``.
        ``gradient_checkpointing``: recompute every decoder layer (True), every N-th (an int N), or none.
        ``liger``: on CUDA, Liger-Kernel's Qwen3 kernels where installed (``dnallm.fusion.kernels``).
        LoRA projections and RMSNorm always take the lean forms there.
        """
        spec = config.llm
        check_remote_code(spec.name_or_path, spec.trust_remote_code, "llm.trust_remote_code")
        tokenizer = AutoTokenizer.from_pretrained(spec.name_or_path, trust_remote_code=spec.trust_remote_code)
        if llm is None:
            llm = AutoModelForCausalLM.from_pretrained(
                spec.name_or_path, dtype=resolve_dtype(spec.dtype, device), trust_remote_code=spec.trust_remote_code
            )
        if packing and llm.config._attn_implementation not in PACKING_ATTENTION:
            register()
            llm.set_attn_implementation(PACKED_ATTENTION)
        token_ids = add_dna_tokens(tokenizer, llm)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if liger:
            apply_liger(llm, device)
        if gradient_checkpointing:
            every = 1 if gradient_checkpointing is True else int(gradient_checkpointing)
            enable_activation_checkpointing(llm, every_n_layers=every, use_reentrant=False)
        lora = config.lora
        lora_config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():  # peft still asks under the attribute's old name
            warnings.filterwarnings(
                "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
            )
            llm = get_peft_model(llm, lora_config)
        lean_lora(llm)
        fused_rms_norm(llm)
        llm_hidden = llm.get_input_embeddings().weight.shape[1]
        pool, kernel, context = config.positions(dna_tokenizer)
        p = config.projector
        projector = DNAProjector(dna_hidden, llm_hidden, kind=p.kind, pool=pool, kernel=kernel)
        summary = (
            None
            if p.summary == "none"
            else VariantSummary(dna_hidden, llm_hidden, kind=p.summary, n_tokens=p.summary_tokens, context=context)
        )
        model = cls(config, llm, projector, token_ids, summary)
        for param in model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
        return (model.to(device) if place else model), tokenizer

    @classmethod
    def from_pretrained(cls, checkpoint, device: str | None = None, overrides=(), *, trust_remote_code: bool = False):
        """A checkpoint (or a run directory: its latest) rebuilt from its ``fusion_config.json``
        on top of the base models. -> ``Pretrained`` (model, processor, DNA source, the run's
        recipe); see ``dnallm.fusion.pretrained.load_pretrained``."""
        from dnallm.fusion.pretrained import load_pretrained

        return load_pretrained(checkpoint, device, overrides, trust_remote_code=trust_remote_code)

    def embed(
        self,
        input_ids: torch.Tensor,
        dna_embeds: torch.Tensor | None = None,
        dna_mask: torch.Tensor | None = None,
        dna_spans: torch.Tensor | None = None,
        dna_layout: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text embeddings with DNA features in the placeholder slots. (batch, tokens, hidden)

        ``dna_spans`` (n_seq, 2): where each window's change lies (``processor.dna_inputs``);
        without it the summary reads the middle of each window. ``dna_layout``: where the summary
        reads, found when the batch was collated (``DNAChatProcessor.dna_layout``)."""
        inputs_embeds = self.llm.get_input_embeddings()(input_ids)
        slots = input_ids == self.dna_pad_id  # (batch, tokens)
        n_slots = int(slots.sum())
        if dna_embeds is None:
            if n_slots:
                raise ValueError(f"input has {n_slots} DNA placeholder tokens but no DNA embeddings were given")
        else:
            if dna_mask is None:
                dna_mask = torch.ones(dna_embeds.shape[:2], dtype=torch.bool, device=dna_embeds.device)
            features, feature_mask = self.projector(dna_embeds, dna_mask)  # (n_seq, n_out, hidden), (n_seq, n_out)
            if self.summary is not None:  # per sample: reference block, variant block, summary
                summary = self.summary(dna_embeds, dna_mask, dna_spans, dna_layout)  # (n_pairs, n_summary, hidden)
                n_pairs = summary.shape[0]
                features = torch.cat(
                    [features.reshape(n_pairs, -1, features.shape[-1]), summary.to(features.dtype)], 1
                )
                feature_mask = torch.cat(
                    [feature_mask.reshape(n_pairs, -1), feature_mask.new_ones(summary.shape[:2])], 1
                )
            features = features[feature_mask]  # (n_features, hidden), in prompt order
            if features.shape[0] != n_slots:
                raise ValueError(
                    f"DNA placeholder tokens and DNA features do not match: tokens: {n_slots}, features: {features.shape[0]}"
                )
            inputs_embeds = inputs_embeds.masked_scatter(slots[..., None], features.to(inputs_embeds.dtype))
        # Both boundary tokens in one select: each position's row of dna_boundary (0: start, 1: end),
        # kept where a boundary token sits; its backward sums each row's gradient in one kernel.
        is_end = input_ids == self.dna_end_id  # (batch, tokens)
        here = (input_ids == self.dna_start_id) | is_end
        boundary = torch.nn.functional.embedding(is_end.long(), self.dna_boundary.to(inputs_embeds.dtype))
        return torch.where(here[..., None], boundary, inputs_embeds)

    def forward(
        self,
        input_ids,
        attention_mask,
        dna_embeds=None,
        dna_mask=None,
        labels=None,
        position_ids=None,
        cu_seq_lens=None,
        score_mask=None,
        dna_spans=None,
        reply_index=None,
        reply_targets=None,
        max_length=None,
        dna_layout=None,
    ):
        """With ``labels``: the mean next-token loss over labelled tokens, from logits on those
        tokens only (``logits="reply"``, chunked; see ``dnallm.fusion.packing``) or over every
        position (``logits="full"``, transformers' own loss; ``.logits`` is returned).
        ``cu_seq_lens``: a packed row (``packing.pack_rows``), ``max_length`` its longest sample.
        ``reply_index`` / ``reply_targets``: the labelled positions, found on the host
        (``packing.reply_targets``; without them the mask over ``labels`` is applied here,
        which waits for the device). With ``score_mask``: ``.token_logps``
        as ``token_logps`` gives them (through the forward, so that training engines wrap it).
        Without either: ``.logits`` at every position. ``dna_layout``: see ``embed``. -> ``DNAFusionOutput``"""
        if score_mask is not None:
            return DNAFusionOutput(
                token_logps=self.token_logps(input_ids, attention_mask, score_mask, dna_embeds, dna_mask, dna_spans)
            )
        if labels is not None and self.logits == "reply":
            hidden = self.hidden_states(
                input_ids,
                attention_mask,
                dna_embeds,
                dna_mask,
                position_ids,
                cu_seq_lens,
                dna_spans,
                max_length,
                dna_layout,
            )
            if reply_index is None:
                keep, reply_targets = shifted_targets(labels)
                chosen = hidden[:, :-1][keep]  # (n, hidden)
            else:
                chosen = hidden.flatten(0, 1).index_select(0, reply_index)  # (n, hidden)
            logps = chunked_token_logps(chosen, reply_targets, self.llm.get_output_embeddings(), self.logits_chunk)
            # The sign in the divisor, not a negation of its own (one kernel fewer each way): the same number.
            return DNAFusionOutput(loss=logps.sum() / -max(reply_targets.numel(), 1))
        inputs_embeds = self.embed(input_ids, dna_embeds, dna_mask, dna_spans, dna_layout)
        out = self.llm(
            inputs_embeds=inputs_embeds,
            labels=labels,
            position_ids=position_ids,
            use_cache=False,
            **self._attention_kwargs(attention_mask, cu_seq_lens, max_length),
        )
        return DNAFusionOutput(loss=out.loss, logits=out.logits)

    def hidden_states(
        self,
        input_ids,
        attention_mask,
        dna_embeds=None,
        dna_mask=None,
        position_ids=None,
        cu_seq_lens=None,
        dna_spans=None,
        max_length=None,
        dna_layout=None,
    ):
        """The decoder's last hidden states, before the LM head. (batch, tokens, hidden)"""
        inputs_embeds = self.embed(input_ids, dna_embeds, dna_mask, dna_spans, dna_layout)
        decoder = self.llm.get_base_model().get_decoder()
        out = decoder(
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            use_cache=False,
            **self._attention_kwargs(attention_mask, cu_seq_lens, max_length),
        )
        return out.last_hidden_state

    def token_logps(
        self, input_ids, attention_mask, score_mask, dna_embeds=None, dna_mask=None, dna_spans=None
    ) -> torch.Tensor:
        """log p(token t | tokens < t) where ``score_mask`` (batch, tokens) is set, 0 elsewhere;
        the LM head runs on those positions only. (batch, tokens), fp32"""
        hidden = self.hidden_states(input_ids, attention_mask, dna_embeds, dna_mask, dna_spans=dna_spans)
        keep = score_mask[:, 1:].bool()
        logps = chunked_token_logps(
            hidden[:, :-1][keep], input_ids[:, 1:][keep], self.llm.get_output_embeddings(), self.logits_chunk
        )
        out = torch.zeros(input_ids.shape, dtype=logps.dtype, device=logps.device)
        out[:, 1:] = out[:, 1:].masked_scatter(keep, logps)
        return out

    def _attention_kwargs(self, attention_mask, cu_seq_lens, max_length: int | None = None) -> dict:
        """``attention_mask`` None: causal attention alone (right-padded rows, where padding only
        follows real tokens); an SDPA-based implementation then gets no mask to build or check."""
        if cu_seq_lens is None:
            impl = self.llm.get_base_model().config._attn_implementation
            if attention_mask is None and impl in ("sdpa", *PACKING_ATTENTION):
                return {"attention_mask": CAUSAL_ONLY}
            return {"attention_mask": attention_mask}
        impl = self.llm.get_base_model().config._attn_implementation
        if impl not in PACKING_ATTENTION:
            raise ValueError(
                f"a packed batch needs an attention implementation that reads cu_seq_lens ({', '.join(PACKING_ATTENTION)}); "
                f"this LLM uses {impl!r}: build it with packing=True (recipe: train.packing=true)"
            )
        return packed_kwargs(cu_seq_lens.to(self.dna_boundary.device), max_length)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, dna_embeds=None, dna_mask=None, dna_spans=None, **generate_kwargs):
        """Greedy by default; returns only the new tokens. Expects left-padded prompts."""
        inputs_embeds = self.embed(input_ids, dna_embeds, dna_mask, dna_spans)
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("suppress_tokens", [self.dna_start_id, self.dna_pad_id, self.dna_end_id])
        return self.llm.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **generate_kwargs)


def add_dna_tokens(tokenizer, llm) -> dict[str, int]:
    """Add the DNA special tokens; grow the embedding table only if it has no spare rows.

    Qwen3 checkpoints keep spare rows past the tokenizer's vocabulary, so usually nothing
    is resized. New rows are set to the mean row (deterministic): their values never reach
    the model's input (see ``DNAFusionLM.embed``) and generation suppresses these ids.
    """
    tokenizer.add_tokens(list(DNA_TOKENS), special_tokens=True)
    old_rows = llm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old_rows:
        llm.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=False)
        with torch.no_grad():
            for table in {
                id(t): t for t in (llm.get_input_embeddings(), llm.get_output_embeddings()) if t is not None
            }.values():
                table.weight[old_rows:] = table.weight[:old_rows].mean(0)
    return {tok: tokenizer.convert_tokens_to_ids(tok) for tok in DNA_TOKENS}
