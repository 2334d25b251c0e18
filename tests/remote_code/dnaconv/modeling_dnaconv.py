"""Residual blocks of a causal depthwise convolution (position i sees positions <= i) and a
gated MLP over (batch, length, d_model).
"""

from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithNoAttention, CausalLMOutput

from .configuration_dnaconv import DNAConvConfig


class ConvBlock(nn.Module):
    def __init__(self, config: DNAConvConfig):
        super().__init__()
        self.kernel_size = config.kernel_size
        self.mix_norm = nn.LayerNorm(config.d_model)
        self.conv = nn.Conv1d(config.d_model, config.d_model, config.kernel_size, groups=config.d_model)
        self.mlp_norm = nn.LayerNorm(config.d_model)
        self.up = nn.Linear(config.d_model, 2 * config.d_model)
        self.down = nn.Linear(config.d_model, config.d_model)

    def causal_conv(self, x):  # (batch, d_model, length)
        return self.conv(F.pad(x, (self.kernel_size - 1, 0)))

    def forward(self, x):  # (batch, length, d_model)
        h = self.mix_norm(x).transpose(1, 2)
        x = x + self.causal_conv(h).transpose(1, 2)
        gate, value = self.up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * value)


class DNAConvPreTrainedModel(PreTrainedModel):
    config_class = DNAConvConfig
    base_model_prefix = "backbone"


class DNAConvModel(DNAConvPreTrainedModel):
    def __init__(self, config: DNAConvConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(ConvBlock(config) for _ in range(config.n_layer))
        self.final_norm = nn.LayerNorm(config.d_model)
        self.post_init()

    def forward(self, input_ids=None, inputs_embeds=None, output_hidden_states=None, return_dict=None):
        x = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        per_layer = [x]
        for block in self.blocks:
            x = block(x)
            per_layer.append(x)
        x = self.final_norm(x)
        per_layer[-1] = x
        if return_dict is False:
            return (x, tuple(per_layer)) if output_hidden_states else (x,)
        return BaseModelOutputWithNoAttention(
            last_hidden_state=x, hidden_states=tuple(per_layer) if output_hidden_states else None
        )


class DNAConvForCausalLM(DNAConvPreTrainedModel):
    def __init__(self, config: DNAConvConfig):
        super().__init__(config)
        self.backbone = DNAConvModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, labels=None, **kwargs):
        logits = self.lm_head(self.backbone(input_ids, **kwargs).last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
        return CausalLMOutput(loss=loss, logits=logits)
