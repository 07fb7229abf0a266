"""tfcore.data: MNIST without Keras, reproducible input pipelines, image folders.

* `load_mnist(data_dir=None)` -> ((x_train, y_train), (x_test, y_test)), uint8, like
  `keras.datasets.mnist.load_data()`; bad files raise `DataError` (a `ValueError`).
* `make_dataset` (tf.data), `DeviceDataset` (on-device, usable in XLA loops) and
  `batch_indices` share one data order, fixed by (seed, epoch), so training resumes
  exactly from (epoch, step).
* `mnist_images`, `balanced_subset`, `train_val_split`: preprocessing and subsets.
* `load_image_folder`, `augment`: a small image set from PNG/JPEG files, grown by
  random scale/shift/brightness.
* `SemiSupervisedData`: labeled and unlabeled batches stepped together.
"""
from tfcore.data.idx import DataError, read_idx, write_idx
from tfcore.data.mnist import download_mnist, load_mnist
from tfcore.data.pipeline import (DeviceDataset, balanced_subset, batch_indices,
                                  epoch_permutation, make_dataset, mnist_images,
                                  permutation_tensor, train_val_split)
from tfcore.data.images import augment, load_image_folder
from tfcore.data.semi_supervised import SemiSupervisedData

__all__ = [
    "DataError", "load_mnist", "download_mnist", "read_idx", "write_idx",
    "make_dataset", "DeviceDataset", "batch_indices", "epoch_permutation",
    "permutation_tensor", "mnist_images", "balanced_subset", "train_val_split",
    "load_image_folder", "augment", "SemiSupervisedData",
]
