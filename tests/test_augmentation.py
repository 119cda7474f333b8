"""The random shifts of replayed stacks (DrQ), against shifts computed by hand."""

import torch

from helpers.augmentation import random_shift


def test_a_shift_is_the_padded_image_cut_at_the_drawn_offset():
    image = torch.arange(9.0).view(1, 1, 3, 3)
    # torch.randint(0, 3, (2, 1, 1)) with this seed draws dy = 2, dx = 0: the window starts
    # two rows down and at the left edge of the image padded by one repeated pixel.
    shifted = random_shift(image, 1, torch.Generator().manual_seed(0))
    assert shifted.tolist() == [[[[3.0, 3.0, 4.0], [6.0, 6.0, 7.0], [6.0, 6.0, 7.0]]]]


def test_the_frames_of_a_stack_move_together_and_stacks_move_apart():
    frames = torch.rand(1, 1, 16, 16).expand(6, 4, 16, 16)  # six stacks of one frame, 4 times
    shifted = random_shift(frames, 4, torch.Generator().manual_seed(1))
    assert shifted.shape == frames.shape
    for stack in shifted:
        assert all(torch.equal(stack[0], frame) for frame in stack[1:])
    assert len({tuple(stack[0].flatten().tolist()) for stack in shifted}) > 1


def test_no_pad_changes_nothing():
    pixels = torch.rand(2, 3, 4, 8, 8)
    assert random_shift(pixels, 0) is pixels
