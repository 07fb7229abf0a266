"""tfcore: classic Keras-era models in pure, low-level TensorFlow 2.

Flat public API: `tfcore.Dense`, `tfcore.Conv2D`, `tfcore.Adam`, ... (`__all__`).
Each block lives in its own module whose docstring says what it computes and its
shapes. Apart from the blocks: `tfcore.training` (the loop, callbacks, checkpoints,
the run layer under the binaries), `tfcore.data` (MNIST, pipelines), `tfcore.checks`
(argument checks), `tfcore.keras_io` (Keras weight files), `tfcore.vat` and
`tfcore.gan` (the losses and steps of VAT and GANs).
"""
from tfcore import activations, initializers
from tfcore.layer import Layer
from tfcore.dense import Dense

# --- layers (conv, pooling, upsampling, flatten, dropout, batchnorm, sequential) ---
from tfcore.conv2d import Conv2D
from tfcore.conv2d_bias_relu import conv2d_bias_relu
from tfcore.conv2d_transpose import Conv2DTranspose
from tfcore.max_pool2d import MaxPool2D
from tfcore.avg_pool2d import AvgPool2D
from tfcore.upsampling2d import UpSampling2D
from tfcore.flatten import Flatten
from tfcore.dropout import Dropout
from tfcore.batch_norm import BatchNorm
from tfcore.sequential import Sequential

# --- losses and optimizers ---
from tfcore import losses, optimizers
from tfcore.optimizers import SGD, Adam, Adadelta, RMSprop

# --- functional-API blocks (embedding, lstm, conv1d, separable, merge) ---
from tfcore.embedding import Embedding
from tfcore.lstm import LSTM
from tfcore.conv1d import Conv1D
from tfcore.max_pool1d import MaxPool1D
from tfcore.global_pooling import (GlobalAveragePool1D, GlobalAveragePool2D,
                                   GlobalMaxPool1D, GlobalMaxPool2D)
from tfcore.depthwise_conv2d import DepthwiseConv2D
from tfcore.separable_conv2d import SeparableConv2D
from tfcore.merge import add, concatenate
from tfcore.summary import summary

# --- autoencoder blocks ---
from tfcore.tied_dense import TiedDense

# --- data augmentation ---
from tfcore.random_translate import random_translate

# --- Keras weight files (h5py) ---
from tfcore import keras_io

__all__ = [
    # modules
    "activations", "initializers", "keras_io", "losses", "optimizers",
    # layers
    "Layer", "Dense", "Conv2D", "conv2d_bias_relu", "Conv2DTranspose", "MaxPool2D",
    "AvgPool2D", "UpSampling2D", "Flatten", "Dropout", "BatchNorm", "Sequential",
    "Embedding", "LSTM", "Conv1D", "MaxPool1D", "GlobalAveragePool1D",
    "GlobalAveragePool2D", "GlobalMaxPool1D", "GlobalMaxPool2D", "DepthwiseConv2D",
    "SeparableConv2D", "add", "concatenate", "TiedDense",
    # optimizers
    "SGD", "Adam", "Adadelta", "RMSprop",
    # utilities
    "summary", "random_translate",
]
