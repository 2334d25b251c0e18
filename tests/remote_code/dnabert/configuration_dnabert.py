from transformers import PretrainedConfig


class DNABertConfig(PretrainedConfig):
    """A BERT config written against transformers 4: ``model_type`` ``bert`` (transformers' own
    type), subclassing ``PretrainedConfig`` and relying on it for ``pad_token_id`` and
    ``is_decoder``, which transformers 5 no longer gives every config."""

    model_type = "bert"

    def __init__(
        self,
        vocab_size: int = 4096,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        layer_norm_eps: float = 1e-12,
        alibi_starting_size: int = 512,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.layer_norm_eps = layer_norm_eps
        self.alibi_starting_size = alibi_starting_size
        super().__init__(**kwargs)
