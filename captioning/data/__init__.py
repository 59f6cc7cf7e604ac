"""Data: format readers, vocabulary, synthetic Shapes and the DataModule."""

from captioning.data.datamodule import CaptionDataModule
from captioning.data.formats import DataError, ImageRecord, read_flickr8k_kaggle
from captioning.data.vocab import Vocabulary

__all__ = ["CaptionDataModule", "DataError", "ImageRecord", "Vocabulary", "read_flickr8k_kaggle"]
