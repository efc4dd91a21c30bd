"""The desk's pages, one module each."""
