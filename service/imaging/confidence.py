"""How far to trust a mask: a confidence in 0–1 and, where the mask looks wrong, a warning.

Nothing here knows the truth; it reads the mask alone. A network that has found its subject
draws most of it as certain (alpha near 0 or 255) and leaves a thin soft band at the edge; one
that is unsure leaves wide soft regions. So the confidence is ``exp(−uncertain / subject)``:
the pixels with 5 < alpha < 250 counted against the pixels with alpha ≥ 128. On
../shared/eval it ranks photos by their IoU against the truth with a Spearman correlation of
0.86 for isnet-general-tiny and 0.62 for u2netp (docs/quality.md, "Confidence").

Warnings, the first that applies: ``empty`` (under 0.1% of the pixels are subject), ``full``
(over 98% are), ``fragmented`` (the subject's outline is over 30 times the square root of its
area: many pieces or a ragged edge), ``uncertain`` (confidence under 0.45).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .geometry import CERTAIN_LEVEL

EMPTY_SHARE, FULL_SHARE = 0.001, 0.98
FRAGMENTED_OUTLINE = 30.0
UNCERTAIN_BELOW = 0.45


def mask_confidence(mask: Image.Image) -> tuple[float, str | None]:
    """(confidence 0–1, warning or None) of a mask (mode L, 255 = subject)."""
    alpha = np.asarray(mask)
    subject = alpha >= 128
    count = int(subject.sum())
    if count < EMPTY_SHARE * alpha.size:
        return 0.0, "empty"
    uncertain = int(((alpha > CERTAIN_LEVEL) & (alpha < 255 - CERTAIN_LEVEL)).sum())
    confidence = math.exp(-uncertain / count)
    if count > FULL_SHARE * alpha.size:
        return confidence, "full"
    outline = int((subject[1:] != subject[:-1]).sum() + (subject[:, 1:] != subject[:, :-1]).sum())
    if outline > FRAGMENTED_OUTLINE * math.sqrt(count):
        return confidence, "fragmented"
    return confidence, "uncertain" if confidence < UNCERTAIN_BELOW else None
