"""Ingestion: load files into documents, split them into chunks, and store them."""
