"""Data: sources find samples, the DataModule splits, pre-processes, augments and loads them."""

from imgcls.data.datamodule import ImageDataModule
from imgcls.data.dataset import ImageDataset
from imgcls.data.sources import CsvSource, DataConfigError, FolderSource, MnistSource
from imgcls.feeding.image_io import BadImageError, load_image

__all__ = [
    "BadImageError",
    "CsvSource",
    "DataConfigError",
    "FolderSource",
    "ImageDataModule",
    "ImageDataset",
    "MnistSource",
    "load_image",
]
