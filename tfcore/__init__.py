"""tfcore: classic Keras-era models in pure, low-level TensorFlow 2.

Flat public API: `tfcore.Dense`, `tfcore.Conv2D`, `tfcore.Adam`, ... Each block lives
in its own module whose docstring says what it computes and its shapes.
"""
from tfcore import activations, initializers
from tfcore.layer import Layer
from tfcore.dense import Dense

# --- layers (conv, pooling, upsampling, flatten, dropout, batchnorm, sequential) ---

# --- losses and optimizers ---

# --- functional-API blocks (embedding, lstm, conv1d, separable, merge) ---
