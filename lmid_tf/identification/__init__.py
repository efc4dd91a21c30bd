"""Identification: the catalogue database, search, reviews, imports, exports."""
