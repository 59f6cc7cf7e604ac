"""Models: encoders, refiners, attention modules, decoders and the Captioner that composes
them; the contracts they honour are the Protocols of ``captioning.models.contracts``."""

from captioning.models.aoa import AoADecoder, AoAGate, AoARefiner
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
    RefinerFactory,
    RefinerProtocol,
)
from captioning.models.decoders import LSTMDecoder
from captioning.models.encoders import ResNetEncoder, SmallCNN, TorchvisionCNN, ViTEncoder
from captioning.models.meshed import MemoryRefiner, MeshedDecoder
from captioning.models.refiners import NoRefiner, TransformerRefiner
from captioning.models.state import State
from captioning.models.transformer import TransformerDecoder
from captioning.models.updown import UpDownDecoder

__all__ = [
    "AdaptiveAttention",
    "AdditiveAttention",
    "AoADecoder",
    "AoAGate",
    "AoARefiner",
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
    "MemoryRefiner",
    "MeshedDecoder",
    "MultiHeadAttention",
    "NoRefiner",
    "OpenCLIPEncoder",
    "RefinerFactory",
    "RefinerProtocol",
    "ResNetEncoder",
    "SmallCNN",
    "State",
    "TimmEncoder",
    "TorchvisionCNN",
    "TransformerDecoder",
    "TransformerRefiner",
    "UpDownDecoder",
    "ViTEncoder",
]
