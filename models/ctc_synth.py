"""Synthetic CTC posteriors: what a trained phoneme model would output for a phoneme sequence.

For testing and benchmarking the grammar decoder (:mod:`edge_runtime.asr.decoder`) without a model:
``posteriors(labels, blank, phoneme indices, rng)`` makes ``(steps, labels)`` log-posteriors that are
peaky as CTC models are -- each phoneme a spike of one or two steps, blanks between (always at least
one between two equal phonemes), leading and trailing blank silence -- blurred with noise: each step's
distribution is ``(1 - noise)`` on its label and ``noise`` spread over all labels at random (Dirichlet).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def alignment(
    phonemes: Sequence[int], blank: int, rng: np.random.Generator, lead: int = 5, tail: int = 15
) -> list[int]:
    """A CTC-like frame labelling of ``phonemes``: blanks, 1-2 step spikes, 0-2 blanks between."""
    frames = [blank] * lead
    for i, p in enumerate(phonemes):
        if i and (phonemes[i - 1] == p or rng.random() < 0.5):
            frames += [blank] * int(rng.integers(1, 3))
        frames += [p] * int(rng.integers(1, 3))
    return frames + [blank] * tail


def posteriors(
    frames: Sequence[int], n_labels: int, rng: np.random.Generator, noise: float = 0.2, concentration: float = 0.3
) -> np.ndarray:
    """Log-posteriors ``(len(frames), n_labels)``: ``1 - noise`` on each frame's label, ``noise`` spread
    over all labels (Dirichlet with ``concentration``)."""
    spread = rng.dirichlet(np.full(n_labels, concentration), size=len(frames))
    probs = noise * spread
    probs[np.arange(len(frames)), np.asarray(frames, dtype=int)] += 1.0 - noise
    return np.log(np.maximum(probs, 1e-12)).astype(np.float32)


# phrases near the test grammar (tests/data/asr/commands.txt) that it does not contain
OUT_OF_GRAMMAR = [
    "turn on the garage",
    "play the news",
    "what is the music",
    "open the kitchen light",
    "read me the temperature",
    "call the radio",
    "set the timer to five",
    "lock the window",
    "good morning dad",
    "start the fan",
]
