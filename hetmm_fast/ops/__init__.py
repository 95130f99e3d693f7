"""Public op functions; each validates its inputs and dispatches to a backend (see ``hetmm_fast._backends``)."""
from .optics_labels import optics_labels
from .pts_select import pts_labels, pts_select
from .window_match import pixel_major, window_match

__all__ = ["optics_labels", "pixel_major", "pts_labels", "pts_select", "window_match"]
