"""Search and its measures: every nearest-neighbour search (``search``), FAISS indices, retrieval metrics,
robustness curves and the 2-D layout."""
