"""TensorBoard logging across training phases, on one global epoch axis.

Writes to <logs>/: every training loss and the learning rate per epoch;
evaluation top-1/5/10 and mAP every `eval_every` epochs; input heatmaps
beside their reconstructions (stage 2); and at the end, the gallery
embeddings for TensorBoard's projector, with thumbnails and identities.
"""

import os

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins import projector

from lmid_tf.data import overlay
from lmid_tf.evaluation import metrics as metrics_lib
from lmid_tf.evaluation import retrieval


class Monitor(keras.callbacks.Callback):

  def __init__(self, log_dir, embedder, net, data_dir, pre, eval_every,
               eval_batch_size, train_dataset, num_pictures: int = 4):
    super().__init__()
    self.log_dir, self.embedder, self.net = log_dir, embedder, net
    self.data_dir, self.pre = data_dir, pre
    self.eval_every, self.eval_batch_size = eval_every, eval_batch_size
    self.writer = tf.summary.create_file_writer(log_dir)
    self.train_dataset, self.num_pictures = train_dataset, num_pictures
    self.phase, self.phase_start = None, 0
    self._embed = tf.function(
        lambda x: self.embedder(x, training=False)['embedding'])

  def start_phase(self, phase, phase_start_epoch: int):
    self.phase, self.phase_start = phase, phase_start_epoch

  def on_epoch_end(self, epoch, logs=None):
    step = self.phase_start + epoch + 1
    with self.writer.as_default(step=step):
      for name, value in (logs or {}).items():
        tf.summary.scalar(f'train/{name}', value)
      tf.summary.scalar('train/learning_rate', float(
          keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
      if self.eval_every and step % self.eval_every == 0:
        self._evaluate()
        if self.phase.reconstruct:
          self._reconstructions()
    self.writer.flush()

  def _evaluate(self):
    metrics = retrieval.evaluate(lambda x: self._embed(x).numpy(),
                                self.data_dir, self.pre,
                                batch_size=self.eval_batch_size).metrics
    for key in ('top1', 'top5', 'top10', 'mAP'):
      tf.summary.scalar(f'eval/{key}', metrics[key])
    print(f'  eval: {metrics_lib.format_results(metrics)}', flush=True)
    return metrics

  def _reconstructions(self):
    inputs, targets = next(iter(self.train_dataset))
    predicted = self.net(inputs, training=False)['heatmaps'].numpy()
    rows = []
    for i in range(min(self.num_pictures, len(predicted))):
      target = overlay.colourise(np.zeros(predicted.shape[1:3] + (1,)),
                                 targets['heatmaps'][i].numpy(), alpha=1.0)
      output = overlay.colourise(np.zeros(predicted.shape[1:3] + (1,)),
                                 predicted[i], alpha=1.0)
      rows.append(np.concatenate([target, output], axis=1)[..., ::-1])
    tf.summary.image('heatmaps/input_vs_reconstruction', np.stack(rows),
                     max_outputs=self.num_pictures)

  def final(self, result: retrieval.Evaluation, step: int):
    with self.writer.as_default(step=step):
      for key in ('top1', 'top5', 'top10', 'mAP'):
        tf.summary.scalar(f'eval/{key}', result.metrics[key])
    self.writer.flush()
    write_projector(os.path.join(self.log_dir, 'projector'), result.gallery)


def write_projector(directory: str, gallery: dict, thumb: int = 32) -> None:
  """Gallery embeddings, identity names and a thumbnail sprite."""
  os.makedirs(directory, exist_ok=True)
  embeddings = gallery['embeddings'][:8192]  # the projector's sprite limit
  with open(os.path.join(directory, 'metadata.tsv'), 'w') as f:
    for name in gallery['names'][:len(embeddings)]:
      f.write((name.decode() if isinstance(name, bytes) else str(name)) + '\n')
  images = gallery['images'][:len(embeddings)]
  side = int(np.ceil(np.sqrt(len(images))))
  sprite = np.full((side * thumb, side * thumb, 3), 255, np.uint8)
  for i, image in enumerate(images):
    tile = overlay.colourise(image.astype(np.float32) / 255)[..., ::-1]
    tile = tf.image.resize(tile, [thumb, thumb]).numpy().astype(np.uint8)
    r, c = divmod(i, side)
    sprite[r * thumb:(r + 1) * thumb, c * thumb:(c + 1) * thumb] = tile
  tf.io.write_file(os.path.join(directory, 'sprite.png'),
                   tf.io.encode_png(sprite))
  checkpoint = tf.train.Checkpoint(embedding=tf.Variable(embeddings))
  checkpoint.save(os.path.join(directory, 'embedding.ckpt'))
  config = projector.ProjectorConfig()
  embedding = config.embeddings.add()
  embedding.tensor_name = 'embedding/.ATTRIBUTES/VARIABLE_VALUE'
  embedding.metadata_path = 'metadata.tsv'
  embedding.sprite.image_path = 'sprite.png'
  embedding.sprite.single_image_dim.extend([thumb, thumb])
  projector.visualize_embeddings(directory, config)
