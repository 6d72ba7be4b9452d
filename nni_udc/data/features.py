"""Speech features computed with torch: log-mel spectrograms and MFCCs (no torchaudio needed).

The defaults are the keyword-spotting front end of MLPerf Tiny's DS-CNN: 16 kHz audio, 40 ms Hann windows
every 20 ms (49 frames per second of audio), 40 mel bands from 20 Hz to 4 kHz, the log of their power, and the
first 10 coefficients of an orthonormal DCT-II of that (the MFCCs).

Example:
    >>> clips = torch.zeros(2, 16000)
    >>> tuple(mfcc(clips).shape), tuple(log_mel(clips).shape)
    ((2, 49, 10), (2, 49, 40))
"""
from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["SAMPLE_RATE", "dct_matrix", "hz_to_mel", "log_mel", "mel_band_centres", "mel_filterbank", "mel_to_hz",
           "mfcc"]

SAMPLE_RATE = 16_000
_FLOOR = 1e-6  # added before the log: silence gives log(1e-6), not -inf


def hz_to_mel(hz: float | torch.Tensor) -> float | torch.Tensor:
    """The HTK mel scale: ``2595 * log10(1 + hz / 700)``.

    Example:
        >>> round(float(hz_to_mel(1000.0)), 1)
        1000.0
    """
    if isinstance(hz, torch.Tensor):
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _mel_points(n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """``n_mels + 2`` frequencies (Hz) equally spaced on the mel scale: each band's lower edge, centre, upper edge."""
    low, high = float(hz_to_mel(f_min)), float(hz_to_mel(f_max))
    return mel_to_hz(torch.linspace(low, high, n_mels + 2, dtype=torch.float64))


def mel_band_centres(n_mels: int = 40, f_min: float = 20.0, f_max: float = 4000.0) -> torch.Tensor:
    """The centre frequency (Hz) of each mel band, where its filter's weight is 1.

    Example:
        >>> centres = mel_band_centres()
        >>> len(centres), bool((centres.diff() > 0).all())
        (40, True)
    """
    return _mel_points(n_mels, f_min, f_max)[1:-1]


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int = SAMPLE_RATE, f_min: float = 20.0,
                   f_max: float = 4000.0) -> torch.Tensor:
    """Triangular mel filters as an ``(n_mels, n_fft // 2 + 1)`` matrix over the FFT bins' frequencies.

    Filter ``i`` rises from 0 at band ``i``'s lower edge to 1 at its centre and falls to 0 at its upper edge
    (the next band's centre), so neighbouring filters cross at 1/2.

    Example:
        >>> bank = mel_filterbank(40, 640)
        >>> tuple(bank.shape), float(bank.max()) <= 1.0
        ((40, 321), True)
    """
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {f_min}, {f_max}, {sample_rate}")
    points = _mel_points(n_mels, f_min, f_max)
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)


def dct_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """The first ``n_out`` rows of the orthonormal DCT-II of length ``n_in``, as an ``(n_out, n_in)`` matrix.

    Example:
        >>> d = dct_matrix(40, 40)
        >>> bool(torch.allclose(d @ d.T, torch.eye(40), atol=1e-5))
        True
    """
    if not 1 <= n_out <= n_in:
        raise ValueError(f"need 1 <= n_out <= n_in, got n_out={n_out}, n_in={n_in}")
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    n = torch.arange(n_in, dtype=torch.float64)[None, :]
    matrix = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    matrix[0] /= math.sqrt(2.0)
    return matrix.to(torch.float32)


def log_mel(waves: torch.Tensor, sample_rate: int = SAMPLE_RATE, window_ms: float = 40.0, stride_ms: float = 20.0,
            n_mels: int = 40, f_min: float = 20.0, f_max: float = 4000.0) -> torch.Tensor:
    """Log mel-band power of ``waves`` (``(..., samples)``), shaped ``(..., frames, n_mels)``.

    Frames are ``window_ms`` long (Hann window, FFT of the window's length, no padding) every ``stride_ms``:
    ``1 + (samples - window) // stride`` frames, 49 for one second at the defaults.
    """
    window = int(round(sample_rate * window_ms / 1000))
    stride = int(round(sample_rate * stride_ms / 1000))
    if waves.shape[-1] < window:
        raise ValueError(f"a clip of {waves.shape[-1]} samples is shorter than one {window}-sample window")
    flat = waves.reshape(-1, waves.shape[-1]).to(torch.float32)
    spectrum = torch.stft(flat, n_fft=window, hop_length=stride, window=torch.hann_window(window),
                          center=False, return_complex=True)  # (clips, bins, frames)
    power = spectrum.real.square() + spectrum.imag.square()
    bank = mel_filterbank(n_mels, window, sample_rate, f_min, f_max)
    mel = torch.einsum("mb,cbf->cfm", bank, power)
    return torch.log(mel + _FLOOR).reshape(*waves.shape[:-1], mel.shape[1], n_mels)


def mfcc(waves: torch.Tensor, n_mfcc: int = 10, **log_mel_args: Any) -> torch.Tensor:
    """The first ``n_mfcc`` DCT-II coefficients of :func:`log_mel` (``log_mel_args`` passed on): ``(..., frames, n_mfcc)``."""
    bands = log_mel(waves, **log_mel_args)
    return bands @ dct_matrix(n_mfcc, bands.shape[-1]).T
