"""Notebook 05 (an option it mentions). Data augmentation of replayed stacks (notebook 05): random shifts, as in DrQ.

Kostrikov, Yarats and Fergus (2021), "Image augmentation is all you need: regularizing deep
reinforcement learning from pixels" (DrQ): each sampled stack is padded by repeating its edge
pixels, then cut back to its size at a random offset of up to `pad` pixels either way. The
frames of a stack move together, so the motion between them is kept. The compact replay memory
shifts a transition's five frames at once (`FrameReplay(shift=...)`): its observation and next
observation move together, where DrQ shifts them independently, for a quarter of the work
(uint8, one stack of five instead of two float stacks of four). Only the learner sees shifted
frames: the collector and the evaluations play on the frames as rendered.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(pixels: torch.Tensor, pad: int, generator: torch.Generator | None = None):
    """Shift each [C, H, W] image of `pixels` ([..., C, H, W]) by up to `pad` pixels in each
    direction (edge pixels repeated), one random offset per image."""
    if pad == 0:
        return pixels
    *_, channels, height, width = pixels.shape
    images = pixels.reshape(-1, channels, height, width)
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (2, len(images)), generator=generator)
    shifted = torch.empty_like(images)
    # One slice per image: on a CPU, faster than any one-call gather of the same pixels.
    for i, (dy, dx) in enumerate(offsets.T.tolist()):
        shifted[i] = padded[i, :, dy : dy + height, dx : dx + width]
    return shifted.view(pixels.shape)
