"""Semi-supervised batches: a few labeled images cycled beside every unlabeled one.

`SemiSupervisedData(labeled, unlabeled, B_l, B_u, seed)` is a data source for
`tfcore.training.loop` (`steps_per_epoch`, `batch(epoch, step)`), as VAT's 100-label
runs use it: an epoch is one pass over the unlabeled images, while the labeled ones
stream past in their own reshuffled passes.
"""
from __future__ import annotations

import tensorflow as tf

from tfcore.checks import ArgumentError, check_int
from tfcore.data.pipeline import permutation_tensor


class SemiSupervisedData:
    """Batches `{'labeled': (x_l, y_l), 'unlabeled': x_u}` for `tfcore.training.loop`.

    Epoch k = one pass over the unlabeled images in the order
    `tfcore.data.permutation_tensor(N_u, seed, k)` (`steps_per_epoch = N_u //
    unlabeled_batch_size`, the remainder dropped). The labeled images form an endless
    stream of passes, pass m in the order `permutation_tensor(N_l, seed, -2 - m)` (a
    stream disjoint from the unlabeled one); global step g takes its items
    g * B_l ... (g + 1) * B_l - 1 (B_l may exceed N_l). Everything is a function of
    (seed, epoch, step), so a resumed run sees the same batches.

    Args:
      labeled: (x_l [N_l, ...], y_l [N_l]) arrays.
      unlabeled: x_u [N_u, ...].
      labeled_batch_size, unlabeled_batch_size: B_l, B_u.
      seed: data-order seed.
    """

    def __init__(self, labeled, unlabeled, labeled_batch_size: int,
                 unlabeled_batch_size: int, seed: int = 0):
        x_l, y_l = labeled
        if len(x_l) != len(y_l) or len(x_l) == 0:
            raise ArgumentError(f"labeled x and y must be non-empty and of equal length, "
                                f"got {len(x_l)} and {len(y_l)}")
        check_int(labeled_batch_size, "labeled_batch_size", low=1)
        check_int(unlabeled_batch_size, "unlabeled_batch_size", low=1,
                  high=len(unlabeled))
        self.x_l, self.y_l = tf.constant(x_l), tf.constant(y_l)
        self.x_u = tf.constant(unlabeled)
        self.num_labeled, self.num_unlabeled = len(x_l), len(unlabeled)
        self.labeled_batch_size = int(labeled_batch_size)
        self.unlabeled_batch_size = int(unlabeled_batch_size)
        self.batch_size = self.unlabeled_batch_size
        self.steps_per_epoch = self.num_unlabeled // self.unlabeled_batch_size
        self.seed = int(seed)
        # Labeled passes a batch can touch: ceil(B_l / N_l) + 1.
        self._passes = -(-self.labeled_batch_size // self.num_labeled) + 1

    def labeled_indices(self, global_step):
        """int32 [B_l]: the labeled items of global step `global_step`."""
        n, b = self.num_labeled, self.labeled_batch_size
        pos = tf.cast(global_step, tf.int64) * b + tf.range(b, dtype=tf.int64)
        first = pos[0] // n
        perms = tf.stack([permutation_tensor(n, self.seed, -2 - (first + k))
                          for k in range(self._passes)])
        where = tf.stack([pos // n - first, pos % n], axis=1)
        return tf.gather_nd(perms, where)

    def batch(self, epoch, step):
        """The batch of (epoch, step) (Python ints or scalar tensors)."""
        epoch = tf.cast(epoch, tf.int64)
        step = tf.cast(step, tf.int64)
        perm = permutation_tensor(self.num_unlabeled, self.seed, epoch)
        idx_u = perm[step * self.unlabeled_batch_size:
                     (step + 1) * self.unlabeled_batch_size]
        idx_u = tf.ensure_shape(idx_u, [self.unlabeled_batch_size])
        idx_l = self.labeled_indices(epoch * self.steps_per_epoch + step)
        return {"labeled": (tf.gather(self.x_l, idx_l), tf.gather(self.y_l, idx_l)),
                "unlabeled": tf.gather(self.x_u, idx_u)}
