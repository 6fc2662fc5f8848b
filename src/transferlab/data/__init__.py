"""Image data: reading files, transforms, folder scanning, splits, demo data and the Lightning data module."""

from transferlab.data.base import BaseDataModule, TrainingDataModule
from transferlab.data.builder import ImageFolderSplits, build_imagefolder_splits
from transferlab.data.class_counts import count_per_class
from transferlab.data.dataset import ImageSampleDataset
from transferlab.data.demo import (
    ANIMAL_MNIST_CLASSES,
    DEMOS,
    load_animal_mnist,
    prepare_demo,
    write_animal_mnist,
)
from transferlab.data.folders import SPLITS, FolderLayout, find_layout, list_classes, list_samples
from transferlab.data.folds import fold_split, read_folds, stratified_folds, write_folds
from transferlab.data.imagefolder import ImageFolderDataModule
from transferlab.data.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    IMAGE_EXTENSIONS,
    ImageTooLargeError,
    UnreadableImageError,
    is_image_file,
    load_rgb,
    open_image,
)
from transferlab.data.safe_pickle import NumpyArrayUnpickler, load_pickled_array
from transferlab.data.sampling import EpochSampler, balanced_sampler
from transferlab.data.scan import ScanReport, check_image, scan_samples
from transferlab.data.splits import read_split, stratified_split, write_split
from transferlab.data.transforms import (
    AUGMENTATIONS,
    build_eval_transform,
    build_train_transform,
    min_decode_size,
)

__all__ = [
    "ANIMAL_MNIST_CLASSES",
    "AUGMENTATIONS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEMOS",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "BaseDataModule",
    "EpochSampler",
    "FolderLayout",
    "ImageFolderDataModule",
    "ImageFolderSplits",
    "ImageSampleDataset",
    "ImageTooLargeError",
    "NumpyArrayUnpickler",
    "ScanReport",
    "TrainingDataModule",
    "UnreadableImageError",
    "balanced_sampler",
    "build_eval_transform",
    "build_imagefolder_splits",
    "build_train_transform",
    "check_image",
    "count_per_class",
    "find_layout",
    "fold_split",
    "is_image_file",
    "list_classes",
    "list_samples",
    "load_animal_mnist",
    "load_pickled_array",
    "load_rgb",
    "min_decode_size",
    "open_image",
    "prepare_demo",
    "read_folds",
    "read_split",
    "scan_samples",
    "stratified_folds",
    "stratified_split",
    "write_animal_mnist",
    "write_folds",
    "write_split",
]
