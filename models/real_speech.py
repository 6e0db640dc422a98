"""A real-human-speech evaluation set for the keyword spotter, built from Debian and PyPI packages.

    python -m models.real_speech --out data/kws-real [--sources asterisk codec2 alsa pocketsphinx]
                                 [--pocketsphinx-sdist pocketsphinx-5.1.1.tar.gz]

For **validation and testing only**: nothing here is ever used to train. Every file
comes with a transcript from its publisher, and the keywords a file contains are
counted on that transcript (whole words, case-insensitive: "no" is not found in
"not" or "know"). Writes, into a new folder (built beside it and renamed into place):

* ``<source>/<name>.wav`` -- 16 kHz mono 16-bit PCM; 8 kHz material is resampled
  with soxr and stays telephone band-limited (nothing above 4 kHz);
* ``manifest.jsonl`` -- one line per file (:class:`Entry`): id, source, licence,
  transcript and where it came from, duration, original rate and bandwidth, the
  keywords with their counts, exact homophones of keywords ("know", "write"), and
  the split: ``val`` or ``test`` by a hash of the id (about half each), so an
  operating point is chosen on ``val`` and reported on ``test``;
* ``summary.json`` -- files and minutes, keyword-free minutes, keyword occurrences per
  keyword and split, and every source file left out with the reason;
* ``LICENSES.md`` -- each source with its licence and how its transcripts were found.

Sources (``SOURCES``; all are real recordings of human speakers):

``asterisk``  Debian ``asterisk-core-sounds-en-wav`` (the audio) + ``asterisk-core-sounds-en``
              (``core-sounds-en.txt``, the publisher's transcript of every prompt): one
              professional speaker (Allison Smith), 8 kHz telephone prompts; CC-BY-SA-3.0.
              Prompts whose transcript is only an annotation (tones, silence) are left out.
``codec2``    Debian ``codec2-examples``: only ``speech_orig_16k.wav`` has a known text, four
              Harvard sentences (list 1, nos. 1, 2, 3 and 9; IEEE 1969, public domain). It was
              identified listen-free: pocketsphinx's and another public ASR test's output match
              those sentences word for word in most places. The package's other speech files
              (radio call signs, unknown sentences) have no published transcript and are left
              out: without one there is no way to check they hold no keyword. LGPL-2.1.
``alsa``      Debian ``alsa-utils``: the voice prompts ``speaker-test -t wav`` plays to name each
              channel (``Front_Left.wav`` says "front left"). The transcript is the channel name
              the file announces (so it is derived from the file name, which here is what the
              program uses them for); pocketsphinx heard the same words. 48 kHz. GPL-2.
``pocketsphinx`` the test recordings of the ``pocketsphinx`` source distribution (PyPI sdist,
              downloaded with ``pip download`` unless ``--pocketsphinx-sdist`` names it) that
              have a transcript in it: ``goforward.raw`` and ``forever/input_2_16k.wav`` (texts
              from its own tests), ``cards/*.wav`` (``cards.transcription``) and five LibriVox
              excerpts (``librivox/*.txt``, public-domain recordings). BSD-2-Clause-style CMU
              licence. The TIDIGITS sample is left out (an LDC corpus, not freely licensed).

No other English speech with transcripts was found in Debian or in PyPI distributions
checked (``openai-whisper`` and ``SpeechRecognition`` sdists ship no audio).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.kws_data import HOMOPHONES, KEYWORDS

SR = 16000
SPLITS = ("val", "test")
POCKETSPHINX_VERSION = "5.1.1"

ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
CODEC2_RAW = Path("/usr/share/codec2/raw")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")

HARVARD_1_1_2_3_9 = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It's easy to tell the depth of a well. Four hours of steady work faced us."
)
ALSA_CHANNELS = (
    "Front_Center",
    "Front_Left",
    "Front_Right",
    "Rear_Center",
    "Rear_Left",
    "Rear_Right",
    "Side_Left",
    "Side_Right",
)  # Noise.wav is noise, not speech
# pocketsphinx test recordings with the text its own tests give them
POCKETSPHINX_TEXTS = {
    "goforward.raw": ("go forward ten meters", "cython/test/alignment_test.py"),
    "forever/input_2_16k.wav": ("feels like these days go on forever", "cython/test/alignment_test.py"),
}

LICENCES = {
    "asterisk": (
        "asterisk-core-sounds-en-wav 1.6.1 (Debian)",
        "CC-BY-SA-3.0",
        "recorded by Allison Smith, financed by Digium, Inc.; see /usr/share/doc/asterisk-core-sounds-en-wav/copyright",
    ),
    "codec2": (
        "codec2-examples (Debian)",
        "LGPL-2.1",
        "Copyright 2007-2019 David Rowe; the sentences are "
        "Harvard sentences (IEEE Recommended Practice for Speech Quality Measurements, 1969)",
    ),
    "alsa": (
        "alsa-utils (Debian)",
        "GPL-2",
        "speaker-test's channel prompts; Copyright 1998-2022 Jaroslav Kysela and others",
    ),
    "pocketsphinx": (
        f"pocketsphinx {POCKETSPHINX_VERSION} source distribution (PyPI)",
        "BSD-2-Clause (CMU)",
        "Copyright 1999-2016 Carnegie Mellon University; the librivox/ excerpts are LibriVox recordings, public domain",
    ),
}
SOURCES = tuple(LICENCES)

_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")


class RealSpeechError(Exception):
    """A problem the user has to fix; the message is one line."""


# ---------------------------------------------------------------- transcripts
def words(text: str) -> list[str]:
    """Lower-case words of a transcript; annotations in [], () or <> dropped, hyphens split words."""
    return _WORD.findall(_ANNOTATION.sub(" ", text.lower()))


def keyword_counts(text: str) -> dict[str, int]:
    """Occurrences of each keyword as a whole word, in ``KEYWORDS`` order (absent keywords left out)."""
    c = Counter(words(text))
    return {k: c[k] for k in KEYWORDS if c[k]}


def homophone_counts(text: str) -> dict[str, int]:
    """Words that sound exactly like a keyword ("know" -> no, "write" -> right), by the keyword."""
    c = Counter(words(text))
    return {k: n for k, alts in HOMOPHONES.items() if (n := sum(c[a] for a in alts))}


def split_of(file_id: str) -> str:
    """``val`` or ``test``, fixed by the id's SHA-256 (about half each)."""
    return SPLITS[int(hashlib.sha256(file_id.encode()).hexdigest()[:8], 16) % 2]


# ---------------------------------------------------------------- sources
@dataclass(frozen=True)
class Recording:
    """One source recording before conversion; ``rate`` is set for headerless 16-bit PCM."""

    id: str  # "<source>/<name>", also the output path without ".wav"
    source: str
    path: Path
    transcript: str
    transcript_from: str
    rate: int | None = None


@dataclass(frozen=True)
class Entry:
    """One line of ``manifest.jsonl``."""

    id: str
    path: str  # relative to the set's folder
    source: str
    licence: str
    transcript: str
    transcript_from: str
    duration_s: float
    original_rate: int
    bandwidth_hz: int  # content above this frequency is absent (half the original rate)
    split: str
    keywords: dict[str, int] = field(default_factory=dict)
    homophones: dict[str, int] = field(default_factory=dict)

    @property
    def keyword_free(self) -> bool:
        """No keyword and no exact homophone of one: any detection here is a false accept."""
        return not self.keywords and not self.homophones


def _need(path: Path, package: str) -> None:
    if not path.exists():
        raise RealSpeechError(
            f"{path} is missing; install it with 'apt-get install {package}' or leave its source out with --sources"
        )


def asterisk_recordings(
    sounds: Path = ASTERISK_SOUNDS,
    transcripts: Path = ASTERISK_TRANSCRIPTS,
) -> tuple[list[Recording], list[dict[str, str]]]:
    _need(sounds, "asterisk-core-sounds-en-wav")
    _need(transcripts, "asterisk-core-sounds-en")
    text: dict[str, str] = {}
    with gzip.open(transcripts, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            name, sep, t = line.strip().partition(":")
            if sep and not name.startswith(";"):
                text[name.strip()] = t.strip()
    recs, left_out = [], []
    for p in sorted(sounds.rglob("*.wav")):
        name = p.relative_to(sounds).with_suffix("").as_posix()
        if name not in text:
            left_out.append({"file": str(p), "reason": "no line in core-sounds-en.txt"})
        elif not words(text[name]):
            left_out.append({"file": str(p), "reason": f"not speech: {text[name]!r}"})
        else:
            recs.append(Recording(f"asterisk/{name}", "asterisk", p, text[name], "core-sounds-en.txt"))
    return recs, left_out


def codec2_recordings(raw: Path = CODEC2_RAW) -> tuple[list[Recording], list[dict[str, str]]]:
    _need(raw, "codec2-examples")
    path = raw / "speech_orig_16k.wav"
    _need(path, "codec2-examples")
    recs = [
        Recording(
            "codec2/speech_orig_16k",
            "codec2",
            path,
            HARVARD_1_1_2_3_9,
            "Harvard sentences list 1 nos. 1, 2, 3, 9 (identified listen-free, see module docstring)",
        )
    ]
    left_out = [
        {"file": str(p), "reason": "no published transcript: cannot be checked for keywords"}
        for p in sorted(raw.iterdir())
        if p != path
    ]
    return recs, left_out


def alsa_recordings(sounds: Path = ALSA_SOUNDS) -> tuple[list[Recording], list[dict[str, str]]]:
    _need(sounds, "alsa-utils")
    recs = []
    for name in ALSA_CHANNELS:
        p = sounds / f"{name}.wav"
        _need(p, "alsa-utils")
        recs.append(
            Recording(
                f"alsa/{name}",
                "alsa",
                p,
                name.replace("_", " ").lower(),
                "the channel name speaker-test announces with this file",
            )
        )
    return recs, [{"file": str(sounds / "Noise.wav"), "reason": "noise, not speech"}]


def download_pocketsphinx_sdist(dest: Path) -> Path:
    """The pocketsphinx source distribution, fetched with pip (no code from it is run)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--quiet",
        "-d",
        str(dest),
        f"pocketsphinx=={POCKETSPHINX_VERSION}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob("pocketsphinx-*.tar.gz"))
    if not found:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise RealSpeechError(
            f"pip download of pocketsphinx=={POCKETSPHINX_VERSION} failed ({last}); "
            "download it by hand and pass --pocketsphinx-sdist FILE"
        )
    return found[0]


def pocketsphinx_recordings(sdist: Path, work: Path) -> tuple[list[Recording], list[dict[str, str]]]:
    """Unpack the sdist's test data into ``work`` and pair each recording with its transcript."""
    try:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and "/test/" in m.name]
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                tar.extractall(work, members=members, filter="data")
            else:
                tar.extractall(work, members=[m for m in members if not m.name.startswith(("/", ".."))])
    except (OSError, tarfile.TarError) as e:
        raise RealSpeechError(
            f"{sdist}: not a readable pocketsphinx source distribution ({e}); "
            "pass the pocketsphinx-*.tar.gz from 'pip download --no-binary :all:'"
        ) from None
    tops = [p for p in work.iterdir() if (p / "test" / "data").is_dir()]
    if not tops:
        raise RealSpeechError(f"{sdist}: has no test/data folder; pass a pocketsphinx source distribution")
    data = tops[0] / "test" / "data"
    recs = [
        Recording(
            f"pocketsphinx/{Path(name).with_suffix('').as_posix().replace('/', '_')}",
            "pocketsphinx",
            data / name,
            text,
            f"pocketsphinx {where}",
            SR if name.endswith(".raw") else None,
        )
        for name, (text, where) in POCKETSPHINX_TEXTS.items()
    ]
    for line in (data / "cards" / "cards.transcription").read_text().splitlines():
        m = re.fullmatch(r"\s*<s>(.*)</s>\s*\((\w+)\)\s*", line)
        if m:
            recs.append(
                Recording(
                    f"pocketsphinx/cards_{m[2]}",
                    "pocketsphinx",
                    data / "cards" / f"{m[2]}.wav",
                    " ".join(m[1].split()),
                    "pocketsphinx test/data/cards/cards.transcription",
                )
            )
    for txt in sorted((data / "librivox").glob("*.txt")):
        recs.append(
            Recording(
                f"pocketsphinx/librivox_{txt.stem}",
                "pocketsphinx",
                txt.with_suffix(".wav"),
                " ".join(txt.read_text().split()),
                f"pocketsphinx test/data/librivox/{txt.name}",
            )
        )
    used = {r.path for r in recs}
    left_out = [
        {
            "file": f"{sdist.name}:{p.relative_to(tops[0]).as_posix()}",
            "reason": (
                "TIDIGITS sample: LDC licence" if "tidigits" in p.parts else "no transcript in the distribution"
            ),
        }
        for p in sorted(data.rglob("*"))
        if p.suffix in (".wav", ".raw") and p not in used
    ]
    return recs, left_out


# ---------------------------------------------------------------- building
def read_audio(rec: Recording) -> tuple[np.ndarray, int]:
    """Float32 mono samples at 16 kHz (soxr, as every WAV the runtime reads) and the original rate."""
    from edge_runtime.audio.wav import Resampler, read_wav

    if rec.rate:
        x = np.fromfile(rec.path, dtype="<i2").astype(np.float32) / 32768.0
        return Resampler(rec.rate, SR).process(x, last=True), rec.rate
    import soundfile

    return read_wav(rec.path, SR), int(soundfile.info(str(rec.path)).samplerate)


def convert(rec: Recording, out: Path) -> Entry:
    from edge_runtime.audio.wav import write_wav

    y, sr = read_audio(rec)
    rel = f"{rec.id}.wav"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    write_wav(out / rel, y, SR)
    return Entry(
        id=rec.id,
        path=rel,
        source=LICENCES[rec.source][0],
        licence=LICENCES[rec.source][1],
        transcript=rec.transcript,
        transcript_from=rec.transcript_from,
        duration_s=round(len(y) / SR, 3),
        original_rate=sr,
        bandwidth_hz=min(sr, SR) // 2,
        split=split_of(rec.id),
        keywords=keyword_counts(rec.transcript),
        homophones=homophone_counts(rec.transcript),
    )


def summarize(entries: Sequence[Entry], left_out: Sequence[dict[str, str]]) -> dict[str, Any]:
    def part(es: Sequence[Entry]) -> dict[str, Any]:
        occ = Counter()
        for e in es:
            occ.update(e.keywords)
        return {
            "files": len(es),
            "minutes": round(sum(e.duration_s for e in es) / 60, 2),
            "keyword_free_files": sum(e.keyword_free for e in es),
            "keyword_free_minutes": round(sum(e.duration_s for e in es if e.keyword_free) / 60, 2),
            "files_with_keywords": sum(bool(e.keywords) for e in es),
            "keyword_occurrences": {k: occ[k] for k in KEYWORDS},
            "homophone_files": sum(bool(e.homophones) for e in es),
        }

    return {
        "splits": {s: part([e for e in entries if e.split == s]) for s in SPLITS},
        "sources": {
            src: part([e for e in entries if e.id.startswith(f"{src}/")])
            for src in SOURCES
            if any(e.id.startswith(f"{src}/") for e in entries)
        },
        "all": part(entries),
        "left_out": list(left_out),
    }


def licenses_md(summary: dict[str, Any]) -> str:
    lines = [
        "# Real-speech evaluation set: sources and licences",
        "",
        "Real human recordings for validating and testing the keyword spotter only; never used for "
        "training. Built by `python -m models.real_speech`; keywords are counted on each publisher's "
        "transcript (whole words). 8 kHz sources were resampled to 16 kHz and stay band-limited.",
        "",
        "| source | package | licence | files | minutes | credit |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for src, part in summary["sources"].items():
        pkg, lic, credit = LICENCES[src]
        lines.append(f"| {src} | {pkg} | {lic} | {part['files']} | {part['minutes']} | {credit} |")
    lines += [
        "",
        "How the transcripts were found, and what was left out, is in the docstring of "
        "`models/real_speech.py` and in `summary.json` (`left_out`). The files here are converted "
        "copies (resampled to 16 kHz mono 16-bit); CC-BY-SA-3.0 material stays under that licence.",
        "",
    ]
    return "\n".join(lines)


def collect(sources: Iterable[str], work: Path, sdist: Path | None) -> tuple[list[Recording], list[dict[str, str]]]:
    recs: list[Recording] = []
    left_out: list[dict[str, str]] = []
    for src in sources:
        if src == "asterisk":
            r, skipped = asterisk_recordings()
        elif src == "codec2":
            r, skipped = codec2_recordings()
        elif src == "alsa":
            r, skipped = alsa_recordings()
        else:
            tar = sdist or download_pocketsphinx_sdist(work / "sdist")
            if not tar.is_file():
                raise RealSpeechError(f"--pocketsphinx-sdist {tar}: no such file")
            (work / "pocketsphinx").mkdir()
            r, skipped = pocketsphinx_recordings(tar, work / "pocketsphinx")
        recs += r
        left_out += skipped
    missing = [r.path for r in recs if not r.path.is_file()]
    if missing:
        raise RealSpeechError(f"{missing[0]}: listed with a transcript but missing; reinstall its package")
    return recs, left_out


def build(out: str | os.PathLike[str], sources: Sequence[str] = SOURCES, sdist: Path | None = None) -> dict[str, Any]:
    """Build the set into the new folder ``out``; returns the summary."""
    from edge_runtime.fileio import atomic_write

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RealSpeechError(f"{out} already exists; choose a new --out or remove it")
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise RealSpeechError(f"--sources: unknown source {unknown[0]!r}; choose from {', '.join(SOURCES)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="real_speech_") as work:
            recs, left_out = collect(sources, Path(work), sdist)
            entries = [convert(r, tmp) for r in recs]
        with atomic_write(tmp / "manifest.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(asdict(e)) + "\n" for e in entries)
        summary = summarize(entries, left_out)
        with atomic_write(tmp / "summary.json", "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")
        (tmp / "LICENSES.md").write_text(licenses_md(summary))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def load(folder: str | os.PathLike[str]) -> list[Entry]:
    """The entries of a built set (``manifest.jsonl``)."""
    path = Path(folder) / "manifest.jsonl"
    if not path.is_file():
        raise RealSpeechError(f"{path}: no such file; build the set with 'python -m models.real_speech --out DIR'")
    try:
        return [Entry(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    except (ValueError, TypeError) as e:
        raise RealSpeechError(f"{path}: not a real-speech manifest ({e}); build the set again") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.real_speech", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, required=True, help="new folder for the set")
    ap.add_argument(
        "--sources",
        nargs="+",
        default=list(SOURCES),
        metavar="SOURCE",
        help=f"which sources to use (default: all of {' '.join(SOURCES)})",
    )
    ap.add_argument(
        "--pocketsphinx-sdist",
        type=Path,
        help=f"pocketsphinx-{POCKETSPHINX_VERSION}.tar.gz (default: fetched with pip download)",
    )
    args = ap.parse_args(argv)
    try:
        s = build(args.out, args.sources, args.pocketsphinx_sdist)
    except RealSpeechError as e:
        print(f"real_speech: error: {e}", file=sys.stderr)
        return 2
    for split, p in s["splits"].items():
        occ = ", ".join(f"{k} {n}" for k, n in p["keyword_occurrences"].items() if n)
        print(
            f"{split}: {p['files']} files, {p['minutes']} min ({p['keyword_free_minutes']} min keyword-free); "
            f"keywords: {occ or 'none'}"
        )
    print(f"wrote {args.out} ({len(s['left_out'])} source files left out, see summary.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
