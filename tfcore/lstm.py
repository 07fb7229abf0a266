"""LSTM: a long short-term memory layer over a [batch, time, features] sequence.

For each step t (gate order i, f, c, o, as Keras):

    z   = x_t @ kernel + h_{t-1} @ recurrent_kernel + bias      # [batch, 4 * units]
    i   = recurrent_activation(z[:, 0u:1u])                     # input gate
    f   = recurrent_activation(z[:, 1u:2u])                     # forget gate
    c_t = f * c_{t-1} + i * activation(z[:, 2u:3u])            # cell state
    o   = recurrent_activation(z[:, 3u:4u])                     # output gate
    h_t = o * activation(c_t)                                   # output

with h_0 = c_0 = 0 unless `initial_state=[h0, c0]` is given (Hochreiter &
Schmidhuber 1997; forget gate of Gers et al. 2000).

Masking: with `mask` [batch, time] (bool; e.g. `Embedding.compute_mask(tokens)`),
a masked step keeps the previous h and c, and its output is the previous output
(zeros before the first unmasked step), exactly as Keras 3 does.

Shapes: x [batch, time, in] -> [batch, units] (last output), or [batch, time, units]
with `return_sequences`; with `return_state`, a list [output, h_T, c_T].
Variables (Keras layout): `kernel` [in, 4u] (glorot_uniform), `recurrent_kernel`
[u, 4u] (orthogonal), `bias` [4u] (zeros; the forget-gate quarter is ones when
`unit_forget_bias`).

Implementation: the input projection x @ kernel + bias is one matmul over all steps;
the recurrence is a `tf.while_loop` carrying (h, c) (TensorArrays for the inputs and,
with `return_sequences`, the outputs), so the time axis may be static or dynamic and
the layer compiles under XLA. Dropout is not implemented.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfcore import activations, checks, initializers
from tfcore.layer import Layer


class LSTM(Layer):
    """A Keras-compatible LSTM layer (no dropout).

    Args:
        units: size of h and c.
        activation: for the candidate and for c in h's formula. Default 'tanh'.
        recurrent_activation: for the gates. Default 'sigmoid'.
        use_bias: default True.
        kernel_initializer: default 'glorot_uniform'.
        recurrent_initializer: default 'orthogonal'.
        bias_initializer: default 'zeros'.
        unit_forget_bias: add 1 to the forget-gate bias at initialisation (the bias
            is then built as [init(u), ones(u), init(2u)]). Default True.
        return_sequences: return every step's output [b, t, u], not just the last.
        return_state: also return the final h and c.
        go_backwards: process the sequence in reverse; with `return_sequences` the
            outputs are then in processing (reversed) order, as Keras.
        name: module name.
    """

    def __init__(self, units: int, activation="tanh", recurrent_activation="sigmoid",
                 use_bias: bool = True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias: bool = True, return_sequences: bool = False,
                 return_state: bool = False, go_backwards: bool = False,
                 name: Optional[str] = None):
        super().__init__(name=name)
        self.units = checks.check_int(units, "LSTM units", low=1)
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank != 3:
            raise ValueError(f"LSTM '{self.name}': input must be [batch, time, features], "
                             f"got shape {shape}")
        self._require_dims(shape, [-1], "input feature dimension")
        u = self.units
        self.kernel = self.add_weight("kernel", [int(shape[-1]), 4 * u],
                                      self.kernel_initializer)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", [u, 4 * u],
                                                self.recurrent_initializer)
        if self.use_bias:
            if self.unit_forget_bias:
                init = self.bias_initializer

                def bias_init(shape, dtype=tf.float32):
                    return tf.concat([init([u], dtype), tf.ones([u], dtype),
                                      init([2 * u], dtype)], axis=0)
            else:
                bias_init = self.bias_initializer
            self.bias = self.add_weight("bias", [4 * u], bias_init)

    def call(self, x, training=False, seed=None, mask=None, initial_state=None):
        """Runs the LSTM: `lstm(x, mask=None, initial_state=None)`.

        Args:
            x: [batch, time, features] float tensor.
            training: unused (no dropout); accepted for the Layer contract.
            seed: unused.
            mask: optional [batch, time] bool (or 0/1) tensor, False = padded step.
            initial_state: optional [h0, c0], each [batch, units].

        Returns:
            [batch, units], or [batch, time, units] with `return_sequences`; with
            `return_state` the list [output, h_T, c_T].
        """
        x = tf.convert_to_tensor(x)
        u = self.units
        batch = tf.shape(x)[0]
        # Time-major: the loop reads step t's projected input.
        xs = tf.transpose(x, [1, 0, 2])
        xw = tf.tensordot(xs, self.kernel, axes=[[2], [0]])  # [t, b, 4u]
        if self.use_bias:
            xw = xw + self.bias
        if initial_state is None:
            h0 = tf.zeros(tf.stack([batch, u]), dtype=x.dtype)
            c0 = h0
        else:
            h0, c0 = (tf.convert_to_tensor(s, dtype=x.dtype) for s in initial_state)
        if mask is not None:
            m = tf.transpose(tf.cast(mask, tf.bool), [1, 0])[:, :, None]  # [t, b, 1]
        if self.go_backwards:
            xw = tf.reverse(xw, [0])
            if mask is not None:
                m = tf.reverse(m, [0])

        act, rec_act, rk = self.activation, self.recurrent_activation, self.recurrent_kernel
        steps = tf.shape(xw)[0]
        xw_ta = tf.TensorArray(xw.dtype, size=steps).unstack(xw)
        m_ta = tf.TensorArray(tf.bool, size=steps).unstack(m) if mask is not None else None
        out_ta = (tf.TensorArray(x.dtype, size=steps, element_shape=tf.TensorShape(
            [x.shape[0], u])) if self.return_sequences else None)

        def cell(h, c, z_x):
            z = z_x + tf.linalg.matmul(h, rk)
            zi, zf, zc, zo = tf.split(z, 4, axis=-1)
            i = rec_act(zi)
            f = rec_act(zf)
            c_new = f * c + i * act(zc)
            o = rec_act(zo)
            return o * act(c_new), c_new

        def step(t, h, c, out):
            h_new, c_new = cell(h, c, xw_ta.read(t))
            if m_ta is None:
                return h_new, c_new, h_new
            # Keras: masked steps carry h and c; the output repeats the previous output
            # (zeros before the first unmasked step).
            m_t = m_ta.read(t)
            h_new, c_new = tf.where(m_t, h_new, h), tf.where(m_t, c_new, c)
            return h_new, c_new, tf.where(m_t, h_new, out)

        # A tf.while_loop carrying only (h, c, out): every step's output is kept only
        # with return_sequences (faster than a tf.scan stacking h and c of every step:
        # docs/decisions.md, "The LSTM's recurrence").
        loop_vars = (tf.constant(0), h0, c0, tf.zeros_like(h0))
        if out_ta is None:
            def body(t, h, c, out):
                return (t + 1,) + step(t, h, c, out)
        else:
            loop_vars += (out_ta,)

            def body(t, h, c, out, ta):
                h, c, out = step(t, h, c, out)
                return t + 1, h, c, out, ta.write(t, out)
        results = tf.while_loop(lambda t, *_: t < steps, body, loop_vars,
                                maximum_iterations=x.shape[1])
        _, h_last, c_last, last_out = results[:4]
        if self.return_sequences:
            result = tf.transpose(results[4].stack(), [1, 0, 2])
        else:
            result = last_out
        if self.return_state:
            return [result, h_last, c_last]
        return result
