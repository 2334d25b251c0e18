"""A bidirectional DNA model with Caduceus's interface: ``d_model``, no attention mask, the trunk
class ``Caduceus`` inside ``CaduceusForMaskedLM``, the vocabulary padded to a multiple of 8.

Written the way Caduceus's published code is: the fused add + norm kernel is a CUDA-only
package imported when present, and the trunk class never calls ``post_init()`` (only the
masked-LM class does), which transformers 5 needs to load it. The mixer is a depthwise
convolution run in both directions with one set of weights, standing in for BiMamba.
"""

from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithNoAttention, MaskedLMOutput

from .configuration_caduceus import CaduceusConfig

try:
    from mamba_ssm.ops.triton.layer_norm import layer_norm_fn  # CUDA only
except ImportError:
    layer_norm_fn = None


class BiConvBlock(nn.Module):
    def __init__(self, config: CaduceusConfig):
        super().__init__()
        self.kernel_size = config.kernel_size
        self.norm = nn.LayerNorm(config.d_model, eps=config.norm_epsilon)
        self.conv = nn.Conv1d(config.d_model, config.d_model, config.kernel_size, groups=config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def one_way(self, h):  # (batch, d_model, length), each position sees those before it
        return self.conv(F.pad(h, (self.kernel_size - 1, 0)))

    def forward(self, x):  # (batch, length, d_model)
        h = self.norm(x).transpose(1, 2)
        mixed = self.one_way(h) + self.one_way(h.flip(-1)).flip(-1)  # forward + reverse, tied weights
        return x + self.out(F.silu(mixed.transpose(1, 2)))


class CaduceusMixerModel(nn.Module):
    def __init__(self, config: CaduceusConfig):
        super().__init__()
        if config.fused_add_norm and layer_norm_fn is None:
            raise ImportError("Failed to import the fused add + norm kernels")
        self.word_embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(BiConvBlock(config) for _ in range(config.n_layer))
        self.norm_f = nn.LayerNorm(config.d_model, eps=config.norm_epsilon)

    def forward(self, input_ids, inputs_embeds=None, output_hidden_states=False):
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        per_layer = [x]
        for layer in self.layers:
            x = layer(x)
            per_layer.append(x)
        x = self.norm_f(x)
        per_layer[-1] = x
        return x, tuple(per_layer) if output_hidden_states else None


class CaduceusPreTrainedModel(PreTrainedModel):
    config_class = CaduceusConfig
    base_model_prefix = "caduceus"


class Caduceus(CaduceusPreTrainedModel):
    def __init__(self, config: CaduceusConfig, **kwargs):
        super().__init__(config)
        if config.vocab_size % config.pad_vocab_size_multiple:
            config.vocab_size += config.pad_vocab_size_multiple - config.vocab_size % config.pad_vocab_size_multiple
        self.backbone = CaduceusMixerModel(config)
        # no self.post_init(): the published trunk class has none either

    def forward(self, input_ids=None, inputs_embeds=None, output_hidden_states=None, return_dict=None):
        hidden, per_layer = self.backbone(input_ids, inputs_embeds, output_hidden_states)
        if return_dict is False:
            return (hidden, per_layer) if output_hidden_states else hidden
        return BaseModelOutputWithNoAttention(last_hidden_state=hidden, hidden_states=per_layer)


class CaduceusForMaskedLM(CaduceusPreTrainedModel):
    def __init__(self, config: CaduceusConfig, **kwargs):
        super().__init__(config)
        self.caduceus = Caduceus(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, labels=None, **kwargs):
        logits = self.lm_head(self.caduceus(input_ids, **kwargs).last_hidden_state)
        loss = None if labels is None else F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)
