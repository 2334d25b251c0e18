"""An ESM-style encoder with Nucleotide Transformer v2's interface: pre-layer-norm attention
with rotary positions, a gated (SwiGLU) feed-forward, only task classes in ``auto_map``.

Written against transformers 4, as the published code is: it imports
``find_pruneable_heads_and_indices`` from ``transformers.pytorch_utils`` and calls the model
methods ``get_extended_attention_mask`` and ``get_head_mask`` and reads ``config.is_decoder``,
all gone in transformers 5.
"""

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions, MaskedLMOutput
from transformers.pytorch_utils import find_pruneable_heads_and_indices, prune_linear_layer

from .esm_config import EsmConfig


def rotate(x, base: float = 10000.0):  # (batch, heads, length, head_dim), positions rotated pairwise
    n, dim = x.shape[-2], x.shape[-1]
    inv_freq = base ** (-torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim)  # (head_dim / 2,)
    angles = torch.outer(torch.arange(n, device=x.device, dtype=torch.float32), inv_freq)  # (length, head_dim / 2)
    cos, sin = angles.cos().repeat(1, 2).to(x.dtype), angles.sin().repeat(1, 2).to(x.dtype)
    half1, half2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-half2, half1), dim=-1) * sin


class EsmSelfAttention(nn.Module):
    def __init__(self, config: EsmConfig):
        super().__init__()
        self.n_heads, self.head_size = config.num_attention_heads, config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.pruned_heads = set()

    def prune_heads(self, heads):
        heads, index = find_pruneable_heads_and_indices(heads, self.n_heads, self.head_size, self.pruned_heads)
        for name in ("query", "key", "value"):
            setattr(self, name, prune_linear_layer(getattr(self, name), index))
        self.output = prune_linear_layer(self.output, index, dim=1)
        self.n_heads -= len(heads)
        self.pruned_heads |= heads

    def forward(self, x, bias, head_mask=None):  # x: (batch, length, hidden); bias: (batch, 1, 1, length)
        b, n, _ = x.shape

        def heads(proj):  # -> (batch, heads, length, head_size)
            return proj(x).view(b, n, self.n_heads, self.head_size).transpose(1, 2)

        q, k, v = rotate(heads(self.query)), rotate(heads(self.key)), heads(self.value)
        scores = q @ k.transpose(-1, -2) / self.head_size**0.5 + bias  # (batch, heads, length, length)
        weights = scores.softmax(-1)
        if head_mask is not None:
            weights = weights * head_mask
        return self.output((weights @ v).transpose(1, 2).reshape(b, n, -1))


class EsmLayer(nn.Module):
    def __init__(self, config: EsmConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = EsmSelfAttention(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gate_up = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.add_bias_fnn)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.add_bias_fnn)

    def forward(self, x, bias, head_mask=None):
        x = x + self.attention(self.attention_norm(x), bias, head_mask)
        gate, up = self.gate_up(self.ffn_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class EsmPreTrainedModel(PreTrainedModel):
    config_class = EsmConfig
    base_model_prefix = "esm"


class EsmModel(EsmPreTrainedModel):
    def __init__(self, config: EsmConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(EsmLayer(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooling_layer else None
        self.post_init()

    def _prune_heads(self, heads_to_prune):
        for layer, heads in heads_to_prune.items():
            self.layers[layer].attention.prune_heads(heads)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        head_mask=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        if self.config.is_decoder:
            raise ValueError("Nucleotide Transformer is an encoder")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        bias = self.get_extended_attention_mask(attention_mask, input_ids.shape)  # (batch, 1, 1, length)
        head_mask = self.get_head_mask(head_mask, self.config.num_hidden_layers)
        x = self.word_embeddings(input_ids)
        per_layer = [x]
        for layer, layer_head_mask in zip(self.layers, head_mask):
            x = layer(x, bias, layer_head_mask)
            per_layer.append(x)
        x = self.final_norm(x)
        per_layer[-1] = x
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        per_layer = tuple(per_layer) if output_hidden_states else None
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=x, pooler_output=pooled, hidden_states=per_layer
        )


class EsmForMaskedLM(EsmPreTrainedModel):
    def __init__(self, config: EsmConfig):
        super().__init__(config)
        self.esm = EsmModel(config, add_pooling_layer=False)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        logits = self.lm_head(self.esm(input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state)
        loss = None if labels is None else F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)
