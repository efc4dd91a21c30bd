"""The review desk: a web app to import, annotate and review photos against
the catalogue database (python -m review; docs/REVIEW_DESK.md)."""
