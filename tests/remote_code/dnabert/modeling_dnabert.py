"""A BERT-style encoder: no position embeddings (ALiBi attention biases instead), fused
QKV projection, gated MLP, post-layer norms. ``DNABertModel.forward`` returns a tuple
``(sequence_output, pooled_output)``, or all layers' outputs first when
``output_all_encoded_layers`` is set.

Written the way transformers-4 code was: the embeddings read ``config.pad_token_id`` and the
encoder ``config.is_decoder`` (defaults of transformers 4's config); the ALiBi table is a plain
tensor attribute made in ``__init__`` (not a buffer), partly on the CPU whatever the default
device, so ``__init__`` cannot run on the meta device at all; the all-zero token types are a
non-persistent buffer made in ``__init__`` only, which transformers 5's meta-device build leaves
without its values.
"""

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_dnabert import DNABertConfig


def alibi_table(n_heads: int, size: int, device=None) -> torch.Tensor:
    """(1, heads, size, size): -slope_h * |i - j|, slopes 2^(-8 h / n_heads), h = 1..n_heads.

    The slopes come from the legacy ``torch.Tensor`` constructor, which makes them on the CPU
    whatever the default device, and the positions from ``arange``, which follows it: built on
    the meta device, the product mixes two devices and ``__init__`` fails."""
    slopes = torch.Tensor([2 ** (-8 * h / n_heads) for h in range(1, n_heads + 1)]).to(device)
    pos = torch.arange(size, device=device)
    distance = (pos[None, :] - pos[:, None]).abs()  # (size, size)
    return (-slopes[:, None, None] * distance)[None]


class Embeddings(nn.Module):
    def __init__(self, config: DNABertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(2, config.hidden_size)
        token_types = torch.zeros(config.alibi_starting_size, dtype=torch.long)
        self.register_buffer("token_type_ids", token_types, persistent=False)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids):  # (batch, length) -> (batch, length, hidden)
        token_types = self.token_type_ids[: input_ids.shape[1]].expand_as(input_ids)
        return self.norm(self.word_embeddings(input_ids) + self.token_type_embeddings(token_types))


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


class Encoder(nn.Module):
    def __init__(self, config: DNABertConfig):
        super().__init__()
        if config.is_decoder:
            raise ValueError("this encoder is bidirectional only")
        self.n_heads = config.num_attention_heads
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.alibi = alibi_table(self.n_heads, config.alibi_starting_size)  # plain attribute: not in the state dict

    def forward(self, x, attention_mask):  # x: (batch, length, hidden)
        n = x.shape[1]
        if self.alibi.shape[-1] < n:
            self.alibi = alibi_table(self.n_heads, n, x.device)
        elif self.alibi.device != x.device:
            self.alibi = self.alibi.to(x.device)
        padding = (attention_mask == 0).to(x.dtype) * torch.finfo(x.dtype).min  # (batch, length): padding keys unseen
        bias = (self.alibi[:, :, :n, :n] + padding[:, None, None, :]).to(x.dtype)  # (batch, heads, length, length)
        layers = []
        for layer in self.layers:
            x = layer(x, bias)
            layers.append(x)
        return layers


class DNABertPreTrainedModel(PreTrainedModel):
    config_class = DNABertConfig
    base_model_prefix = "bert"


class DNABertModel(DNABertPreTrainedModel):
    def __init__(self, config: DNABertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooling_layer else None
        self.post_init()

    def forward(
        self,
        input_ids,
        token_type_ids=None,
        attention_mask=None,
        position_ids=None,
        output_all_encoded_layers=False,
        masked_tokens_mask=None,
        **kwargs,
    ):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        layers = self.encoder(self.embeddings(input_ids), attention_mask)
        pooled = torch.tanh(self.pooler(layers[-1][:, 0])) if self.pooler is not None else None
        return (layers if output_all_encoded_layers else layers[-1]), pooled


class DNABertForMaskedLM(DNABertPreTrainedModel):
    def __init__(self, config: DNABertConfig):
        super().__init__(config)
        self.bert = DNABertModel(config, add_pooling_layer=False)
        self.head = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size), nn.GELU(), nn.LayerNorm(config.hidden_size)
        )
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        hidden, _ = self.bert(input_ids, attention_mask=attention_mask)
        logits = self.decoder(self.head(hidden))
        loss = None if labels is None else F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)
