from transformers import PretrainedConfig


class DNAConvConfig(PretrainedConfig):
    model_type = "dnaconv"

    def __init__(self, vocab_size: int = 16, d_model: int = 40, n_layer: int = 2, kernel_size: int = 5, **kwargs):
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_layer = n_layer
        self.kernel_size = kernel_size
        super().__init__(**kwargs)
