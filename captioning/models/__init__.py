"""Models: encoders, attention modules, decoders and the Captioner that composes them."""

from captioning.models.attention import AdditiveAttention
from captioning.models.captioner import Captioner
from captioning.models.decoders import LSTMDecoder
from captioning.models.encoders import ResNetEncoder, SmallCNN
from captioning.models.state import State

__all__ = ["AdditiveAttention", "Captioner", "LSTMDecoder", "ResNetEncoder", "SmallCNN", "State"]
