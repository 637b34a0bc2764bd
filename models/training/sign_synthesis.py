"""Training-time image synthesis for the sign classifier: real templates re-shot, camera effects.

Only two real GTSRB images per class are available for training, so each is used as a
*template* of what that real sign looks like: ``real_views`` cuts the sign out of its
crop along the class's plate outline (``plate_masks``), warps it in perspective (scale,
rotation, shear, offset: the ways a detector's box and a camera's angle differ), and
pastes it back on its own surroundings, on another image of the batch or on a random
texture. ``camera_effects`` then re-lights and degrades any batch the ways a roadside
camera does (gamma, gain, colour cast, contrast, blur, low resolution, noise, an
occluder), for the simulator crops as well as the real views.

Everything works on uint8 NHWC BGR batches as ``pipelines.sign_dataset`` stores them (a
sign crop: the square around the sign with a 12 % margin per side, ``operators.signs.
sign_crops``) and draws its randomness from a ``torch.Generator``, so a seeded training
run draws the same views again. PyTorch is imported inside the functions (the ``[train]``
extra).
"""

from __future__ import annotations

import math

import numpy as np

#: Half the side of the sign's box in a crop, in grid_sample coordinates ([-1, 1] across
#: the crop): ``sign_crops`` adds a 12 % margin on each side of the box.
SIGN_HALF = 1.0 / 1.24
#: Classes whose plate is not a disc (GTSRB): warning triangles point up, yield points
#: down, stop is an octagon, priority road a diamond.
_TRIANGLE_UP = frozenset((11, *range(18, 32)))
_SHAPES = {13: "triangle_down", 14: "octagon", 12: "diamond"}
#: The class a sign of each class shows in a mirror (left-right), where it is a GTSRB
#: class: symmetric signs stay, left and right versions swap (curves, turns, keep left /
#: right, straight or left / right). Digits and asymmetric pictograms are left out.
MIRRORED = {
    **{c: c for c in (11, 12, 13, 15, 17, 18, 22, 26, 30, 35)},
    **{a: b for a, b in ((19, 20), (33, 34), (36, 37), (38, 39)) for a, b in ((a, b), (b, a))},
}


def plate_shape(class_id: int) -> str:
    """The outline of GTSRB class ``class_id``'s plate: ``disc``, ``triangle_up``,
    ``triangle_down``, ``octagon`` or ``diamond``."""
    if class_id in _TRIANGLE_UP:
        return "triangle_up"
    return _SHAPES.get(class_id, "disc")


def plate_masks(class_ids: np.ndarray, size: int = 32, *, grow: float = 1.06) -> np.ndarray:
    """(N, size, size) float32 in [0, 1]: where the sign of each class lies in a sign crop.

    The outline of ``plate_shape`` filling the crop's sign box, ``grow`` times larger so
    the rim survives a box that is a little tight; anti-aliased edges.
    """
    import cv2

    scale = 8  # drawn 8x larger, then averaged down: soft edges
    big = size * scale
    c, r = big / 2, big / 2 * SIGN_HALF * grow
    half = math.sqrt(3) / 2  # an equilateral triangle as wide as its box: half its height
    outlines = {  # corners, in units of the (grown) box's half side, y down
        "disc": None,
        "triangle_up": [(0, -half), (1, half), (-1, half)],
        "triangle_down": [(0, half), (1, -half), (-1, -half)],
        "octagon": [(math.cos(a), math.sin(a)) for a in np.radians(22.5 + 45 * np.arange(8))],
        "diamond": [(1, 0), (0, 1), (-1, 0), (0, -1)],
    }
    masks = {}
    for shape, corners in outlines.items():
        canvas = np.zeros((big, big), np.uint8)
        if corners is None:
            cv2.circle(canvas, (int(c), int(c)), int(r), 255, -1)
        else:
            pts = c + r * np.array(corners, np.float64)
            cv2.fillConvexPoly(canvas, np.round(pts).astype(np.int32), 255)
        small = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
        masks[shape] = small.astype(np.float32) / 255.0
    return np.stack([masks[plate_shape(int(k))] for k in class_ids]).astype(np.float32)


def mirror_templates(images: np.ndarray, class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(images, class_ids)``: the left-right mirror of every image whose class is in
    ``MIRRORED``, labelled with its mirrored class: more real templates for those classes
    (a turn-left sign gains the turn-right images)."""
    keep = np.isin(class_ids, list(MIRRORED))
    mirrored = np.ascontiguousarray(images[keep][:, :, ::-1])
    return mirrored, np.array([MIRRORED[int(c)] for c in class_ids[keep]], np.int64)


def real_views(templates, masks, generator):
    """Random new views (uint8 NHWC) of real sign crops ``templates`` (uint8 NHWC).

    ``masks`` (N, H, W) float: the sign's outline in each template (``plate_masks``). Each
    view warps its template by a random homography (sign 0.8-1.3x its usual size in the
    crop, rotation up to 12 degrees, shear, perspective, offset up to 8 % of the crop) and
    puts the sign on its own warped surroundings (40 %), on another view of the batch
    mirrored (30 %) or on a random smooth texture (30 %).
    """
    import torch
    import torch.nn.functional as F

    n, h, w, _ = templates.shape
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    x = templates.permute(0, 3, 1, 2).float()
    m = masks[:, None].float()
    grid = _homography_grid(n, h, w, rand)
    sign = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    cut = F.grid_sample(m, grid, padding_mode="zeros", align_corners=False)
    pick = rand(n)
    other = sign.roll(1, dims=0).flip(3)
    texture = _textures(n, h, w, rand, generator)
    background = torch.where((pick < 0.7)[:, None, None, None], other, texture)
    background = torch.where((pick < 0.4)[:, None, None, None], sign, background)
    out = cut * sign + (1 - cut) * background
    return out.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def _homography_grid(n: int, h: int, w: int, rand):
    """A (n, h, w, 2) sampling grid: output crop -> template, one random homography each."""
    import torch

    scale = (1.0 / (0.8 + 0.5 * rand(n)))[:, None]  # >1 samples a wider area: smaller sign
    angle = (rand(n) - 0.5) * math.radians(24)
    shear = (rand(n) - 0.5) * 0.24
    aspect = 1.0 + (rand(n) - 0.5) * 0.2
    cos, sin = torch.cos(angle), torch.sin(angle)
    H = torch.zeros(n, 3, 3)
    H[:, 0, 0], H[:, 0, 1] = cos * aspect, -sin + shear
    H[:, 1, 0], H[:, 1, 1] = sin, cos / aspect
    H[:, :2, :2] *= scale[:, :, None]
    H[:, :2, 2] = (rand(n, 2) - 0.5) * 0.32
    H[:, 2, :2] = (rand(n, 2) - 0.5) * 0.3
    H[:, 2, 2] = 1.0
    ys = (torch.arange(h) + 0.5) / h * 2 - 1
    xs = (torch.arange(w) + 0.5) / w * 2 - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([xx, yy, torch.ones_like(xx)], -1).reshape(1, -1, 3)
    src = base @ H.transpose(1, 2)
    return (src[..., :2] / src[..., 2:].clamp(min=0.2)).reshape(n, h, w, 2)


def _textures(n: int, h: int, w: int, rand, generator):
    """(n, 3, h, w) float backgrounds: a 4x4 grid of muted random colours, smoothly blended."""
    import torch
    import torch.nn.functional as F

    colour = rand(n, 3, 4, 4)
    grey = colour.mean(dim=1, keepdim=True)
    saturation = 0.6 * rand(n, 1, 1, 1)
    coarse = (grey + (colour - grey) * saturation) * 255 * rand(n, 1, 1, 1)
    smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return smooth + torch.randn(n, 3, h, w, generator=generator) * 6


def camera_effects(images, generator):
    """Random camera effects on a uint8 NHWC batch (returns uint8 NHWC): gamma, exposure,
    colour cast, lowered contrast, blur (40 %), low resolution (30 %), sensor noise and an
    occluding patch at an edge (15 %)."""
    import torch
    import torch.nn.functional as F

    n, h, w, _ = images.shape
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    x = images.permute(0, 3, 1, 2).float() / 255.0
    x = x.clamp(min=1e-4) ** torch.exp((rand(n, 1, 1, 1) - 0.5) * 1.0)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * (0.6 + 0.5 * rand(n, 1, 1, 1))
    x = x * (0.4 + 1.0 * rand(n, 1, 1, 1)) * (0.85 + 0.3 * rand(n, 3, 1, 1))
    x = (x + (rand(n, 1, 1, 1) - 0.4) * 0.12) * 255
    blur = rand(n) < 0.4
    if blur.any():
        x[blur] = _gaussian_blur(x[blur], 0.5 + rand(1).item())
    low = rand(n) < 0.3
    if low.any():
        side = int(10 + rand(1).item() * 14)
        small = F.interpolate(x[low], size=(side, side), mode="area")
        x[low] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    x = x + torch.randn(x.shape, generator=generator) * rand(n, 1, 1, 1) * 8
    occluded = torch.nonzero(rand(n) < 0.15).flatten().tolist()
    for i in occluded:
        ph, pw = (int(4 + 8 * rand(1).item()) for _ in range(2))
        top = 0 if rand(1).item() < 0.5 else h - ph
        left = int(rand(1).item() * (w - pw))
        x[i, :, top : top + ph, left : left + pw] = rand(3, 1, 1) * 200
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def _gaussian_blur(x, sigma: float):
    """``x`` (N, C, H, W) blurred by a Gaussian of ``sigma`` pixels (5-tap, edges replicated)."""
    import torch
    import torch.nn.functional as F

    taps = torch.exp(-(torch.arange(-2, 3, dtype=torch.float32) ** 2) / (2 * sigma**2))
    taps = taps / taps.sum()
    c = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, taps.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)
