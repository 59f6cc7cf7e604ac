"""Models: encoders, attention modules, decoders and the Captioner that composes them; the
contracts they honour are the Protocols of ``captioning.models.contracts``."""

from captioning.models.attention import (
    AdaptiveAttention,
    AdditiveAttention,
    BilinearAttention,
    DotAttention,
    MultiHeadAttention,
)
from captioning.models.backbones import OpenCLIPEncoder, TimmEncoder
from captioning.models.captioner import Captioner
from captioning.models.contracts import (
    AttentionFactory,
    AttentionProtocol,
    DecoderFactory,
    DecoderProtocol,
    DecoderState,
    EncoderProtocol,
)
from captioning.models.decoders import LSTMDecoder
from captioning.models.encoders import ResNetEncoder, SmallCNN, TorchvisionCNN, ViTEncoder
from captioning.models.state import State
from captioning.models.transformer import TransformerDecoder

__all__ = [
    "AdaptiveAttention",
    "AdditiveAttention",
    "AttentionFactory",
    "AttentionProtocol",
    "BilinearAttention",
    "Captioner",
    "DecoderFactory",
    "DecoderProtocol",
    "DecoderState",
    "DotAttention",
    "EncoderProtocol",
    "LSTMDecoder",
    "MultiHeadAttention",
    "OpenCLIPEncoder",
    "ResNetEncoder",
    "SmallCNN",
    "State",
    "TimmEncoder",
    "TorchvisionCNN",
    "TransformerDecoder",
    "ViTEncoder",
]
