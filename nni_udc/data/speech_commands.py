"""Speech Commands (keyword spotting): one-second wav clips in word folders, turned into MFCCs or log-mel bands.

Layout under ``root`` (Speech Commands v2's, as extracted from ``speech_commands_v0.02.tar.gz``):
``<word>/*.wav`` (16 kHz, 16-bit PCM), ``_background_noise_/*.wav`` (optional, the source of silence clips) and,
optionally, ``validation_list.txt`` and ``testing_list.txt`` (one ``word/file.wav`` per line). With both list
files the splits are the data set's own; without them, speakers (the part of a file name before ``_nohash_``)
are split at random (seeded), so no speaker is in two splits.

The classes are ``words`` (default: MLPerf Tiny's ten keywords), then ``_unknown_`` (clips of every other word
folder) and ``_silence_`` (one-second crops of background noise at a random volume, or zeros without noise
files): each of the two gets ``unknown_fraction`` / ``silence_fraction`` as many clips as the split has keyword
clips, and a fraction of 0 leaves the class out. Clips are read with :mod:`wave`, padded with zeros or cut to
16,000 samples, and turned into features with :mod:`nni_udc.data.features` (default: 49 x 10 MFCCs, the DS-CNN
input), standardised with the train split's mean and std. Wav files are read once per process for the same
root and arguments.
"""
from __future__ import annotations

import functools
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from nni_udc.data._split import DatasetSplits, check_fraction, check_seed, make_splits
from nni_udc.data.features import SAMPLE_RATE, log_mel, mfcc
from nni_udc.data.roots import DataRootError, check_arguments, require_path, require_root

__all__ = ["KEYWORDS", "SILENCE", "UNKNOWN", "check_speech_commands", "load_speech_commands_splits", "read_wav"]

#: MLPerf Tiny's keyword-spotting words (with _unknown_ and _silence_: its 12 classes)
KEYWORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
BACKGROUND = "_background_noise_"
LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}
URL = "https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
_ARGUMENTS = ("words", "unknown_fraction", "silence_fraction", "features", "n_mfcc", "n_mels", "val_fraction",
              "test_fraction")
_FEATURES = ("mfcc", "log-mel")
_CHUNK = 512  # clips turned into features at once: the raw audio of all of Speech Commands would need 7 GB
_SPLITS = ("train", "val", "test")


def _how(root: Any) -> str:
    return f"extract {URL} into {root} so that {root}/<word>/*.wav exists for every word of args.words"


@dataclass(frozen=True)
class _Args:
    words: tuple[str, ...]
    unknown_fraction: float
    silence_fraction: float
    features: str
    n_mfcc: int
    n_mels: int
    val_fraction: float
    test_fraction: float


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"speech-commands: {name} must be an integer >= 1, got {value!r}")
    return value


def _share(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"speech-commands: {name} must be a number in [0, 1] (0 leaves the class out), got {value!r}")
    return float(value)


def _parse(args: Mapping[str, Any]) -> _Args:
    check_arguments("speech-commands", args, _ARGUMENTS)
    words = args.get("words", KEYWORDS)
    if (isinstance(words, str) or not isinstance(words, Sequence) or not words
            or not all(isinstance(w, str) and w and not w.startswith("_") and "/" not in w for w in words)
            or len(set(words)) != len(words)):
        raise ValueError(f"speech-commands: words must be a non-empty list of distinct word folder names "
                         f"(not starting with '_'), got {words!r}")
    features = args.get("features", "mfcc")
    if features not in _FEATURES:
        raise ValueError(f"speech-commands: features must be one of {', '.join(_FEATURES)}, got {features!r}")
    n_mels, n_mfcc = _int("n_mels", args.get("n_mels", 40)), _int("n_mfcc", args.get("n_mfcc", 10))
    if n_mfcc > n_mels:
        raise ValueError(f"speech-commands: n_mfcc ({n_mfcc}) must not exceed n_mels ({n_mels})")
    val, test = (check_fraction(k, args.get(k, 0.1)) for k in ("val_fraction", "test_fraction"))
    if val + test >= 1:
        raise ValueError(f"speech-commands: val_fraction + test_fraction must be < 1, got {val!r} + {test!r}")
    return _Args(tuple(words), _share("unknown_fraction", args.get("unknown_fraction", 0.1)),
                 _share("silence_fraction", args.get("silence_fraction", 0.1)), features, n_mfcc, n_mels, val, test)


def check_speech_commands(root: str | Path | None, args: Mapping[str, Any]) -> None:
    """Refuse a bad argument or a ``root`` without a folder for every word (``ValueError`` saying what to do).

    Example:
        >>> check_speech_commands(".", {"features": "spectrogram"})
        Traceback (most recent call last):
        ...
        ValueError: speech-commands: features must be one of mfcc, log-mel, got 'spectrogram'
    """
    parsed = _parse(args)
    for word in parsed.words:
        require_path("speech-commands", root, word, _how(root))


def read_wav(path: str | Path | BinaryIO) -> tuple[np.ndarray, int]:
    """A PCM wav file (a path or an open binary file) as float32 samples in [-1, 1] (channels averaged) and its sample rate.

    Raises:
        DataRootError: the file is not an uncompressed PCM wav file.

    Example:
        >>> import io
        >>> buffer = io.BytesIO()
        >>> with wave.open(buffer, "wb") as w:
        ...     w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)
        ...     w.writeframes(np.array([0, 16384, -32768], "<i2").tobytes())
        >>> _ = buffer.seek(0)
        >>> samples, rate = read_wav(buffer)
        >>> samples.tolist(), rate
        ([0.0, 0.5, -1.0], 16000)
    """
    try:
        with wave.open(path if not isinstance(path, Path) else str(path), "rb") as file:
            channels, width, rate = file.getnchannels(), file.getsampwidth(), file.getframerate()
            raw = file.readframes(file.getnframes())
    except (wave.Error, EOFError, OSError) as error:
        raise DataRootError(f"speech-commands: {path} is not a PCM wav file ({error})") from None
    samples: np.ndarray
    if width == 1:
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width in (2, 4):
        samples = np.frombuffer(raw, f"<i{width}").astype(np.float32) / float(2 ** (8 * width - 1))
    elif width == 3:
        bytes3 = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        values = bytes3[:, 0] | (bytes3[:, 1] << 8) | (bytes3[:, 2] << 16)
        samples = (np.where(values >= 1 << 23, values - (1 << 24), values) / float(1 << 23)).astype(np.float32)
    else:
        raise DataRootError(f"speech-commands: {path} has {width}-byte samples; expected 1 to 4")
    return samples.reshape(-1, channels).mean(axis=1), rate


def _one_second(path: Path) -> np.ndarray:
    samples, rate = read_wav(path)
    if rate != SAMPLE_RATE:
        raise DataRootError(f"speech-commands: {path} is sampled at {rate} Hz; the clips must be {SAMPLE_RATE} Hz")
    clip = np.zeros(SAMPLE_RATE, np.float32)
    clip[:min(len(samples), SAMPLE_RATE)] = samples[:SAMPLE_RATE]
    return clip


def _speaker(relative: str) -> str:
    name = relative.rsplit("/", 1)[-1]
    return name.split("_nohash_")[0] if "_nohash_" in name else name.rsplit(".", 1)[0]


def _assign(root: Path, files: list[str], args: _Args, seed: int) -> dict[str, str]:
    """Each file's split: from the list files when both are there, else by seeded random speaker groups."""
    if all((root / name).is_file() for name in LISTS.values()):
        listed = {split: {line.strip() for line in (root / name).read_text().splitlines() if line.strip()}
                  for split, name in LISTS.items()}
        return {f: "test" if f in listed["test"] else "val" if f in listed["val"] else "train" for f in files}
    speakers = sorted({_speaker(f) for f in files})
    order = np.random.default_rng(seed).permutation(len(speakers))
    n_test, n_val = (int(round(fraction * len(speakers))) for fraction in (args.test_fraction, args.val_fraction))
    split_of = {speakers[i]: "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
                for rank, i in enumerate(order)}
    return {f: split_of[_speaker(f)] for f in files}


def _features(clips: list[np.ndarray], args: _Args) -> torch.Tensor:
    waves = torch.from_numpy(np.stack(clips))
    if args.features == "mfcc":
        return mfcc(waves, n_mfcc=args.n_mfcc, n_mels=args.n_mels)
    return log_mel(waves, n_mels=args.n_mels)


def _split_features(sources: list[Path | tuple[int, int, float]], noise: list[np.ndarray],
                    args: _Args) -> np.ndarray:
    """Features of each source: a wav file, or (noise file, offset, volume) for a silence clip."""
    chunks = []
    for start in range(0, len(sources), _CHUNK):
        clips = []
        for source in sources[start:start + _CHUNK]:
            if isinstance(source, Path):
                clips.append(_one_second(source))
            elif noise:
                index, offset, volume = source
                clips.append(noise[index][offset:offset + SAMPLE_RATE] * np.float32(volume))
            else:
                clips.append(np.zeros(SAMPLE_RATE, np.float32))
        chunks.append(_features(clips, args))
    return torch.cat(chunks).numpy()


def _one_second_or_longer(path: Path) -> np.ndarray:
    """A background-noise file (16 kHz), padded with zeros to at least one second."""
    samples, rate = read_wav(path)
    if rate != SAMPLE_RATE:
        raise DataRootError(f"speech-commands: {path} is sampled at {rate} Hz; the clips must be {SAMPLE_RATE} Hz")
    return np.pad(samples, (0, max(0, SAMPLE_RATE - len(samples))))


@functools.lru_cache(maxsize=1)
def _load(root: Path, args: _Args, seed: int, stamp: tuple[int, ...]) -> DatasetSplits:
    words = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    files = [f"{w}/{p.name}" for w in words for p in sorted((root / w).iterdir())
             if p.is_file() and p.suffix.lower() == ".wav"]
    split_of = _assign(root, files, args, seed)
    noise = [_one_second_or_longer(p) for p in sorted((root / BACKGROUND).glob("*.wav"))] \
        if (root / BACKGROUND).is_dir() else []
    label_of = {w: i for i, w in enumerate(args.words)}
    classes = list(args.words) + [UNKNOWN] * (args.unknown_fraction > 0) + [SILENCE] * (args.silence_fraction > 0)
    parts = []
    for index, split in enumerate(_SPLITS):
        rng = np.random.default_rng([seed, index])
        keyword = [f for f in files if split_of[f] == split and f.split("/")[0] in label_of]
        if not keyword:
            raise DataRootError(f"speech-commands: the {split} split has no clip of {', '.join(args.words)} "
                                f"under {root}; {_how(root)}")
        others = [f for f in files if split_of[f] == split and f.split("/")[0] not in label_of]
        sources: list[Path | tuple[int, int, float]] = [root / f for f in keyword]
        labels = [label_of[f.split("/")[0]] for f in keyword]
        if args.unknown_fraction > 0:
            chosen = rng.choice(len(others), min(len(others), int(round(args.unknown_fraction * len(keyword)))),
                                replace=False)
            sources += [root / others[i] for i in sorted(chosen)]
            labels += [classes.index(UNKNOWN)] * len(chosen)
        if args.silence_fraction > 0:
            for _ in range(int(round(args.silence_fraction * len(keyword)))):
                which = int(rng.integers(len(noise))) if noise else 0
                offset = int(rng.integers(len(noise[which]) - SAMPLE_RATE + 1)) if noise else 0
                sources.append((which, offset, float(rng.uniform(0, 1))))
                labels.append(classes.index(SILENCE))
        parts.append((_split_features(sources, noise, args), np.asarray(labels, np.int64)))
    x = parts[0][0]
    return make_splits("speech-commands", parts[0], parts[1], parts[2], (1, *x.shape[1:]), len(classes))


def load_speech_commands_splits(root: str | Path | None = None, words: Sequence[str] = KEYWORDS,
                                unknown_fraction: float = 0.1, silence_fraction: float = 0.1,
                                features: str = "mfcc", n_mfcc: int = 10, n_mels: int = 40,
                                val_fraction: float = 0.1, test_fraction: float = 0.1,
                                seed: int = 0) -> DatasetSplits:
    """Speech Commands from ``root`` as train / val / test features: ``(1, 49, n_mfcc)`` MFCCs or ``(1, 49, n_mels)``.

    Labels: ``words`` in the order given, then ``_unknown_`` and ``_silence_`` unless their fraction is 0 (the
    defaults give MLPerf Tiny's 12 classes). ``val_fraction``/``test_fraction`` are the shares of speakers held
    out when the list files are missing; ``seed`` fixes that split and the choice of unknown and silence clips.

    Raises:
        DataRootError: ``root`` or a word's folder is missing (the message says what to extract where), a split
            has no keyword clip, or a file is not a 16 kHz PCM wav file.
        ValueError: a bad argument.
    """
    parsed = _parse({"words": list(words), "unknown_fraction": unknown_fraction, "silence_fraction": silence_fraction,
                     "features": features, "n_mfcc": n_mfcc, "n_mels": n_mels, "val_fraction": val_fraction,
                     "test_fraction": test_fraction})
    seed = check_seed(seed)
    folder = require_root("speech-commands", root, "<word>/*.wav", _how(root)).resolve()
    for word in parsed.words:
        require_path("speech-commands", folder, word, _how(folder))
    stamp = tuple(p.stat().st_mtime_ns for p in (folder, *(folder / n for n in LISTS.values())) if p.exists())
    return _load(folder, parsed, seed, stamp)
