"""Smooth random fields (value noise) in plain numpy: the demo must not need scipy."""

import numpy as np


def _upsample(coarse: np.ndarray, shape: tuple[int, int], scale: tuple[float, float]) -> np.ndarray:
    """Smoothstep-interpolate a coarse lattice (one node every ``scale`` pixels) to ``shape``."""
    out = coarse
    for axis, (n, step) in enumerate(zip(shape, scale, strict=True)):
        pos = np.arange(n, dtype=np.float64) / step
        i0 = np.floor(pos).astype(np.intp)
        t = pos - i0
        # Smoothstep weights hide the lattice better than linear ones at no extra cost.
        w = (t * t * (3 - 2 * t)).astype(np.float32)
        a = np.take(out, i0, axis=axis)
        b = np.take(out, i0 + 1, axis=axis)
        w = w[:, None] if axis == 0 else w[None, :]
        out = a + (b - a) * w
    return out


def smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    scale: float | tuple[float, float],
    octaves: int = 3,
    persistence: float = 0.5,
) -> np.ndarray:
    """Draw a smooth random field of zero mean and unit standard deviation.

    Args:
        rng: the random generator (consumed deterministically).
        shape: (rows, cols) of the output.
        scale: feature size in pixels of the coarsest octave; a (rows, cols) pair gives
            streaky, anisotropic fields.
        octaves: number of octaves, each half the size and ``persistence`` the amplitude.
        persistence: amplitude ratio between successive octaves.

    Returns:
        A float32 array of ``shape``.

    """
    rows, cols = (scale, scale) if isinstance(scale, int | float) else scale
    field = np.zeros(shape, dtype=np.float32)
    amplitude = 1.0
    for _ in range(octaves):
        step = (max(rows, 1.0), max(cols, 1.0))
        lattice = (int(shape[0] / step[0]) + 2, int(shape[1] / step[1]) + 2)
        coarse = rng.standard_normal(lattice).astype(np.float32)
        field += amplitude * _upsample(coarse, shape, step)
        amplitude *= persistence
        rows, cols = rows / 2, cols / 2
    field -= field.mean()
    std = float(field.std())
    if std > 0:
        field /= std
    return field


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks (the array's sides must be multiples)."""
    rows, cols = array.shape
    blocks = array.reshape(rows // factor, factor, cols // factor, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def block_max(array: np.ndarray, factor: int) -> np.ndarray:
    """Maximum over ``factor`` x ``factor`` blocks (the array's sides must be multiples)."""
    rows, cols = array.shape
    return array.reshape(rows // factor, factor, cols // factor, factor).max(axis=(1, 3))
