"""Pure-PyTorch references of every hetmm op (STYLE.md rule 2): test oracle, fallback and export path."""
from .optics_labels import optics_labels
from .pts_select import pts_indices
from .window_match import window_match

__all__ = ["optics_labels", "pts_indices", "window_match"]
