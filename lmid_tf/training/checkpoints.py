"""Training checkpoints that hold everything the next step depends on.

A checkpoint holds the network's weights (batch-norm statistics included),
the class centres, the slots and iteration counters of both optimizers
(Adam for the network, SGD for the centres) and the schedule position
(phase, epoch). The input pipeline needs no state of its own: batch n is a
pure function of (seed, n), and n follows from the position. So a run
resumed from its last checkpoint takes exactly the steps the uninterrupted
run would have taken.

tf.train.CheckpointManager writes a checkpoint's files first and then
replaces its index file atomically: a kill at any moment leaves the last
complete checkpoint readable.
"""

import hashlib

import numpy as np
import tensorflow as tf

POSITION_KEY = 'position/.ATTRIBUTES/VARIABLE_VALUE'
KEEP = 2


def read_position(directory: str) -> tuple:
  """(phase_index, epoch) to resume at; (0, 0) when there is no checkpoint."""
  path = tf.train.latest_checkpoint(directory)
  if path is None:
    return 0, 0
  phase, epoch = tf.train.load_variable(path, POSITION_KEY)
  return int(phase), int(epoch)


class Checkpoints:
  """Saves into `directory` and resumes from `read_from` (the chief's folder;
  the same unless this process is a non-chief worker, which saves to a
  scratch folder because saving is collective but only the chief's copy is
  kept)."""

  def __init__(self, directory: str, read_from: str = ''):
    self.directory = directory
    self.read_from = read_from or directory
    # Made outside any strategy scope: one plain variable, never mirrored.
    self.position = tf.Variable([0, 0], dtype=tf.int64, trainable=False)
    self.manager = None

  def attach(self, trainer) -> None:
    """Tracks this phase's trainer (call after compile: each phase has its
    own optimizers)."""
    checkpoint = tf.train.Checkpoint(
        net=trainer.net, centers=trainer.centers, optimizer=trainer.optimizer,
        center_optimizer=trainer.center_optimizer, position=self.position)
    self.manager = tf.train.CheckpointManager(checkpoint, self.directory,
                                              max_to_keep=KEEP)

  def restore(self, trainer, epoch: int) -> None:
    """Loads the latest checkpoint into `trainer`. At a phase's first epoch
    the optimizers are the new phase's, so only the model state is read."""
    path = tf.train.latest_checkpoint(self.read_from)
    if path is None:
      raise ValueError(f'{self.read_from}: no checkpoint to resume from')
    if epoch == 0:
      checkpoint = tf.train.Checkpoint(net=trainer.net, centers=trainer.centers,
                                       position=self.position)
      checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
    else:
      self.manager.checkpoint.restore(path).assert_existing_objects_matched()

  def save(self, phase_index: int, epoch: int, number: int) -> str:
    """Saves with the schedule position to resume at; `number` (epochs done
    over the whole schedule) names the file and only grows."""
    self.position.assign([phase_index, epoch])
    return self.manager.save(checkpoint_number=number)


def fingerprint(weights) -> str:
  """A short hash of a list of weight arrays: equal on every worker of a
  run, and between an interrupted-and-resumed run and an uninterrupted one."""
  digest = hashlib.sha256()
  for w in weights:
    digest.update(np.ascontiguousarray(np.asarray(w)).tobytes())
  return digest.hexdigest()[:16]
