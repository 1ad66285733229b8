"""Byzantine attacks: pure functions over arrays that compute malicious updates."""

from fltorrent.attacks.vectors import (
    alie,
    alie_z_max,
    gaussian_noise,
    ipm,
    min_max,
    scale,
    sign_flip,
)

__all__ = ["alie", "alie_z_max", "gaussian_noise", "ipm", "min_max", "scale", "sign_flip"]
