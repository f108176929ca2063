"""Brain-MRI phantoms: axial slices with a skull, two hemispheres, ventricles, tissue texture and tumours.

A phantom patient is a 3D arrangement (head shape, ventricles, one tumour) sampled at slice positions
``z`` in [0, 1] (0 = skull base, 1 = vertex). Each slice has three channels in the order of the LGG data
set: pre-contrast, FLAIR and post-contrast. Tumours differ by class in site, shape and contrast:

- ``glioma``: irregular, lobulated mass inside one hemisphere; FLAIR-bright with a FLAIR halo (oedema,
  outside the mask) and a ring of enhancement on post-contrast.
- ``lgg``: lower-grade glioma as in the LGG set; irregular, FLAIR-bright, barely enhancing.
- ``meningioma``: smooth dome attached to the inner skull at the rim; strongly and evenly enhancing.
- ``pituitary``: small, round, on the midline near the skull base (low slices); enhancing.

The tumour is an ellipsoid with a wavy outline, so its cross-section grows and shrinks across the
slices of a patient and is empty outside its extent. ``difficulty`` in [0, 1] raises noise and lowers
tumour contrast, so that a model must learn shapes and sites rather than one bright pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["TUMOUR_KINDS", "Anatomy", "Tumour", "sample_anatomy", "sample_tumour", "render_slice"]

TUMOUR_KINDS = ("lgg", "glioma", "meningioma", "pituitary")

# Mean intensities (pre-contrast, FLAIR, post-contrast) of each tissue, 0-255.
_GREY = np.array([72.0, 92.0, 66.0])
_WHITE_DELTA = np.array([22.0, -14.0, 16.0])
_CSF = np.array([22.0, 14.0, 26.0])
_SCALP = np.array([150.0, 112.0, 140.0])


@dataclass(frozen=True)
class Anatomy:
    """Head geometry and tissue look of one phantom patient (sizes relative to the image side)."""

    center: tuple[float, float]
    half_axes: tuple[float, float]
    angle: float
    ventricle_scale: float
    gain: np.ndarray = field(repr=False)
    texture_seed: int = 0


@dataclass(frozen=True)
class Tumour:
    """A tumour in brain-normalised coordinates: (u, v) in the unit disc of the brain outline at that slice."""

    kind: str
    center: tuple[float, float]
    z_center: float
    z_half: float
    radius: float
    harmonics: np.ndarray = field(repr=False)
    phases: np.ndarray = field(repr=False)

    def radius_at(self, z: float) -> float:
        """In-plane radius on slice ``z`` (0 outside the tumour's extent along z)."""
        t = (z - self.z_center) / self.z_half
        return 0.0 if abs(t) >= 1.0 else self.radius * float(np.sqrt(1.0 - t * t))


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw a head: its size, position, tilt, ventricle size and per-channel scanner gain."""
    return Anatomy(
        center=(0.5 + rng.uniform(-0.03, 0.03), 0.5 + rng.uniform(-0.03, 0.03)),
        half_axes=(rng.uniform(0.30, 0.36), rng.uniform(0.37, 0.43)),
        angle=rng.uniform(-0.15, 0.15),
        ventricle_scale=rng.uniform(0.8, 1.25),
        gain=rng.uniform(0.85, 1.15, size=3),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def sample_tumour(kind: str, rng: np.random.Generator) -> Tumour:
    """Draw a tumour of ``kind`` (one of ``TUMOUR_KINDS``) with a class-typical site, size and outline."""
    if kind not in TUMOUR_KINDS:
        raise ValueError(f"unknown tumour kind {kind!r}; expected one of {', '.join(TUMOUR_KINDS)}")
    n_harm = 5
    if kind in ("lgg", "glioma"):
        side = rng.choice([-1.0, 1.0])
        center = (side * rng.uniform(0.25, 0.55), rng.uniform(-0.45, 0.45))
        radius, z_center, z_half = rng.uniform(0.2, 0.38), rng.uniform(0.35, 0.65), rng.uniform(0.14, 0.26)
        amp = rng.uniform(0.08, 0.22, size=n_harm) / np.arange(1, n_harm + 1) ** 0.5
    elif kind == "meningioma":
        theta = rng.uniform(0, 2 * np.pi)
        rim = rng.uniform(0.78, 0.88)
        center = (rim * np.cos(theta), rim * np.sin(theta))
        radius, z_center, z_half = rng.uniform(0.15, 0.26), rng.uniform(0.4, 0.8), rng.uniform(0.12, 0.22)
        amp = rng.uniform(0.0, 0.05, size=n_harm)
    else:  # pituitary: small, midline, near the skull base (low slices, anterior-inferior in the image)
        center = (rng.uniform(-0.05, 0.05), rng.uniform(0.35, 0.5))
        radius, z_center, z_half = rng.uniform(0.09, 0.15), rng.uniform(0.2, 0.35), rng.uniform(0.1, 0.16)
        amp = rng.uniform(0.0, 0.04, size=n_harm)
    return Tumour(kind, center, z_center, z_half, radius, amp, rng.uniform(0, 2 * np.pi, size=n_harm))


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, cells: int) -> np.ndarray:
    """Zero-mean, unit-range smooth noise: random values on a ``cells``² grid, bicubically upsampled."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    up = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return up / (np.abs(up).max() + 1e-6)


def _brain_coords(size: int, anatomy: Anatomy, z: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Pixel grid mapped to brain-normalised (u, v): the brain outline at slice ``z`` is u² + v² = 1."""
    scale = 0.55 + 0.45 * np.sqrt(max(0.0, 1.0 - ((z - 0.5) / 0.62) ** 2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    x, y = xx - anatomy.center[0], yy - anatomy.center[1]
    c, s = np.cos(anatomy.angle), np.sin(anatomy.angle)
    xr, yr = c * x + s * y, -s * x + c * y
    return xr / (anatomy.half_axes[0] * scale), yr / (anatomy.half_axes[1] * scale), scale


def _tumour_field(u: np.ndarray, v: np.ndarray, tumour: Tumour, z: float) -> np.ndarray | None:
    """Normalised radial distance to the tumour outline on slice ``z`` (< 1 inside), or None if absent."""
    r = tumour.radius_at(z)
    if r <= 0.0:
        return None
    du, dv = u - tumour.center[0], v - tumour.center[1]
    angle = np.arctan2(dv, du)
    k = np.arange(1, len(tumour.harmonics) + 1)[:, None, None]
    wobble = (tumour.harmonics[:, None, None] * np.cos(k * angle + tumour.phases[:, None, None])).sum(0)
    return np.sqrt(du * du + dv * dv) / (r * (1.0 + wobble))


def render_slice(
    size: int,
    z: float,
    anatomy: Anatomy,
    tumour: Tumour | None,
    rng: np.random.Generator,
    difficulty: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one axial slice.

    Args:
        size: side of the square image in pixels.
        z: slice position, 0 (skull base) to 1 (vertex).
        anatomy: the patient's head (``sample_anatomy``).
        tumour: the patient's tumour, or None.
        rng: source of the slice's noise.
        difficulty: 0 (clean, high contrast) to 1 (noisy, faint tumour).

    Returns:
        ``(image, mask)``: image ``(size, size, 3)`` uint8 in the channel order pre-contrast, FLAIR,
        post-contrast; mask ``(size, size)`` uint8 with values 0 and 255.
    """
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must lie in [0, 1], got {difficulty}")
    u, v, scale = _brain_coords(size, anatomy, z)
    theta = np.arctan2(v, u)
    # A slightly irregular outline: frontal and occipital poles, not a perfect ellipse.
    r = np.sqrt(u * u + v * v) / (1.0 + 0.04 * np.cos(2 * theta + anatomy.angle) - 0.03 * np.sin(theta))
    shape = (size, size)
    tex_rng = np.random.default_rng([anatomy.texture_seed, int(z * 1000)])

    img = np.zeros(shape + (3,), np.float32)
    brain = r < 1.0
    # Grey/white matter: a smooth random field, thresholded softly, gives gyri-like folds.
    folds = _smooth_noise(shape, tex_rng, cells=12) + 0.5 * _smooth_noise(shape, tex_rng, cells=28)
    white = np.clip((folds + 0.1 - 0.4 * r) * 3.0, 0.0, 1.0) * (r < 0.85)
    img[brain] = _GREY + white[brain, None] * _WHITE_DELTA
    # Cortex-skull CSF gap, then scalp/skull ring.
    ring = (r >= 1.0) & (r < 1.05)
    img[ring] = _CSF
    thick = 0.08 + 0.02 * np.sin(theta * 3.0)
    skull = (r >= 1.05) & (r < 1.05 + thick)
    img[skull] = _SCALP * (0.85 + 0.15 * _smooth_noise(shape, tex_rng, cells=8)[skull, None])
    # Interhemispheric fissure.
    fissure = brain & (np.abs(u) < 0.018 / scale) & (np.abs(v) < 0.95)
    img[fissure] = 0.5 * img[fissure] + 0.5 * _CSF
    # Lateral ventricles: two crescents near the centre, largest in mid slices.
    vz = anatomy.ventricle_scale * max(0.0, 1.0 - abs(z - 0.55) / 0.25)
    if vz > 0.05:
        for side in (-1.0, 1.0):
            du, dv = (u - side * 0.14) / (0.08 * vz), (v + 0.05) / (0.28 * vz)
            vent = (du * du + dv * dv < 1.0) & brain
            img[vent] = _CSF
    mask = np.zeros(shape, np.uint8)
    if tumour is not None:
        field_ = _tumour_field(u, v, tumour, z)
        if field_ is not None:
            inside = (field_ < 1.0) & (r < 1.0)
            mask[inside] = 255
            img = _paint_tumour(img, field_, inside, tumour.kind, difficulty)
    # Smooth partial-volume edges, then scanner gain, a bias field and Rician-like noise.
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=0.6 * size / 256 + 0.3)
    bias = 1.0 + 0.08 * _smooth_noise(shape, rng, cells=3)
    img *= anatomy.gain[None, None, :] * bias[..., None]
    sigma = 3.0 + 22.0 * difficulty
    noise_re = rng.normal(0.0, sigma, img.shape)
    noise_im = rng.normal(0.0, sigma, img.shape)
    img = np.sqrt((img + noise_re) ** 2 + noise_im**2)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _paint_tumour(img: np.ndarray, field_: np.ndarray, inside: np.ndarray, kind: str, difficulty: float) -> np.ndarray:
    """Add the class-typical tumour contrast to ``img`` (float, modified and returned)."""
    contrast = 1.0 - 0.65 * difficulty
    if kind in ("lgg", "glioma"):
        halo = (field_ >= 1.0) & (field_ < 1.35)
        img[halo, 1] += 22.0 * contrast  # FLAIR oedema around the mass, not part of the mask
        img[inside] += np.array([-14.0, 62.0, -6.0]) * contrast
        if kind == "glioma":  # ring enhancement of a high-grade glioma
            rim = inside & (field_ > 0.72)
            img[rim, 2] += 70.0 * contrast
            core = inside & (field_ < 0.5)
            img[core, 2] -= 18.0 * contrast
    elif kind == "meningioma":
        img[inside] += np.array([-6.0, 20.0, 86.0]) * contrast
    else:  # pituitary
        img[inside] += np.array([8.0, 12.0, 74.0]) * contrast
    return img
