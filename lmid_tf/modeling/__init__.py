"""Modeling: the network and what it is trained on.

model (build_model: image [+ heatmaps] -> embedding, logits, heatmaps),
losses (plain functions of tensors), objective (the custom train step that
weighs them), landmark_model (the landmark predictor).
"""
