"""Data: the record schema, annotation files, and the one preprocessing path.

records (TFRecord schema, metadata.json) -> pipeline (tf.data: P x K batches)
-> augment (joint image + landmark warps) -> heatmaps (render, NLA, MLA) and
alignment (landmarks onto a template; thin_plate_spline bends them there),
all reached through preprocess, which training, evaluation and serving
share. overlay draws landmarks for people.
"""
