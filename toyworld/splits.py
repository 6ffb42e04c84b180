"""Train and evaluation splits: each caption belongs to exactly one, by a hash of its text.

One caption in ten is held out for evaluation. The toy models never see an evaluation
caption's render in training, so the evaluation split measures composition, not recall.
"""

from __future__ import annotations

import hashlib

EVAL_FRACTION_DENOMINATOR = 10


def is_eval_caption(caption: str) -> bool:
    digest = hashlib.sha256(("toyworld-split:" + caption).encode()).digest()
    return int.from_bytes(digest[:4], "little") % EVAL_FRACTION_DENOMINATOR == 0


def is_train_caption(caption: str) -> bool:
    return not is_eval_caption(caption)
