from transformers import BertConfig


class DNABertConfig(BertConfig):
    """transformers' BERT config (model_type ``bert``) read by different layers."""

    def __init__(self, alibi_starting_size: int = 512, **kwargs):
        self.alibi_starting_size = alibi_starting_size
        super().__init__(**kwargs)
