"""Image data: reading files, transforms, folder scanning, splits, demo data and the Lightning data module."""

from transferlab.data.dataset import ImageSampleDataset
from transferlab.data.demo import (
    ANIMAL_MNIST_CLASSES,
    DEMOS,
    load_animal_mnist,
    prepare_demo,
    write_animal_mnist,
)
from transferlab.data.folders import SPLITS, FolderLayout, find_layout, list_classes, list_samples
from transferlab.data.imagefolder import ImageFolderDataModule
from transferlab.data.images import IMAGE_EXTENSIONS, is_image_file, load_rgb
from transferlab.data.safe_pickle import NumpyArrayUnpickler, load_pickled_array
from transferlab.data.splits import read_split, stratified_split, write_split
from transferlab.data.transforms import AUGMENTATIONS, build_eval_transform, build_train_transform

__all__ = [
    "ANIMAL_MNIST_CLASSES",
    "AUGMENTATIONS",
    "DEMOS",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "FolderLayout",
    "ImageFolderDataModule",
    "ImageSampleDataset",
    "NumpyArrayUnpickler",
    "build_eval_transform",
    "build_train_transform",
    "find_layout",
    "is_image_file",
    "list_classes",
    "list_samples",
    "load_animal_mnist",
    "load_pickled_array",
    "load_rgb",
    "prepare_demo",
    "read_split",
    "stratified_split",
    "write_animal_mnist",
    "write_split",
]
