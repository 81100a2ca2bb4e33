"""Data: sources find samples, the DataModule splits, pre-processes, augments and loads them."""

from imgcls.data.datamodule import ImageDataModule
from imgcls.data.dataset import ImageDataset, seed_worker
from imgcls.data.image_io import BadImageError, load_image
from imgcls.data.mask import MaskSource
from imgcls.data.sources import CsvSource, DataConfigError, FolderSource, MnistSource

__all__ = ["BadImageError", "CsvSource", "DataConfigError", "FolderSource", "ImageDataModule", "ImageDataset",
           "MaskSource", "MnistSource", "load_image", "seed_worker"]
