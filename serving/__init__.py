"""serving: imports lmid_tf first, which silences TensorFlow's start-up logs."""

import lmid_tf  # noqa: F401
