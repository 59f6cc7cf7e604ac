"""Data: format readers, synthetic Shapes, datasets, caches and the DataModule."""

from captioning.data.datamodule import CaptionDataModule
from captioning.data.formats import BadData, DataError, ImageRecord, read_flickr8k_kaggle
from captioning.data.layouts import detect_layout, read_dataset

__all__ = [
    "BadData",
    "CaptionDataModule",
    "DataError",
    "ImageRecord",
    "detect_layout",
    "read_dataset",
    "read_flickr8k_kaggle",
]
