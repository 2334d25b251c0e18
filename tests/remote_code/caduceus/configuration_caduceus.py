from transformers import PretrainedConfig


class CaduceusConfig(PretrainedConfig):
    model_type = "caduceus"

    def __init__(
        self,
        d_model: int = 256,
        n_layer: int = 16,
        vocab_size: int = 12,
        kernel_size: int = 5,
        pad_vocab_size_multiple: int = 8,
        fused_add_norm: bool = False,
        norm_epsilon: float = 1e-5,
        **kwargs,
    ):
        self.d_model = d_model
        self.n_layer = n_layer
        self.vocab_size = vocab_size
        self.kernel_size = kernel_size
        self.pad_vocab_size_multiple = pad_vocab_size_multiple
        self.fused_add_norm = fused_add_norm
        self.norm_epsilon = norm_epsilon
        super().__init__(**kwargs)
