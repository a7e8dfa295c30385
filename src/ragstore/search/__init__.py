"""Search helpers: ranked-list fusion (RRF, weighted) and diversification (MMR)."""
