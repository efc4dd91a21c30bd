"""Training: phases as data (schedule), exact resume (checkpoints) and
TensorBoard (tensorboard_logging). The loop itself is lmid_tf.train."""
