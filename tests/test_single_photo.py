"""lmid_tf/speed/single_photo.py: the frozen copy computes what the export's
signatures compute, and only small batches take it."""

import numpy as np
import pytest
import tensorflow as tf

from lmid_tf.speed import single_photo
from tests import conftest


def _signature_inputs(export_path, tiny_dataset, count):
  photos = conftest.dataset_photos(tiny_dataset)[:count]
  points = np.array([[p if p else [0.0, 0.0] for p in landmarks]
                     for _, _, _, landmarks in photos], np.float32)
  visible = np.array([[float(p is not None) for p in landmarks]
                      for _, _, _, landmarks in photos], np.float32)
  return {'images': tf.constant([png for _, png, _, _ in photos]),
          'landmarks': tf.constant(points),
          'visibility': tf.constant(visible)}


@pytest.mark.parametrize('signature', ['serving_default', 'images_only'])
def test_frozen_signature_equals_the_export(desk_export, tiny_dataset,
                                            signature):
  loaded = tf.saved_model.load(desk_export)   # holds the variables
  function = loaded.signatures[signature]
  inputs = _signature_inputs(desk_export, tiny_dataset, 3)
  if signature == 'images_only':
    inputs = {'images': inputs['images']}
  expected = function(**inputs)
  frozen = single_photo.freeze(function)
  for batch in (1, 3):
    part = {k: v[:batch] for k, v in inputs.items()}
    got = frozen(**part)
    assert sorted(got) == sorted(expected)
    for name, value in got.items():
      # The same float32 graph with its variables as constants: rounding
      # apart, the same numbers.
      np.testing.assert_allclose(value.numpy(),
                                 expected[name].numpy()[:batch],
                                 rtol=1e-5, atol=1e-5, err_msg=name)


def test_only_small_batches_take_the_frozen_copy(desk_export, tiny_dataset):
  loaded = tf.saved_model.load(desk_export)
  calls = single_photo.SmallBatchFunction(loaded.signatures['serving_default'])
  inputs = _signature_inputs(desk_export, tiny_dataset,
                             single_photo.SMALL_BATCH + 1)
  large = calls(**inputs)
  assert calls._frozen is None
  small = calls(**{k: v[:1] for k, v in inputs.items()})
  assert calls._frozen is not None
  np.testing.assert_allclose(small['embedding'].numpy(),
                             large['embedding'].numpy()[:1], rtol=1e-5,
                             atol=1e-5)


def test_a_bad_photo_fails_in_the_frozen_copy_as_in_the_export(
    desk_export, tiny_dataset):
  loaded = tf.saved_model.load(desk_export)
  calls = single_photo.SmallBatchFunction(
      loaded.signatures['serving_default'], owner=loaded)
  inputs = _signature_inputs(desk_export, tiny_dataset, 1)
  inputs['images'] = tf.constant([b'not a photo'])
  with pytest.raises(tf.errors.InvalidArgumentError):
    calls(**inputs)
  with pytest.raises(TypeError, match='takes'):
    calls._frozen(images=inputs['images'])
