"""trajemb: lightweight contrastive embeddings of short road-user trajectories.

The method follows "Contrast & Compress: Learning Lightweight Embeddings for Short Trajectories"
(Vivekanandan, Hubschneider, Zöllner; arXiv 2506.02571). This package holds the typed library; the
Streamlit explorer lives in ``app/`` and the recipes in ``scripts/``.
"""

__version__ = "0.1.0"

from trajemb._moved import install as _install_moved

_install_moved()
