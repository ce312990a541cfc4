"""models stage: the music transformer network, its blocks and its KV cache."""

from aurl.models.blocks import ATTENTION, KVCache, TransformerBlock, make_block
from aurl.models.build import build_model, estimate_flops_per_token, num_parameters
from aurl.models.transformer import ModelOutput, MusicTransformer

__all__ = [
    "ATTENTION",
    "KVCache",
    "ModelOutput",
    "MusicTransformer",
    "TransformerBlock",
    "build_model",
    "estimate_flops_per_token",
    "make_block",
    "num_parameters",
]
