"""Evaluation: distances and ranking metrics (metrics), the one embedding loop
(embedding), and k-reciprocal re-ranking (reranking)."""
