"""A BERT-style encoder: no position embeddings (ALiBi attention biases instead), fused
QKV projection, gated MLP, post-layer norms. ``DNABertModel.forward`` returns a tuple
``(sequence_output, pooled_output)``, or all layers' outputs first when
``output_all_encoded_layers`` is set.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_dnabert import DNABertConfig


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Geometric per-head slopes 2^(-8 h / n_heads), h = 1..n_heads."""
    return torch.tensor([2 ** (-8 * h / n_heads) for h in range(1, n_heads + 1)])


class Layer(nn.Module):
    def __init__(self, config: DNABertConfig):
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.attn_out = nn.Linear(config.hidden_size, config.hidden_size)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gated = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.mlp_out = nn.Linear(config.intermediate_size, config.hidden_size)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x, bias):  # x: (batch, length, hidden); bias: (batch, heads, length, length)
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (batch, heads, length, head_dim)
        x = self.attn_norm(x + self.attn_out(attn.transpose(1, 2).reshape(b, n, d)))
        gate, value = self.gated(x).chunk(2, dim=-1)
        return self.mlp_norm(x + self.mlp_out(F.gelu(gate) * value))


class DNABertPreTrainedModel(PreTrainedModel):
    config_class = DNABertConfig
    base_model_prefix = "bert"


class DNABertModel(DNABertPreTrainedModel):
    def __init__(self, config: DNABertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.embedding_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooling_layer else None
        self.register_buffer("slopes", alibi_slopes(config.num_attention_heads), persistent=False)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, DNABertModel):
            module.slopes.copy_(alibi_slopes(module.config.num_attention_heads))

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None,
                output_all_encoded_layers=False, masked_tokens_mask=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embedding_norm(self.word_embeddings(input_ids))
        n = input_ids.shape[1]
        pos = torch.arange(n, device=input_ids.device)
        distance = (pos[None, :] - pos[:, None]).abs()  # (length, length)
        bias = -self.slopes[:, None, None] * distance  # (heads, length, length)
        bias = bias[None].masked_fill(attention_mask[:, None, None, :] == 0, -math.inf)  # padding keys unseen
        layers = []
        for layer in self.layers:
            x = layer(x, bias.to(x.dtype))
            layers.append(x)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return (layers if output_all_encoded_layers else x), pooled


class DNABertForMaskedLM(DNABertPreTrainedModel):
    def __init__(self, config: DNABertConfig):
        super().__init__(config)
        self.bert = DNABertModel(config, add_pooling_layer=False)
        self.head = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.GELU(), nn.LayerNorm(config.hidden_size))
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        hidden, _ = self.bert(input_ids, attention_mask=attention_mask)
        logits = self.decoder(self.head(hidden))
        loss = None if labels is None else F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)
