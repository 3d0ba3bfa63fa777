"""Kept for old imports: the checkpoint contract lives in `fer_edge.train.checkpoint`."""

from ..train.checkpoint import CHECKPOINT_FORMAT, REQUIRED, TRAINING_ONLY, load_checkpoint  # noqa: F401
