"""Simulated micrographs with exact ground truth: projected 3-D molecules, CTF, noise, contaminants.

Pipeline of one micrograph (:func:`simulate_micrograph`):

1. **Scene.** Optionally a carbon edge; particle centres by random sequential addition (minimum distance,
   away from the carbon); then unlabelled contaminants placed clear of the particles: ice blobs,
   filaments (MAVS-like), aggregates and broken particles.
2. **Projection.** Each molecule is a procedural 3-D density on a voxel grid (built once, cached), kept
   as a weighted point cloud centred on its centre of mass. Every particle is the point cloud after a
   uniformly random 3-D rotation (or a side / top view), projected along the beam by bilinear
   splatting; a Gaussian of half the voxel spacing (applied in Fourier space) makes the voxels a
   smooth density. Splatting keeps the first moment exactly, so the label, the particle's true centre,
   is the centroid of its noise-free projection.
3. **Imaging** after Baxter et al. (2009, J Struct Biol 166:126): Gaussian *structural* noise is added
   to the projection (SNR 1.4 before the CTF), the CTF with defocus, spherical aberration, amplitude
   contrast and B-factor envelope is applied (with ``defocus_spread_um``, each particle at its own height
   in the ice: one CTF per layer of the ice), then Gaussian *shot/digitisation* noise brings the SNR to
   0.05. The noise level ``k`` multiplies both noise SDs, so ``SNR = 0.05 / k**2`` and a requested SNR
   sets ``k = sqrt(0.05 / snr)``.

SNR definition: signal power = variance of the noise-free, CTF-applied image of the labelled particles
over the pixels within ``diameter_px / 2`` of a label; noise power = variance of the added noise (both
terms) over the micrograph. A particle-free micrograph (``empty=True``) is the same scene with the
particles left out, at the noise level its particle-bearing twin would have.

Frames: ``image[y, x]``; a centre ``(x, y)`` is in micrograph pixels (x = column, y = row), origin at the
centre of pixel (0, 0), as everywhere in deeppick. Each molecule's symmetry (or long) axis is its z axis:
side views put that axis in the image plane, top views along the beam.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.fft
import scipy.ndimage

from .errors import ConfigError
from .io import atomic_write_text, make_picks, write_micrograph, write_picks

VIEWS = ("random", "side", "top", "side-top")
CONTAMINANTS = ("ice", "carbon", "filaments", "aggregates", "broken")
SPLIT_NAMES = ("train", "valid", "test")
_FFT_WORKERS = max(1, min(2, os.cpu_count() or 1))
# Baxter et al. 2009: structural noise at SNR 1.4 before the CTF, final SNR 0.05 after shot noise.
_BAXTER_STRUCTURAL_SNR = 1.4
_BAXTER_FINAL_SNR = 0.05


# --------------------------------------------------------------------------------------------------
# molecules


def _polar(x, y):
    return np.hypot(x, y), np.arctan2(y, x)


def _klh_like(x, y, z):
    # KLH didecamer: hollow cylinder ~35 nm wide, 40 nm long; 6 tiers give the striped side views,
    # D5 subunits the azimuthal texture, the collars at both ends the inner ring of top views.
    r, theta = _polar(x, y)
    inside = np.abs(z) <= 1.0
    wall = inside & (r >= 0.62) & (r <= 0.85)
    tiers = 0.45 + 0.55 * np.cos(3 * np.pi * z) ** 2
    subunits = 0.8 + 0.2 * np.cos(10 * theta)
    collar = inside & (np.abs(z) >= 0.8) & (r >= 0.3) & (r < 0.62)
    return wall * tiers * subunits + 0.8 * collar


def _ring(x, y, z):
    # Prx3 dodecamer: a flat toroid of six dimers (12 lobes), ~15 nm across, ~7 nm inner hole.
    r, theta = _polar(x, y)
    half_width = 0.26 * (1 + 0.12 * np.cos(12 * theta))
    inside = ((r - 0.72) / half_width) ** 2 + (z / 0.38) ** 2 <= 1
    return inside * (0.7 + 0.3 * np.cos(12 * theta))


def _apoferritin_like(x, y, z):
    # Apoferritin: 12 nm shell, 8 nm cavity, octahedral (432); pores on the 3-fold axes.
    r = np.sqrt(x * x + y * y + z * z)
    shell = (r >= 0.65) & (r <= 1.0)
    r4 = np.maximum(r, 1e-6) ** 4
    cubic = (x ** 4 + y ** 4 + z ** 4) / r4  # 1 on the 4-fold axes, 1/3 on the 3-fold axes
    pores = cubic < 0.37
    return shell * np.where(pores, 0.2, 0.7 + 0.3 * cubic)


def _bell(x, y, z):
    # TcdA1 prepore: a C5 bell-shaped shell open at the bottom with a central channel poking out on top.
    r, theta = _polar(x, y)
    t = (z + 0.8) / 1.6  # 0 at the mouth, 1 at the dome
    r_out = 0.38 + 0.5 * np.clip(1 - t, 0, 1) ** 1.6
    body = (t >= 0) & (t <= 1) & (r <= r_out)
    shell = body & ((r >= r_out - 0.18) | (t >= 0.88))
    channel = (r <= 0.1) & (z >= -0.6) & (z <= 1.0)
    return shell * (0.75 + 0.25 * np.cos(5 * theta)) + channel * 1.0


def _elongated(x, y, z):
    # Two unequal lobes joined by a neck along z (asymmetric: the centre of mass is off the midpoint).
    big = (x / 0.5) ** 2 + (y / 0.45) ** 2 + ((z + 0.42) / 0.55) ** 2 <= 1
    small = (x / 0.38) ** 2 + (y / 0.36) ** 2 + ((z - 0.6) / 0.4) ** 2 <= 1
    neck = (np.hypot(x, y) <= 0.2) & (z > -0.2) & (z < 0.4)
    return (big | small | neck) * 1.0


def _globular(x, y, z):
    # A lumpy, slightly asymmetric ellipsoid with internal density variation (no symmetry).
    r = np.sqrt((x / 0.82) ** 2 + (y / 0.9) ** 2 + (z / 0.95) ** 2)
    _, theta = _polar(x, y)
    surface = 1 + 0.06 * np.sin(3 * theta) * np.cos(2.5 * z)
    body = r <= surface
    domain = (x - 0.45) ** 2 + (y - 0.35) ** 2 + (z - 0.3) ** 2 <= 0.35 ** 2
    texture = 0.8 + 0.2 * np.cos(4 * x) * np.cos(3 * y + 1) * np.cos(2 * z)
    return (body | domain) * texture


@dataclass(frozen=True)
class Molecule:
    """A procedural molecule: density on ``[-1, 1]^3`` (largest dimension spans 2), axis along z."""

    name: str
    description: str
    diameter_a: float  # default largest dimension in Å
    symmetry: str
    density: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] = field(repr=False)


MOLECULES: dict[str, Molecule] = {m.name: m for m in (
    Molecule("klh-like", "hollow cylinder with striated walls (keyhole limpet hemocyanin didecamer)",
             400.0, "D5", _klh_like),  # KLH: ~35 nm × 40 nm cylinder
    Molecule("ring", "flat 12-lobed ring (Prx3 dodecamer)", 150.0, "D6", _ring),  # Prx3 ring ~15 nm
    Molecule("apoferritin-like", "hollow sphere with 3-fold pores (apoferritin)", 120.0, "O",
             _apoferritin_like),  # apoferritin shell 12 nm
    Molecule("bell", "bell-shaped shell with a central channel (TcdA1 prepore)", 240.0, "C5",
             _bell),  # TcdA1 pentamer ~24 nm long
    Molecule("elongated", "two unequal lobes joined by a neck", 200.0, "C1", _elongated),
    Molecule("globular", "lumpy asymmetric globule", 160.0, "C1", _globular),  # β-galactosidase-sized
)}


def molecule_names() -> list[str]:
    """Names of the built-in molecules (``proc-N`` names a procedural one besides, :func:`procedural_molecule`)."""
    return list(MOLECULES)


def _molecule(name: str) -> Molecule:
    if name.startswith(PROCEDURAL_PREFIX) and name[len(PROCEDURAL_PREFIX):].isdigit():
        return procedural_molecule(int(name[len(PROCEDURAL_PREFIX):]))
    try:
        return MOLECULES[name]
    except KeyError:
        raise ConfigError(f"unknown molecule '{name}'; use one of {', '.join(MOLECULES)}, "
                          f"{PROCEDURAL_PREFIX}N (a procedural one) or 'mix'") from None


PROCEDURAL_PREFIX = "proc-"


@lru_cache(maxsize=64)
def procedural_molecule(seed: int) -> Molecule:
    """One of a family of random molecules, ``proc-<seed>``: 2–6 lobes of random size in the unit ball,
    repeated about z with a random cyclic symmetry (C1–C8), stretched along z, hollow or filled.

    A zoo of many of them shows a general model shapes, symmetries and textures that no hand-made
    molecule does; the same seed gives the same molecule.
    """
    rng = np.random.default_rng([seed, 2024])
    order = int(rng.integers(1, 9))
    n_lobes = int(rng.integers(2, 7))
    centres = rng.normal(size=(n_lobes, 3))
    centres *= (rng.uniform(0.0, 0.6, n_lobes) / np.maximum(np.linalg.norm(centres, axis=1), 1e-9))[:, None]
    radii = rng.uniform(0.2, 0.5, n_lobes)
    stretch = float(rng.uniform(0.6, 1.5))
    hollow = bool(rng.random() < 0.3)
    angles = 2 * np.pi * np.arange(order) / order
    lobes = [(c[0] * np.cos(a) - c[1] * np.sin(a), c[0] * np.sin(a) + c[1] * np.cos(a), c[2], r)
             for c, r in zip(centres, radii) for a in angles]
    texture_phase = rng.uniform(0, 2 * np.pi, 3)

    def raw(x, y, z):
        z = z / stretch
        field = np.zeros_like(x)
        for cx, cy, cz, r in lobes:
            field = np.maximum(field, np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * (r / 2) ** 2)))
        inside = field > 0.3
        if hollow:
            inside &= field < 0.85
        texture = 0.8 + 0.2 * np.cos(5 * x + texture_phase[0]) * np.cos(5 * y + texture_phase[1]) \
            * np.cos(5 * z + texture_phase[2])
        return inside * texture

    # scaled so that its farthest density lies at radius 1, as every molecule's does
    c = np.linspace(-1.6, 1.6, 48, dtype=np.float32)
    zz, yy, xx = np.meshgrid(c, c, c, indexing="ij")
    reach = float(np.sqrt(xx ** 2 + yy ** 2 + zz ** 2)[raw(xx, yy, zz) > 0].max())

    def density(x, y, z):
        return raw(x * reach, y * reach, z * reach)

    kind = "hollow" if hollow else "filled"
    return Molecule(f"{PROCEDURAL_PREFIX}{seed}", f"procedural: {n_lobes} lobes, C{order}, {kind}, z × {stretch:.2f}",
                    200.0, f"C{order}", density)


_GRID_HALF_EXTENT = 1.1  # the voxel grid covers [-1.1, 1.1]^3: the ring and globule reach just past 1


def molecule_density(name: str, grid_n: int = 48) -> np.ndarray:
    """The molecule's 3-D density on a ``grid_n``³ voxel grid over ``[-1.1, 1.1]³`` (``volume[z, y, x]``)."""
    c = (np.arange(grid_n, dtype=np.float32) + 0.5) / grid_n * 2 * _GRID_HALF_EXTENT - _GRID_HALF_EXTENT
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return np.asarray(_molecule(name).density(x, y, z), dtype=np.float32)


@lru_cache(maxsize=32)
def _point_cloud(name: str, grid_n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Occupied voxels as points (N, 3: x, y, z; centre of mass at 0, grid units of the half-extent)
    with weights = density × voxel volume, and the bounding radius (all normalised: diameter 2)."""
    volume = molecule_density(name, grid_n)
    zi, yi, xi = np.nonzero(volume > 0)
    weights = volume[zi, yi, xi].astype(np.float64)
    step = 2 * _GRID_HALF_EXTENT / grid_n
    points = (np.stack([xi, yi, zi], axis=1) + 0.5) * step - _GRID_HALF_EXTENT
    points -= np.average(points, axis=0, weights=weights)
    bound = float(np.sqrt((points ** 2).sum(axis=1)).max()) + step
    points.setflags(write=False)
    weights = (weights * step ** 3).astype(np.float32)
    weights.setflags(write=False)
    return points.astype(np.float32), weights, bound


def _grid_n(diameter_px: float) -> int:
    # Voxels ~1.6 px apart (finer buys nothing after the σ = spacing/2 blur); 48³ caps the cost.
    return int(np.clip(round(2 * _GRID_HALF_EXTENT * diameter_px / 2 / 1.6), 20, 48))


def random_rotations(n: int, rng: np.random.Generator, views: str = "random") -> np.ndarray:
    """``n`` rotation matrices (n, 3, 3): uniform on SO(3), or side / top views of the molecule's z axis.

    Side views put the z axis in the image plane (random in-plane angle and spin about the axis); top
    views put it along the beam, pointing either way; ``side-top`` draws each particle's view from the
    two, side and top alike likely (KLH on a grid).
    """
    if views == "random":
        q = rng.standard_normal((n, 4))
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        w, x, y, z = q.T
        return np.stack([
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
        ], axis=1)
    if views not in VIEWS:
        raise ConfigError(f"unknown views '{views}'; use one of {', '.join(VIEWS)}")
    spin = rng.uniform(0, 2 * np.pi, n)
    in_plane = rng.uniform(0, 2 * np.pi, n)
    if views == "side":
        tilt = np.full(n, np.pi / 2)
    elif views == "top":
        tilt = np.pi * rng.integers(0, 2, n)
    else:
        tilt = np.where(rng.random(n) < 0.5, np.pi / 2, np.pi * rng.integers(0, 2, n))
    return np.einsum("nij,njk,nkl->nil", _rot_z(in_plane), _rot_x(tilt), _rot_z(spin))


def _rot_z(a):
    c, s, o, i = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, -s, o], -1), np.stack([s, c, o], -1), np.stack([o, o, i], -1)], axis=1)


def _rot_x(a):
    c, s, o, i = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([i, o, o], -1), np.stack([o, c, -s], -1), np.stack([o, s, c], -1)], axis=1)


# --------------------------------------------------------------------------------------------------
# parameters


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines a simulated micrograph except the random seed.

    The cheap default (512×512 px, 20 globular particles of ~73 px, SNR 0.1) takes well under a second.
    """

    molecule: str = "globular"
    size_px: int | tuple[int, int] = 512  # side, or (rows, columns)
    pixel_size_a: float = 2.2  # the KLH benchmark's pixel size (Zhu et al. 2004)
    diameter_px: float | None = None  # None → the molecule's diameter_a / pixel_size_a
    views: str = "random"  # "random" (uniform SO(3)), "side" (KLH bake-off), "top" or "side-top"
    n_particles: int = 20
    density: float | None = None  # fraction of the area covered by particle discs; overrides n_particles
    min_distance_px: float | None = None  # None → diameter_px: nominal discs do not overlap
    snr: float | None = 0.1  # target SNR; crYOLO-style simulations span 0.01–1 (Baxter et al.: 0.05 typical)
    noise_level: float | None = None  # k; if set, snr must be None. k = 1 is Baxter's SNR 0.05
    defocus_um: tuple[float, float] = (1.0, 3.0)  # per-micrograph uniform range, underfocus positive
    astigmatism_um: float = 0.0  # defocus difference of the two axes, random angle
    # ours: the particles sit at different heights in the ice, so each has its own defocus, drawn uniformly
    # within this range (µm, about the ice's thickness) around the micrograph's; 0: one defocus for all
    defocus_spread_um: float = 0.0
    voltage_kv: float = 300.0  # Titan Krios, the common instrument
    cs_mm: float = 2.7  # Krios spherical aberration
    amplitude_contrast: float = 0.1  # RELION's default for cryo samples
    bfactor_a2: float = 100.0  # typical image B-factor (50–150 Å²)
    contaminants: tuple[str, ...] = CONTAMINANTS  # kinds drawn (never labelled)
    contamination: float = 1.0  # multiplies the expected contaminant counts below
    empty: bool = False  # leave the particles out (contaminants and noise only)
    # ours: a background ramp across the micrograph of up to this many noise SDs (drawn per micrograph, in a
    # random direction: ice thinner on one side of the hole); 0: none
    ice_gradient: float = 0.0
    detector_blur_px: float = 0.0  # ours: a Gaussian blur of the finished image, σ px (the detector's MTF)

    def __post_init__(self):
        if isinstance(self.size_px, (int, np.integer)):
            object.__setattr__(self, "size_px", (int(self.size_px), int(self.size_px)))
        object.__setattr__(self, "size_px", tuple(int(s) for s in self.size_px))
        object.__setattr__(self, "defocus_um", tuple(float(d) for d in self.defocus_um))
        object.__setattr__(self, "contaminants", tuple(self.contaminants))
        _molecule(self.molecule)
        checks = [
            (len(self.size_px) == 2 and min(self.size_px) >= 32, "size_px", self.size_px,
             "give at least 32 px (--size)"),
            (self.pixel_size_a > 0, "pixel_size_a", self.pixel_size_a, "give Å per pixel > 0 (--pixel-size-a)"),
            (self.diameter_px is None or 4 <= self.diameter_px <= min(self.size_px) / 2, "diameter_px",
             self.diameter_px, f"give 4 to {min(self.size_px) // 2} px, at most half the micrograph (--diameter-px)"),
            (self.views in VIEWS, "views", self.views, f"use one of {', '.join(VIEWS)} (--views)"),
            (self.n_particles >= 0, "n_particles", self.n_particles, "give a count >= 0 (--particles)"),
            (self.density is None or 0 <= self.density <= 0.5, "density", self.density,
             "give a covered fraction between 0 and 0.5 (--density)"),
            (self.min_distance_px is None or self.min_distance_px >= 0, "min_distance_px", self.min_distance_px,
             "give a distance >= 0 (--min-distance-px)"),
            (self.snr is None or self.snr > 0, "snr", self.snr, "give a positive SNR, e.g. 0.05 (--snr)"),
            (self.noise_level is None or self.noise_level >= 0, "noise_level", self.noise_level,
             "give k >= 0 (--noise-level)"),
            ((self.snr is None) != (self.noise_level is None), "snr/noise_level", (self.snr, self.noise_level),
             "give exactly one of --snr and --noise-level"),
            (len(self.defocus_um) == 2 and 0 < self.defocus_um[0] <= self.defocus_um[1] <= 20, "defocus_um",
             self.defocus_um, "give MIN,MAX underfocus in µm with 0 < MIN <= MAX <= 20 (--defocus-um)"),
            (self.astigmatism_um >= 0, "astigmatism_um", self.astigmatism_um, "give >= 0 µm"),
            (0 <= self.defocus_spread_um <= 1, "defocus_spread_um", self.defocus_spread_um,
             "give the ice's thickness in µm, 0 to 1 (--defocus-spread-um)"),
            (self.voltage_kv > 0, "voltage_kv", self.voltage_kv, "give the voltage in kV, e.g. 300 (--voltage-kv)"),
            (self.cs_mm >= 0, "cs_mm", self.cs_mm, "give Cs in mm >= 0, e.g. 2.7 (--cs-mm)"),
            (0 <= self.amplitude_contrast < 1, "amplitude_contrast", self.amplitude_contrast,
             "give a fraction in [0, 1), e.g. 0.1 (--amplitude-contrast)"),
            (self.bfactor_a2 >= 0, "bfactor_a2", self.bfactor_a2, "give B >= 0 Å² (--bfactor)"),
            (set(self.contaminants) <= set(CONTAMINANTS), "contaminants", self.contaminants,
             f"use some of {', '.join(CONTAMINANTS)} or none (--contaminants)"),
            (self.contamination >= 0, "contamination", self.contamination, "give a factor >= 0 (--contamination)"),
            (self.ice_gradient >= 0, "ice_gradient", self.ice_gradient, "give noise SDs >= 0 (--ice-gradient)"),
            (self.detector_blur_px >= 0, "detector_blur_px", self.detector_blur_px,
             "give σ px >= 0 (--detector-blur)"),
        ]
        for ok, name, value, advice in checks:
            if not ok:
                raise ConfigError(f"simulation parameter {name} = {value!r} cannot work; {advice}")

    @property
    def shape_px(self) -> tuple[int, int]:
        """(rows, columns)."""
        return self.size_px

    @property
    def resolved_diameter_px(self) -> float:
        """The particle diameter in px (largest dimension of the molecule)."""
        if self.diameter_px is not None:
            return float(self.diameter_px)
        return _molecule(self.molecule).diameter_a / self.pixel_size_a

    @property
    def resolved_n_particles(self) -> int:
        """Particles per micrograph, from ``density`` when given."""
        if self.density is None:
            return self.n_particles
        d = self.resolved_diameter_px
        return int(round(self.density * self.size_px[0] * self.size_px[1] / (np.pi * d * d / 4)))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["size_px"] = list(self.size_px)
        data["defocus_um"] = list(self.defocus_um)
        data["contaminants"] = list(self.contaminants)
        return data


# Expected contaminant counts per 2048×2048 px micrograph (scaled by area; Poisson), at contamination 1.
# Chosen so that a typical micrograph shows one or two of each, as in screening data sets.
_CONTAMINANT_RATE = {"ice": 1.0, "filaments": 1.0, "aggregates": 1.5}
_BROKEN_FRACTION = 0.1  # broken particles per intact particle
_CARBON_PROBABILITY = 0.3  # chance a micrograph shows the hole's carbon edge
_REFERENCE_AREA_PX = 2048 * 2048
_CARBON_EDGE_PX = 6.0  # the film's soft edge reaches this far into the hole


@dataclass
class SimulatedMicrograph:
    """One simulated micrograph and its ground truth."""

    image: np.ndarray  # float32 (rows, columns)
    centres_xy: np.ndarray  # (n, 2) float64 particle centres (x = column, y = row), micrograph px
    rotations: np.ndarray  # (n, 3, 3) the particles' rotations (molecule frame → image frame)
    snr: float  # achieved SNR (definition in the module docstring)
    noise_level: float  # k
    defocus_um: float
    diameter_px: float
    pixel_size_a: float
    molecule: str
    contaminants: dict[str, int]  # counts drawn per kind (carbon: 0 or 1)
    projection: np.ndarray | None = None  # noise-free projection of the labelled particles, no CTF
    signal: np.ndarray | None = None  # the same after the CTF
    contaminant_signal: np.ndarray | None = None  # noise-free CTF-applied contaminants
    contaminant_mask: np.ndarray | None = None  # bool, where contaminants have density
    particle_defocus_um: np.ndarray | None = None  # (n,) each particle's defocus (defocus_spread_um)
    broken_xy: np.ndarray | None = None  # (m, 2) where the broken particles' remaining density is centred

    def picks(self, micrograph: str):
        """The labels as a deeppick picks table for the micrograph named ``micrograph``."""
        return make_picks(micrograph, self.centres_xy[:, 0], self.centres_xy[:, 1])


# --------------------------------------------------------------------------------------------------
# imaging


def electron_wavelength_a(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å."""
    volts = voltage_kv * 1e3
    return 12.2643 / math.sqrt(volts * (1 + 0.978466e-6 * volts))


def ctf_2d(shape_px: tuple[int, int], pixel_size_a: float, defocus_um: float, *, voltage_kv: float = 300.0,
           cs_mm: float = 2.7, amplitude_contrast: float = 0.1, bfactor_a2: float = 0.0,
           astigmatism_um: float = 0.0, astigmatism_angle_rad: float = 0.0) -> np.ndarray:
    """The CTF on the ``scipy.fft.rfft2`` grid of an image of ``shape_px`` (float32, rows × (cols//2+1)).

    ``CTF = -(sqrt(1 - A²) sin χ + A cos χ) · exp(-B k² / 4)`` with ``χ = π λ Δf k² - π/2 Cs λ³ k⁴``;
    underfocus is positive, so particles (positive density) come out dark at low frequency.
    """
    rows, cols = shape_px
    ky = scipy.fft.fftfreq(rows, d=pixel_size_a).astype(np.float32)[:, None]
    kx = scipy.fft.rfftfreq(cols, d=pixel_size_a).astype(np.float32)[None, :]
    k2 = kx * kx + ky * ky
    lam = electron_wavelength_a(voltage_kv)
    defocus_a = defocus_um * 1e4
    if astigmatism_um:
        angle = np.arctan2(ky, kx)
        defocus_a = defocus_a + 0.5 * astigmatism_um * 1e4 * np.cos(2 * (angle - astigmatism_angle_rad))
    chi = np.float32(np.pi * lam) * defocus_a * k2 - np.float32(0.5 * np.pi * cs_mm * 1e7 * lam ** 3) * k2 * k2
    a = amplitude_contrast
    ctf = -(np.float32(math.sqrt(1 - a * a)) * np.sin(chi) + np.float32(a) * np.cos(chi))
    if bfactor_a2:
        ctf *= np.exp(np.float32(-bfactor_a2 / 4) * k2)
    return ctf.astype(np.float32, copy=False)


def _padding_px(config: SimConfig) -> int:
    """How far the CTF spreads a point at Nyquist (λ Δf k + Cs λ³ k³), in px, within [16, 256]."""
    lam = electron_wavelength_a(config.voltage_kv)
    k = 1 / (2 * config.pixel_size_a)
    spread_a = lam * config.defocus_um[1] * 1e4 * k + config.cs_mm * 1e7 * lam ** 3 * k ** 3
    return int(np.clip(math.ceil(spread_a / config.pixel_size_a), 16, 256))


def _gaussian_rfft(shape_px: tuple[int, int], sigma_px: float) -> np.ndarray:
    fy = scipy.fft.fftfreq(shape_px[0]).astype(np.float32)[:, None]
    fx = scipy.fft.rfftfreq(shape_px[1]).astype(np.float32)[None, :]
    return np.exp(np.float32(-2 * np.pi ** 2 * sigma_px ** 2) * (fx * fx + fy * fy))


def _rfft_variance(spectrum: np.ndarray, shape_px: tuple[int, int]) -> float:
    """Variance of the real image whose rfft2 is ``spectrum`` (Parseval, without the inverse FFT)."""
    rows, cols = shape_px
    power = np.abs(spectrum) ** 2
    total = 2 * power.sum(dtype=np.float64) - power[:, 0].sum(dtype=np.float64)
    if cols % 2 == 0:
        total -= power[:, -1].sum(dtype=np.float64)
    n = rows * cols
    return float(total / n / n - (abs(spectrum[0, 0]) / n) ** 2)


def _rfft2(image):
    return scipy.fft.rfft2(image, workers=_FFT_WORKERS)


def _irfft2(spectrum, shape_px):
    return scipy.fft.irfft2(spectrum, s=shape_px, workers=_FFT_WORKERS).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------
# rendering


def _splat(canvas: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
    """Add weights ``w`` at sub-pixel positions into ``canvas`` by bilinear splatting (first moment exact)."""
    rows, cols = canvas.shape
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0).astype(np.float32)
    fy = (y - y0).astype(np.float32)
    x0 = x0.astype(np.int64)
    y0 = y0.astype(np.int64)
    keep = (x0 >= 0) & (x0 < cols - 1) & (y0 >= 0) & (y0 < rows - 1)
    if not keep.all():
        x0, y0, fx, fy, w = x0[keep], y0[keep], fx[keep], fy[keep], w[keep]
    if not len(x0):
        return
    # One bincount over the points' bounding window only: small objects cost little.
    left, top = int(x0.min()), int(y0.min())
    width, height = int(x0.max()) - left + 2, int(y0.max()) - top + 2
    idx = (y0 - top) * width + (x0 - left)
    gx, gy = 1 - fx, 1 - fy
    flat = np.bincount(np.concatenate([idx, idx + 1, idx + width, idx + width + 1]),
                       np.concatenate([w * gx * gy, w * fx * gy, w * gx * fy, w * fx * fy]),
                       minlength=width * height)
    canvas[top:top + height, left:left + width] += flat.reshape(height, width).astype(np.float32)


def _project(canvas, points, weights, rotations, centres_xy, scale_px):
    """Splat rotated copies of a point cloud (normalised units × ``scale_px``) at ``centres_xy``."""
    if not len(centres_xy):
        return
    px, py, pz = points[:, 0], points[:, 1], points[:, 2]
    r = rotations.astype(np.float32) * np.float32(scale_px)
    # Elementwise rather than matmul: the same bytes whatever BLAS and thread count.
    x = r[:, 0, 0, None] * px + r[:, 0, 1, None] * py + r[:, 0, 2, None] * pz
    y = r[:, 1, 0, None] * px + r[:, 1, 1, None] * py + r[:, 1, 2, None] * pz
    x += centres_xy[:, 0, None].astype(np.float32)
    y += centres_xy[:, 1, None].astype(np.float32)
    w = np.broadcast_to(weights * np.float32(scale_px ** 3), x.shape)
    _splat(canvas, x.ravel(), y.ravel(), w.ravel())


_ICE_LAYERS = 5  # defocus steps across the ice: a step of a fifth of the thickness moves no Thon ring visibly


def _particle_heights(rng, n: int, spread_um: float) -> np.ndarray:
    """Each particle's height in the ice, µm from its middle (toward the objective: more underfocus)."""
    return rng.uniform(-0.5, 0.5, n) * spread_um if spread_um else np.zeros(n)


def _ice_layers(heights_um: np.ndarray, spread_um: float):
    """The particles grouped by layer of the ice: (indices, the layer's height µm) for each layer.

    One CTF per layer rather than per particle: the image is a sum of layers, each imaged at its defocus.
    """
    if not spread_um or not len(heights_um):
        return [(np.arange(len(heights_um)), 0.0)]
    edges = np.linspace(-0.5 * spread_um, 0.5 * spread_um, _ICE_LAYERS + 1)
    layer = np.clip(np.searchsorted(edges, heights_um, side="right") - 1, 0, _ICE_LAYERS - 1)
    return [(np.flatnonzero(layer == i), float(0.5 * (edges[i] + edges[i + 1])))
            for i in range(_ICE_LAYERS) if (layer == i).any()]


def _disc_mask(shape_px, centres_xy, radius_px) -> np.ndarray:
    mask = np.zeros(shape_px, dtype=bool)
    r = int(math.ceil(radius_px))
    for cx, cy in centres_xy:
        x0, x1 = max(0, int(cx) - r), min(shape_px[1], int(cx) + r + 2)
        y0, y1 = max(0, int(cy) - r), min(shape_px[0], int(cy) + r + 2)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] |= (xx - cx) ** 2 + (yy - cy) ** 2 <= radius_px ** 2
    return mask


# --------------------------------------------------------------------------------------------------
# scene


def _place(rng, n, shape_px, margin_px, min_distance_px, allowed, others=(), max_tries=60):
    """Random sequential addition of up to ``n`` centres. ``others``: (centres, clearance) pairs to avoid.

    ``allowed(x, y)`` masks candidates (vectorised). Returns the centres placed (may be fewer than n).
    """
    rows, cols = shape_px
    placed: list[tuple[float, float]] = []
    if n == 0 or cols - 2 * margin_px <= 0 or rows - 2 * margin_px <= 0:
        return np.zeros((0, 2))
    for _ in range(max_tries):
        batch = max(64, 4 * (n - len(placed)))
        cand = np.column_stack([rng.uniform(margin_px, cols - margin_px, batch),
                                rng.uniform(margin_px, rows - margin_px, batch)])
        ok = allowed(cand[:, 0], cand[:, 1])
        for centres, clearance in others:
            if len(centres):
                d2 = ((cand[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
                ok &= (d2 >= clearance ** 2).all(axis=1)
        min_d2 = min_distance_px ** 2
        for x, y in cand[ok]:
            if placed:
                p = np.asarray(placed)
                if (((p[:, 0] - x) ** 2 + (p[:, 1] - y) ** 2) < min_d2).any():
                    continue
            placed.append((x, y))
            if len(placed) == n:
                return np.asarray(placed)
    return np.asarray(placed).reshape(-1, 2)


def _poisson_count(rng, kind, config) -> int:
    if kind not in config.contaminants:
        return 0
    area = config.size_px[0] * config.size_px[1] / _REFERENCE_AREA_PX
    return int(rng.poisson(_CONTAMINANT_RATE[kind] * area * config.contamination))


def _carbon(rng, config):
    """A hole edge: the carbon lies outside a circle of 0.8–2 µm radius crossing the micrograph.

    Returns (hole centre xy, hole radius px) or None.
    """
    if "carbon" not in config.contaminants or rng.uniform() >= min(1.0, _CARBON_PROBABILITY * config.contamination):
        return None
    rows, cols = config.size_px
    radius_px = rng.uniform(8000, 20000) / config.pixel_size_a
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    # The edge crosses the micrograph between 30 % and 90 % of the way from its centre to its corner.
    edge = np.array([cols / 2, rows / 2]) + direction * rng.uniform(0.3, 0.9) * 0.5 * math.hypot(rows, cols)
    return edge - direction * radius_px, radius_px


def _render_carbon(canvas, rng, hole, thickness_px):
    rows, cols = canvas.shape
    centre, radius = hole
    yy, xx = np.ogrid[0:rows, 0:cols]
    outside = np.sqrt((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2, dtype=np.float32) - np.float32(radius)
    film = 1 / (1 + np.exp(-np.clip(outside, -30, 30) / np.float32(1.5)))  # ~3 px wide edge
    film[outside < -_CARBON_EDGE_PX] = 0  # the film ends here: beyond, the hole is clean
    texture = 1 + 0.3 * rng.standard_normal((rows, cols), dtype=np.float32)  # amorphous carbon grain
    canvas += (np.float32(thickness_px) * film * texture).astype(np.float32)
    return film > 0.01


def _render_ice(canvas, rng, centre, radius_px):
    """An ice crystal: the union of 1–3 overlapping ellipsoids, projected (thickness in px)."""
    rows, cols = canvas.shape
    r = int(math.ceil(radius_px)) + 2
    x0, x1 = max(0, int(centre[0]) - r), min(cols, int(centre[0]) + r + 1)
    y0, y1 = max(0, int(centre[1]) - r), min(rows, int(centre[1]) + r + 1)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    thickness = np.zeros_like(xx)
    for _ in range(int(rng.integers(1, 4))):
        a = radius_px * rng.uniform(0.45, 0.7)
        b = a * rng.uniform(0.6, 1.0)
        offset = rng.uniform(-1, 1, 2) * (radius_px - a)
        phi = rng.uniform(0, np.pi)
        dx, dy = xx - (centre[0] + offset[0]), yy - (centre[1] + offset[1])
        u = (dx * np.cos(phi) + dy * np.sin(phi)) / a
        v = (-dx * np.sin(phi) + dy * np.cos(phi)) / b
        thickness = np.maximum(thickness, 2 * b * np.sqrt(np.clip(1 - u * u - v * v, 0, None)))
    canvas[y0:y1, x0:x1] += thickness


def _filament_path(rng, shape_px, length_px):
    """A smooth random curve (persistence ~1000 px) sampled every px."""
    rows, cols = shape_px
    start = rng.uniform([0, 0], [cols, rows])
    heading = rng.uniform(0, 2 * np.pi)
    turns = np.cumsum(rng.normal(0, 1 / math.sqrt(1000.0), int(length_px)))
    angles = heading + turns
    steps = np.column_stack([np.cos(angles), np.sin(angles)])
    return start + np.cumsum(steps, axis=0)


def _render_filament(canvas, path, width_px, pitch_px):
    """A solid helical-looking tube along ``path``: chord thickness across, striations along."""
    tangent = np.gradient(path, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
    radius = width_px / 2
    offsets = np.arange(-radius, radius + 0.5, 0.5, dtype=np.float64)
    chord = 2 * np.sqrt(np.clip(radius ** 2 - offsets ** 2, 0, None)) * 0.5  # ×0.5: samples every 0.5 px
    along = np.arange(len(path))
    striation = 1 + 0.35 * np.cos(2 * np.pi * along / pitch_px)
    xy = path[:, None, :] + offsets[None, :, None] * normal[:, None, :]
    w = (chord[None, :] * striation[:, None]).astype(np.float32)
    _splat(canvas, xy[..., 0].ravel(), xy[..., 1].ravel(), w.ravel())


# --------------------------------------------------------------------------------------------------
# one micrograph


def _as_generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def simulate_micrograph(config: SimConfig = SimConfig(), rng: np.random.Generator | int | None = None,
                        keep_layers: bool = False) -> SimulatedMicrograph:
    """Simulate one micrograph with its exact particle centres.

    Parameters
    ----------
    config
        What to simulate (molecule, size, imaging, noise, contaminants).
    rng
        A numpy Generator or a seed; the same seed gives the same bytes.
    keep_layers
        Also return the noise-free layers (``projection``, ``signal``, ``contaminant_signal``,
        ``contaminant_mask``), e.g. to check labels or measure the SNR.

    Returns
    -------
    SimulatedMicrograph
        ``image`` (float32) and ``centres_xy`` (labels; contaminants are never labelled), the achieved
        ``snr`` and the noise level ``k``.

    Raises
    ------
    ConfigError
        If the requested particles do not fit at the minimum distance.

    Example
    -------
    >>> sim = simulate_micrograph(SimConfig(molecule="ring", n_particles=10, snr=0.5), rng=1)
    >>> sim.image.shape, sim.centres_xy.shape
    ((512, 512), (10, 2))
    """
    rng = _as_generator(rng)
    scene_rng, noise_rng, look_rng = rng.spawn(3)  # the third draws the particles' heights and the ice ramp
    shape = config.shape_px
    rows, cols = shape
    diameter_px = config.resolved_diameter_px
    scale_px = diameter_px / 2
    grid_n = _grid_n(diameter_px)
    points, weights, bound = _point_cloud(config.molecule, grid_n)
    bound_px = bound * scale_px
    sigma_px = max(0.5, 0.5 * 2 * _GRID_HALF_EXTENT / grid_n * scale_px)  # half the voxel spacing
    gap_px = 3 * sigma_px + 1  # blurred edges of a particle and a contaminant never meet

    # --- scene: carbon, particles, then contaminants clear of the particles
    # Everything is rendered on a canvas padded by the CTF's delocalisation, so that objects cut by the
    # micrograph's border (carbon, ice) neither wrap around nor ring at the border after the CTF.
    pad_px = _padding_px(config)
    padded = (scipy.fft.next_fast_len(rows + 2 * pad_px, real=True),
              scipy.fft.next_fast_len(cols + 2 * pad_px, real=True))
    top, left = (padded[0] - rows) // 2, (padded[1] - cols) // 2
    offset = np.array([left, top], dtype=np.float64)
    crop = (slice(top, top + rows), slice(left, left + cols))
    contaminant = np.zeros(padded, dtype=np.float32)
    counts = {kind: 0 for kind in config.contaminants}
    hole = _carbon(scene_rng, config)
    if hole is not None:
        counts["carbon"] = 1

    def allowed(x, y):  # inside the hole, clear of the carbon
        if hole is None:
            return np.ones(len(x), dtype=bool)
        return np.hypot(x - hole[0][0], y - hole[0][1]) <= hole[1] - bound_px - gap_px - _CARBON_EDGE_PX

    n_wanted = config.resolved_n_particles
    min_distance_px = diameter_px if config.min_distance_px is None else config.min_distance_px
    centres = _place(scene_rng, n_wanted, shape, bound_px, min_distance_px, allowed)
    if len(centres) < n_wanted and hole is not None:  # crowded: this micrograph shows no carbon after all
        hole, counts["carbon"] = None, 0
        centres = _place(scene_rng, n_wanted, shape, bound_px, min_distance_px, allowed)
    if len(centres) < n_wanted:
        raise ConfigError(
            f"could place only {len(centres)} of {n_wanted} particles ({diameter_px:.0f} px, at least "
            f"{min_distance_px:.0f} px apart) in a {cols}×{rows} px micrograph; ask for fewer particles "
            "(--particles/--density), a shorter --min-distance-px, or a larger --size"
        )
    rotations = random_rotations(len(centres), scene_rng, config.views)

    if hole is not None:
        carbon_thickness_px = 0.3 * diameter_px  # a 10–20 nm film: a fraction of a KLH's thickness
        _render_carbon(contaminant, scene_rng, (hole[0] + offset, hole[1]), carbon_thickness_px)
    # (centres, radius px) of everything placed; a new object of radius R keeps R + radius + gap away.
    occupied = [(centres, bound_px)]

    def clear_of(radius_px):
        return [(c, r + radius_px + gap_px) for c, r in occupied]

    # Broken particles: copies cut by a random plane, 35–65 % of the density gone.
    n_broken = (int(scene_rng.binomial(len(centres), min(1.0, _BROKEN_FRACTION * config.contamination)))
                if "broken" in config.contaminants else 0)
    broken = _place(scene_rng, n_broken, shape, bound_px, min_distance_px, allowed, clear_of(bound_px))
    counts["broken"] = len(broken) if "broken" in config.contaminants else 0
    broken_xy = np.zeros((len(broken), 2))
    for i, (centre, rotation) in enumerate(zip(broken, random_rotations(len(broken), scene_rng))):
        normal = scene_rng.standard_normal(3)
        normal /= np.linalg.norm(normal)
        keep = points @ normal.astype(np.float32) < scene_rng.uniform(-0.25, 0.25) * bound
        _project(contaminant, points[keep], weights[keep], rotation[None], centre[None] + offset, scale_px)
        # A picker centres a box on what is left, not on the particle that was there.
        kept, w = points[keep].astype(np.float64), weights[keep].astype(np.float64)
        broken_xy[i] = centre + rotation[:2].astype(np.float64) @ (w @ kept / max(w.sum(), 1e-12)) * scale_px
    occupied.append((broken, bound_px))
    # Aggregates: 4–9 particles clumped at ~half a diameter.
    n_aggregates = _poisson_count(scene_rng, "aggregates", config)
    cluster_px = 1.2 * diameter_px
    aggregates = _place(scene_rng, n_aggregates, shape, 0, 0, allowed, clear_of(cluster_px))
    for centre in aggregates:
        m = int(scene_rng.integers(4, 10))
        offsets = scene_rng.normal(0, 0.35 * diameter_px, (m, 2))
        offsets = offsets * np.minimum(1, (cluster_px - bound_px) / np.maximum(
            np.linalg.norm(offsets, axis=1, keepdims=True), 1e-9))
        _project(contaminant, points, weights, random_rotations(m, scene_rng), centre + offsets + offset, scale_px)
    counts["aggregates"] = len(aggregates) if "aggregates" in config.contaminants else 0
    occupied.append((aggregates, cluster_px))
    # Ice crystals: 15–60 nm across.
    n_ice = _poisson_count(scene_rng, "ice", config)
    ice_radius_px = scene_rng.uniform(75, 300, n_ice) / config.pixel_size_a
    placed_ice = 0
    for radius_px in ice_radius_px:
        spot = _place(scene_rng, 1, shape, 0, 0, lambda x, y: np.ones(len(x), bool), clear_of(radius_px), max_tries=5)
        if len(spot):
            _render_ice(contaminant, scene_rng, spot[0] + offset, radius_px)
            occupied.append((spot, radius_px))
            placed_ice += 1
    if "ice" in config.contaminants:
        counts["ice"] = placed_ice
    # Filaments (MAVS-like): ~9 nm wide, up to 100–400 nm long, cut short before they reach a particle.
    n_filaments = _poisson_count(scene_rng, "filaments", config)
    width_px = 90 / config.pixel_size_a
    placed_filaments = 0
    for _ in range(n_filaments):
        for _attempt in range(10):
            path = _filament_path(scene_rng, shape, scene_rng.uniform(1000, 4000) / config.pixel_size_a)
            blocked = np.zeros(len(path), dtype=bool)
            for c, r in clear_of(width_px / 2):
                if len(c):
                    blocked |= (((path[:, None, :] - c[None]) ** 2).sum(-1) < r ** 2).any(axis=1)
            end = int(np.argmax(blocked)) if blocked.any() else len(path)
            if end >= min(len(path), 3 * width_px):
                _render_filament(contaminant, path[:end] + offset, width_px, pitch_px=55 / config.pixel_size_a)
                placed_filaments += 1
                break
    if "filaments" in config.contaminants:
        counts["filaments"] = placed_filaments

    # --- particles: project, blur, CTF (one layer of the ice per defocus)
    defocus_um = float(scene_rng.uniform(*config.defocus_um))
    imaging = dict(voltage_kv=config.voltage_kv, cs_mm=config.cs_mm, amplitude_contrast=config.amplitude_contrast,
                   bfactor_a2=config.bfactor_a2, astigmatism_um=config.astigmatism_um,
                   astigmatism_angle_rad=float(scene_rng.uniform(0, np.pi)))
    ctf = ctf_2d(padded, config.pixel_size_a, defocus_um, **imaging)
    blur = _gaussian_rfft(padded, sigma_px)
    heights_um = _particle_heights(look_rng, len(centres), config.defocus_spread_um)
    projection_spectrum = signal_spectrum = None
    imaged_defocus_um = np.full(len(centres), defocus_um)
    for members, height_um in _ice_layers(heights_um, config.defocus_spread_um):
        imaged_defocus_um[members] += height_um
        particles = np.zeros(padded, dtype=np.float32)
        _project(particles, points, weights, rotations[members], centres[members] + offset, scale_px)
        spectrum = _rfft2(particles)
        spectrum *= blur
        projection_spectrum = spectrum.copy() if projection_spectrum is None else projection_spectrum + spectrum
        spectrum *= ctf if height_um == 0 else ctf_2d(padded, config.pixel_size_a, defocus_um + height_um, **imaging)
        signal_spectrum = spectrum if signal_spectrum is None else signal_spectrum + spectrum
    projection = _irfft2(projection_spectrum, padded)[crop]
    signal = _irfft2(signal_spectrum, padded)[crop]
    del projection_spectrum, signal_spectrum, spectrum

    # --- noise after Baxter et al.: structural (before the CTF) and shot (after), both × k
    discs = _disc_mask(shape, centres, diameter_px / 2)
    signal_power = float(signal[discs].var(dtype=np.float64)) if discs.any() else 0.0
    projection_power = float(projection[discs].var(dtype=np.float64)) if discs.any() else 0.0
    structural_sd = math.sqrt(projection_power / _BAXTER_STRUCTURAL_SNR)
    structural = noise_rng.standard_normal(padded, dtype=np.float32)
    structural_spectrum = _rfft2(structural)
    structural_spectrum *= ctf
    structural_var = structural_sd ** 2 * _rfft_variance(structural_spectrum, padded)
    shot = noise_rng.standard_normal(shape, dtype=np.float32)
    shot_var_unit = float(shot.var(dtype=np.float64))
    shot_sd = math.sqrt(max(0.0, signal_power / _BAXTER_FINAL_SNR - structural_var) / shot_var_unit)
    k = math.sqrt(_BAXTER_FINAL_SNR / config.snr) if config.noise_level is None else config.noise_level
    noise_power = k * k * (structural_var + shot_sd ** 2 * shot_var_unit)
    snr = signal_power / noise_power if noise_power > 0 else math.inf

    contaminant_spectrum = _rfft2(contaminant)
    contaminant_spectrum *= blur
    contaminant_spectrum *= ctf
    image_spectrum = structural_spectrum
    image_spectrum *= np.float32(k * structural_sd)
    image_spectrum += contaminant_spectrum
    image = np.ascontiguousarray(_irfft2(image_spectrum, padded)[crop])
    del image_spectrum
    if not config.empty:
        image += signal
    shot *= np.float32(k * shot_sd)
    image += shot
    if config.ice_gradient:
        angle, amount = look_rng.uniform(0, 2 * np.pi), look_rng.uniform(0, config.ice_gradient)
        yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
        ramp = (xx - cols / 2) * np.cos(angle) + (yy - rows / 2) * np.sin(angle)
        image += np.float32(amount * math.sqrt(noise_power) / max(np.abs(ramp).max(), 1.0)) * ramp
    if config.detector_blur_px:
        image = scipy.ndimage.gaussian_filter(image, config.detector_blur_px)

    result = SimulatedMicrograph(
        image=image,
        centres_xy=np.zeros((0, 2)) if config.empty else centres.astype(np.float64),
        rotations=np.zeros((0, 3, 3)) if config.empty else rotations,
        snr=float(snr), noise_level=float(k), defocus_um=defocus_um, diameter_px=float(diameter_px),
        pixel_size_a=float(config.pixel_size_a), molecule=config.molecule, contaminants=counts,
        particle_defocus_um=np.zeros(0) if config.empty else imaged_defocus_um, broken_xy=broken_xy,
    )
    if keep_layers:
        result.projection = np.zeros_like(projection) if config.empty else projection
        result.signal = np.zeros_like(signal) if config.empty else signal
        result.contaminant_signal = _irfft2(contaminant_spectrum, padded)[crop]
        result.contaminant_mask = contaminant[crop] > 0
    return result


# --------------------------------------------------------------------------------------------------
# data sets


def junk_centres(sim: SimulatedMicrograph, rng: np.random.Generator, per_area_px: float = 128.0 ** 2,
                 most: int = 200) -> np.ndarray:
    """Centres (x, y) on a simulated micrograph's contaminants (ice, carbon, filaments, aggregates, broken
    particles), at least 0.6 diameter from every particle: one per ``per_area_px`` of contaminated area, at
    most ``most``, drawn at random from the contaminant mask. Background a picker must learn to refuse.

    Broken particles are not added at their centres (``broken_xy``): taught that a centred half particle is
    background, a general model learns to prefer boxes far larger than any particle (docs/measurements.md,
    *Picks on broken particles*)."""
    mask = sim.contaminant_mask
    if mask is None or not mask.any():
        return np.zeros((0, 2))
    rows, cols = np.nonzero(mask)
    xy = np.column_stack([cols, rows]).astype(np.float64)
    if len(sim.centres_xy):
        from scipy.spatial import cKDTree

        xy = xy[cKDTree(sim.centres_xy).query(xy, k=1)[0] >= 0.6 * sim.diameter_px]
    n = min(most, len(xy), max(1, int(round(len(xy) / per_area_px))))
    return xy[np.sort(rng.choice(len(xy), n, replace=False))] if len(xy) else np.zeros((0, 2))


def split_assignment(n_micrographs: int, fractions: Sequence[float], rng: np.random.Generator) -> list[str]:
    """A per-micrograph split: counts from ``fractions`` (train, valid, test; largest remainder), shuffled."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or not math.isclose(fractions.sum(), 1.0, abs_tol=1e-6):
        raise ConfigError(f"split fractions {list(fractions)} must be three numbers >= 0 summing to 1 "
                          "(train, valid, test), e.g. --split-fractions 0.7,0.15,0.15")
    exact = fractions * n_micrographs
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n_micrographs - counts.sum()]:
        counts[i] += 1
    labels = [name for name, c in zip(SPLIT_NAMES, counts) for _ in range(c)]
    return [labels[i] for i in rng.permutation(n_micrographs)]


def _seed_sequence(seed) -> np.random.SeedSequence:
    return np.random.SeedSequence(list(seed) if isinstance(seed, (list, tuple)) else int(seed))


def simulate_dataset(out_dir: str | os.PathLike, config: SimConfig = SimConfig(), *, n_micrographs: int = 10,
                     seed: int | Sequence[int] = 0,
                     split_fractions: Sequence[float] = (0.7, 0.15, 0.15), overwrite: bool = False,
                     progress: Callable[[int, str, SimulatedMicrograph], None] | None = None) -> Path:
    """Write a data set folder that :func:`deeppick.datasets.load_dataset` loads.

    Layout: ``micrographs/<molecule>_NNNN.mrc`` (float32, pixel size set), ``coords/<stem>.star``
    (particle centres; none for particle-free micrographs), ``junk/<stem>.star`` (centres on the
    contaminants, clear of every particle: background to teach, :func:`junk_centres`), ``broken/<stem>.star``
    (where each broken particle's remaining density is centred, to tell picks on them from others) and
    ``dataset.json`` (written last) with
    ``diameter_px``, ``molecule``, ``pixel_size_a``, ``snr``, all ``parameters`` and per micrograph its
    ``particles``, ``split``, achieved ``snr``, ``defocus_um`` and contaminant counts.

    Parameters
    ----------
    out_dir
        The data set folder.
    config
        Parameters of every micrograph.
    n_micrographs
        How many micrographs.
    seed
        The same seed (and parameters) give the same bytes. Micrograph ``i`` depends only on the seed
        and ``i``.
    split_fractions
        Train, valid, test fractions, assigned per micrograph (~70/15/15 by default).
    overwrite
        Replace a data set already in ``out_dir`` (stale ``.mrc``/``.star`` files are removed).
    progress
        Called as ``progress(i, name, simulated)`` after each micrograph.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    ConfigError
        If ``out_dir`` already holds a data set and ``overwrite`` is False, or on bad parameters.
    """
    out_dir = Path(out_dir)
    if n_micrographs < 1:
        raise ConfigError(f"n_micrographs = {n_micrographs}: give at least 1 micrograph (-n)")
    mic_dir, coord_dir, meta_path = out_dir / "micrographs", out_dir / "coords", out_dir / "dataset.json"
    if not overwrite and (meta_path.exists() or mic_dir.exists() or coord_dir.exists()):
        raise ConfigError(f"{out_dir}: already holds a data set; choose another output folder or pass --overwrite")
    seeds = _seed_sequence(seed).spawn(n_micrographs + 1)
    splits = split_assignment(n_micrographs, split_fractions, np.random.default_rng(seeds[-1]))
    if meta_path.exists():
        meta_path.unlink()  # a half-overwritten folder must not look complete
    entries, written = [], set()
    junk_dir, broken_dir = out_dir / "junk", out_dir / "broken"
    for i in range(n_micrographs):
        sim = simulate_micrograph(config, np.random.default_rng(seeds[i]), keep_layers=True)
        stem = f"{config.molecule}_{i:04d}"
        write_micrograph(mic_dir / f"{stem}.mrc", sim.image, pixel_size_a=config.pixel_size_a,
                         label="deeppick simulate")
        written.add(mic_dir / f"{stem}.mrc")
        if len(sim.centres_xy):
            write_picks(sim.picks(stem), coord_dir / f"{stem}.star", "star")
            written.add(coord_dir / f"{stem}.star")
        junk = junk_centres(sim, np.random.default_rng([*np.atleast_1d(seeds[i].entropy), i, 7]))
        if len(junk):
            write_picks(make_picks(stem, junk[:, 0], junk[:, 1]), junk_dir / f"{stem}.star", "star")
            written.add(junk_dir / f"{stem}.star")
        if len(sim.broken_xy):
            write_picks(make_picks(stem, *sim.broken_xy.T), broken_dir / f"{stem}.star", "star")
            written.add(broken_dir / f"{stem}.star")
        sim.projection = sim.signal = sim.contaminant_signal = sim.contaminant_mask = None
        entries.append({"micrograph": f"{stem}.mrc", "particles": int(len(sim.centres_xy)), "split": splits[i],
                        "snr": round(sim.snr, 6), "noise_level": round(sim.noise_level, 6),
                        "defocus_um": round(sim.defocus_um, 4), "contaminants": sim.contaminants})
        if progress is not None:
            progress(i, stem, sim)
    for folder, suffix in ((mic_dir, ".mrc"), (coord_dir, ".star"), (junk_dir, ".star"), (broken_dir, ".star")):
        if folder.is_dir():
            for stale in folder.iterdir():
                if stale.suffix == suffix and stale not in written:
                    stale.unlink()
    molecule = _molecule(config.molecule)
    meta = {
        "name": out_dir.name,
        "molecule": config.molecule,
        "description": f"simulated: {molecule.description}, symmetry {molecule.symmetry}",
        "source": "deeppick simulate",
        "diameter_px": round(config.resolved_diameter_px, 3),
        "pixel_size_a": config.pixel_size_a,
        "snr": config.snr,
        "coordinate_convention": "centre, pixels, x=column, y=row, origin at the centre of pixel (0, 0)",
        "parameters": {**config.to_dict(), "seed": seed if isinstance(seed, int) else list(seed),
                       "n_micrographs": n_micrographs, "split_fractions": list(map(float, split_fractions))},
        "micrographs": entries,
    }
    atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")
    return out_dir


def simulate_datasets(out_dir: str | os.PathLike, molecules: Sequence[str], config: SimConfig = SimConfig(),
                      *, n_micrographs: int = 10, seed: int = 0, diameters_px: Mapping[str, float] | None = None,
                      **kwargs) -> list[Path]:
    """One data set per molecule in ``out_dir/<molecule>/`` (e.g. cross-molecule pre-training data).

    Each molecule gets its own seed stream, derived from ``seed`` and its name, so adding a molecule
    leaves the others' bytes unchanged. ``diameters_px`` sets per-molecule diameters (default: each
    molecule's own size at ``config.pixel_size_a``). Other keyword arguments go to
    :func:`simulate_dataset`.
    """
    diameters_px = dict(diameters_px or {})
    unknown = set(diameters_px) - set(molecules)
    if unknown:
        raise ConfigError(f"diameters given for {', '.join(sorted(unknown))}, which are not simulated; "
                          f"molecules: {', '.join(molecules)}")
    paths = []
    for name in molecules:
        sub = replace(config, molecule=name, diameter_px=diameters_px.get(name))
        paths.append(simulate_dataset(Path(out_dir) / name, sub, n_micrographs=n_micrographs,
                                      seed=[int(seed), zlib.crc32(name.encode())], **kwargs))
    return paths

# --------------------------------------------------------------------------------------------------
# the simulated molecule zoo: pretraining molecules beside the real packs

# Diameters (px) of the simulated molecule zoo: spread over the real packs' 36–108 px (ours).
ZOO_DIAMETERS_PX = {"klh-like": 104.0, "ring": 44.0, "apoferritin-like": 60.0, "bell": 76.0,
                    "elongated": 92.0, "globular": 36.0}
# Crowding of the zoo: the fraction of each micrograph covered by the particles' diameter discs (ours).
# The real packs' labels cover from a fifth to over half of their micrographs, and a zoo sparser than all
# of them gives worse general models on the crowded packs (docs/measurements.md, *Zoo density*); 0.35 is
# the middle of that range and what the simulator can place for the largest molecule in 1024² px.
ZOO_DENSITY = 0.35
ZOO_SNR = 0.1  # Baxter et al.'s typical range is 0.05–0.3
# The zoo's uneven ice (a ramp of up to this many noise SDs) and detector blur (σ px): real micrographs have both.
ZOO_ICE_GRADIENT = 1.0
ZOO_DETECTOR_BLUR_PX = 1.0
ZOO_DEFOCUS_SPREAD_UM = 0.0  # the zoo's ice thickness for per-particle defocus (SimConfig.defocus_spread_um)
ZOO_PILOT_MICROGRAPHS = 8


def procedural_zoo(n: int, *, seed: int = 0, diameters_px: tuple[float, float] = (30.0, 160.0)) -> dict[str, float]:
    """``n`` procedural molecules for the zoo, name → diameter px (log-uniform in ``diameters_px``)."""
    rng = np.random.default_rng([seed, 77])
    low, high = np.log(diameters_px[0]), np.log(diameters_px[1])
    return {f"{PROCEDURAL_PREFIX}{seed * 1000 + i}": float(round(np.exp(rng.uniform(low, high))))
            for i in range(n)}


def simulate_zoo(out_dir: str | os.PathLike, molecules: Sequence[str] | None = None, *, n_micrographs: int = 4,
                 size_px: int = 1024, snr: float = ZOO_SNR, density: float = ZOO_DENSITY, seed: int = 0,
                 diameters_px: dict | None = None, ice_gradient: float = 0.0,
                 detector_blur_px: float = 0.0, defocus_spread_um: float = 0.0) -> list[Path]:
    """Simulated pretraining molecules at real-pack-like sizes; one dataset folder per molecule.

    A complete folder simulated before with the same settings is reused; one simulated otherwise (at
    another density, say) is simulated again. Defaults: 4 micrographs of 1024² px per molecule
    (3 train, 1 valid), SNR :data:`ZOO_SNR`, :data:`ZOO_DENSITY` of the area covered, diameters
    :data:`ZOO_DIAMETERS_PX`; ``ice_gradient``, ``detector_blur_px`` and ``defocus_spread_um`` as
    :class:`SimConfig`'s.
    """
    molecules = list(molecules or ZOO_DIAMETERS_PX)
    diameters = {m: (diameters_px or ZOO_DIAMETERS_PX).get(m, ZOO_DIAMETERS_PX.get(m)) for m in molecules}
    out_dir = Path(out_dir)
    config = SimConfig(size_px=size_px, snr=snr, density=density, ice_gradient=ice_gradient,
                       detector_blur_px=detector_blur_px, defocus_spread_um=defocus_spread_um)
    wanted = {m: replace(config, molecule=m, diameter_px=diameters[m]) for m in molecules}
    todo = [m for m in molecules if not _simulated_with(out_dir / m, wanted[m], n_micrographs, seed)]
    if todo:
        simulate_datasets(out_dir, todo, config, n_micrographs=n_micrographs, seed=seed,
                          diameters_px={m: diameters[m] for m in todo}, split_fractions=(0.75, 0.25, 0.0),
                          overwrite=True)
    return [out_dir / m for m in molecules]


def _simulated_with(folder: Path, config, n_micrographs: int, seed: int) -> bool:
    """Whether ``folder`` holds a complete simulated dataset made with ``config``, ``n_micrographs`` and
    ``seed`` (as :func:`~deeppick.simulate.simulate_dataset` records them in ``dataset.json``)."""
    try:
        done = json.loads((folder / "dataset.json").read_text())["parameters"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    wanted = json.loads(json.dumps(config.to_dict()))  # as the file stores it (tuples as lists)
    same = all(done.get(key) == value for key, value in wanted.items())
    seeds = done.get("seed")  # [seed, the molecule's stream] (simulate_datasets)
    return same and done.get("n_micrographs") == n_micrographs and isinstance(seeds, list) and seeds[:1] == [int(seed)]



def simulate_zoo_for_quota(work: str | os.PathLike, quota: int, **kwargs) -> list[Path]:
    """The simulated zoo with enough micrographs that every molecule can give ``quota`` train particles.

    Large molecules fit few particles in a micrograph (klh-like: ~19 in 1024², ~13 of them usable), so a
    fixed count leaves them far under quota. A pilot of 8 micrographs per molecule (``work/zoo``)
    measures particles per micrograph; a molecule short of its quota is simulated again with enough
    micrographs (``work/zoo-N``; 75 % of them train, × 1.6 for particles too near the edge to use).
    ``kwargs`` go to :func:`simulate_zoo`.
    """
    work = Path(work)
    zoo = []
    molecules = kwargs.pop("molecules", None)
    for folder in simulate_zoo(work / "zoo", molecules, n_micrographs=ZOO_PILOT_MICROGRAPHS, **kwargs):
        entries = json.loads((folder / "dataset.json").read_text())["micrographs"]
        per_micrograph = sum(e["particles"] for e in entries) / len(entries)
        needed = math.ceil(quota / max(per_micrograph * 0.75, 1e-9))
        n = max(ZOO_PILOT_MICROGRAPHS, int(1.6 * needed))
        if n == ZOO_PILOT_MICROGRAPHS:
            zoo.append(folder)
        else:
            zoo += simulate_zoo(work / f"zoo-{n}", molecules=[folder.name], n_micrographs=n, **kwargs)
    return zoo


def simulate_empty_zoo(out_dir: str | os.PathLike, *, n_micrographs: int = 8, size_px: int = 1024,
                       snr: float = ZOO_SNR, contamination: float = 2.0, seed: int = 0) -> Path:
    """Particle-free micrographs for pretraining's background: every contaminant the simulator draws (ice,
    carbon edges, filaments, aggregates, broken particles) at ``contamination`` × the usual rate, noise at
    the zoo's SNR (as its particle-bearing micrographs would have), the contaminants marked in ``junk/``.
    A folder simulated before with the same settings is reused."""
    out_dir = Path(out_dir)
    config = SimConfig(molecule="globular", size_px=size_px, snr=snr, contamination=contamination, empty=True,
                       density=0.15,
                       diameter_px=ZOO_DIAMETERS_PX["apoferritin-like"])
    if not _simulated_with(out_dir, config, n_micrographs, seed):
        simulate_dataset(out_dir, config, n_micrographs=n_micrographs, seed=[int(seed), 99],
                         split_fractions=(1.0, 0.0, 0.0), overwrite=True)
    return out_dir
