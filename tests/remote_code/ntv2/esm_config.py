from transformers import PretrainedConfig


class EsmConfig(PretrainedConfig):
    """Nucleotide Transformer v2's ESM config: rotary positions, a gated feed-forward without
    biases (``add_bias_fnn``); it leaves ``is_decoder`` to transformers 4's config defaults."""

    model_type = "esm"

    def __init__(
        self,
        vocab_size: int = 4107,
        hidden_size: int = 1024,
        num_hidden_layers: int = 29,
        num_attention_heads: int = 16,
        intermediate_size: int = 4096,
        max_position_embeddings: int = 2050,
        layer_norm_eps: float = 1e-12,
        add_bias_fnn: bool = False,
        mask_token_id: int = 2,
        pad_token_id: int = 1,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, mask_token_id=mask_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.layer_norm_eps = layer_norm_eps
        self.add_bias_fnn = add_bias_fnn
