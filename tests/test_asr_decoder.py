"""The grammar-constrained CTC decoder on synthetic CTC posteriors (models/ctc_synth.py): phrases and slots
come back, speech outside the grammar is rejected, chunking changes nothing, memory stays bounded."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.asr.decoder import DecoderOptions, GrammarDecoder, Result
from edge_runtime.asr.grammar import load_grammar, parse_grammar
from edge_runtime.asr.lexicon import LexiconError, load_lexicon, parse_lexicon
from edge_runtime.asr.prefix_tree import PrefixTree
from models.ctc_synth import OUT_OF_GRAMMAR, alignment, posteriors
from tests.conftest import ROOT

DATA = ROOT / "tests" / "data" / "asr"
BLANK = "<blank>"


@pytest.fixture(scope="module")
def commands():
    """The 50-phrase grammar over a model whose labels are the blank and its lexicon's phonemes."""
    grammar, lexicon = load_grammar(DATA / "commands.txt"), load_lexicon(DATA / "lexicon.txt")
    labels = [BLANK, *lexicon.phonemes, "x", "Z2"]  # two phonemes the grammar never uses
    tree = PrefixTree.build(grammar.expansions, lexicon, labels, BLANK, grammar.where)
    index = {lab: i for i, lab in enumerate(labels)}

    def spell(text: str) -> list[int]:
        return [index[p] for w in text.split() for p in lexicon.entries[w][0]]

    return grammar, tree, spell


def say(spell, rng, *texts, noise=0.3, gap=20):
    """Log-posteriors of ``texts`` said one after another with ``gap`` blank steps between."""
    frames: list[int] = []
    for t in texts:
        frames += alignment(spell(t), 0, rng, lead=gap, tail=0)
    return frames + [0] * gap


def decode(tree, x, options=None, chunks=None) -> list[Result]:
    d = GrammarDecoder(tree, options)
    if chunks is None:
        return d.push(x) + d.flush()
    out, i = [], 0
    for n in chunks:
        out += d.push(x[i : i + n])
        i += n
    return out + d.push(x[i:]) + d.flush()


@pytest.mark.parametrize("seed", [0, 1])
def test_every_phrase_of_a_50_phrase_grammar_comes_back_with_its_slots(commands, seed):
    grammar, tree, spell = commands
    rng = np.random.default_rng(seed)
    assert len(grammar.expansions) == 50
    for e in grammar.expansions:
        x = posteriors(say(spell, rng, e.text), len(tree.labels), rng, noise=0.3)
        (r,) = decode(tree, x)
        assert (r.phrase, r.slots, r.accepted) == (e.text, e.slots, True), (e.text, r)
        assert r.score > 0.9
    x = posteriors(say(spell, rng, "set a timer for fifteen minutes"), len(tree.labels), rng)
    assert decode(tree, x)[0].slots == {"minutes": "fifteen"}


def test_speech_outside_the_grammar_is_rejected_not_forced_onto_the_nearest_phrase(commands):
    grammar, tree, spell = commands
    phrases = {e.text for e in grammar.expansions}
    rng = np.random.default_rng(3)
    for text in OUT_OF_GRAMMAR:
        assert text not in phrases
        x = posteriors(say(spell, rng, text), len(tree.labels), rng, noise=0.3)
        (r,) = decode(tree, x)
        assert not r.accepted and r.score < 0.5, (text, r)


def test_babble_of_phonemes_the_grammar_never_uses_completes_nothing(commands):
    grammar, tree, spell = commands
    rng = np.random.default_rng(4)
    x_, z2 = tree.labels.index("x"), tree.labels.index("Z2")
    frames = [0] * 10 + [x_, 0, z2, z2, 0, x_, 0, z2] + [0] * 30
    (r,) = decode(tree, posteriors(frames, len(tree.labels), rng))
    assert r.phrase is None and not r.accepted and r.score == 0.0 and (r.t_start, r.t_end) == (10, 18)


def test_a_confused_phoneme_lowers_the_score_and_more_confusion_rejects(commands):
    """Spikes of a phrase turned into a phoneme the grammar never uses: the phrase is still the nearest, its
    score falls with each confusion (one confused spike of 16 phonemes: about 0.5), and five are rejected."""
    _, tree, spell = commands
    text = "turn off the bedroom light"
    scores = []
    for n_confused in (0, 1, 5):
        rng = np.random.default_rng(13)
        frames = say(spell, rng, text)
        spikes = [i for i, f in enumerate(frames) if f != 0 and (i == 0 or frames[i - 1] != f)]
        for i in spikes[1 : 1 + 2 * n_confused : 2]:
            frames[i : i + 2] = [tree.labels.index("x") if f == frames[i] else f for f in frames[i : i + 2]]
        (r,) = decode(tree, posteriors(frames, len(tree.labels), rng, noise=0.3))
        assert r.phrase == text, r
        scores.append(r.score)
        if n_confused != 1:  # one confusion sits near the default min_confidence: either way is right
            assert r.accepted == (n_confused == 0), (n_confused, r)
    assert scores[0] > scores[1] > scores[2]


def test_posteriors_with_exact_zeros_decode(commands):
    """log(0) = -inf, as a quantized softmax gives: paths through it are impossible, nothing breaks."""
    _, tree, spell = commands
    rng = np.random.default_rng(14)
    frames = say(spell, rng, "call dad")
    with np.errstate(divide="ignore"):
        x = np.log(np.eye(len(tree.labels))[frames])
    (r,) = decode(tree, x)
    assert (r.phrase, r.accepted, r.score) == ("call dad", True, 1.0)
    frames = say(spell, rng, "call the radio")
    with np.errstate(divide="ignore"):
        (r,) = decode(tree, np.log(np.eye(len(tree.labels))[frames]))
    assert not r.accepted and r.score == 0.0


def test_blank_noise_alone_gives_no_utterance(commands):
    _, tree, _ = commands
    rng = np.random.default_rng(5)
    assert decode(tree, posteriors([0] * 500, len(tree.labels), rng, noise=0.4)) == []


def test_repeated_phonemes_need_a_blank_between_them():
    """'t t a' is 'tta' only with a blank between the two t; a two-step t is one t."""
    grammar = parse_grammar("tta\nta\n", "g.txt")
    lexicon = parse_lexicon("tta t t a\nta t a\n", "lex.txt")
    tree = PrefixTree.build(grammar.expansions, lexicon, [BLANK, "t", "a"], BLANK, "g.txt")
    rng = np.random.default_rng(6)
    one_t, two_t = [0, 1, 1, 2, 0], [0, 1, 0, 1, 2, 0]
    for frames, phrase in [(one_t, "ta"), (two_t, "tta")]:
        (r,) = decode(tree, posteriors(frames + [0] * 10, 3, rng, noise=0.1))
        assert r.phrase == phrase and r.accepted


def test_the_end_comes_after_end_steps_blanks_following_a_completed_phrase(commands):
    _, tree, spell = commands
    rng = np.random.default_rng(7)
    speech = alignment(spell("good night"), 0, rng, lead=3, tail=0)
    options = DecoderOptions(end_steps=8)
    d = GrammarDecoder(tree, options)
    assert d.push(posteriors(speech + [0] * 7, len(tree.labels), rng, noise=0.1)) == []
    assert d.in_utterance
    (r,) = d.push(posteriors([0], len(tree.labels), rng, noise=0.1))
    assert r.phrase == "good night" and (r.t_start, r.t_end) == (3, len(speech))
    assert not d.in_utterance and d.flush() == []


def test_a_pause_inside_a_phrase_does_not_end_it(commands):
    """After 'turn on the' no phrase is complete: the end waits for abandon_steps, not end_steps."""
    _, tree, spell = commands
    rng = np.random.default_rng(8)
    first = alignment(spell("turn on the"), 0, rng, lead=5, tail=0)
    second = alignment(spell("kitchen light"), 0, rng, lead=15, tail=12)
    (r,) = decode(
        tree, posteriors(first + second, len(tree.labels), rng), DecoderOptions(end_steps=8, abandon_steps=25)
    )
    assert r.phrase == "turn on the kitchen light" and r.accepted and r.t_start == 5


def test_flush_ends_a_phrase_that_ends_the_stream(commands):
    _, tree, spell = commands
    rng = np.random.default_rng(9)
    x = posteriors(alignment(spell("read me the news"), 0, rng, tail=2), len(tree.labels), rng)
    d = GrammarDecoder(tree)
    assert d.push(x) == []
    (r,) = d.flush()
    assert r.phrase == "read me the news" and r.accepted


def test_chunked_is_the_same_as_whole_for_any_chunk_sizes(commands):
    _, tree, spell = commands
    rng = np.random.default_rng(10)
    texts = ["turn off the hall light", "lock the window", "set the volume to four", "call mum", "play the news"]
    x = posteriors(say(spell, rng, *texts, gap=12), len(tree.labels), rng, noise=0.3)
    whole = decode(tree, x)
    assert [(r.phrase, r.accepted) for r in whole] == [
        ("turn off the hall light", True),
        (whole[1].phrase, False),  # out of grammar
        ("set the volume to four", True),
        ("call mum", True),
        (whole[4].phrase, False),
    ]
    assert whole[2].slots == {"level": "four"}
    assert all(a.t_end < b.t_start for a, b in zip(whole, whole[1:]))
    for chunks in ([1] * len(x), [7] * (len(x) // 7), list(rng.integers(0, 40, size=30))):
        assert decode(tree, x, chunks=chunks) == whole


def test_memory_stays_bounded_on_a_long_stream_of_speech(commands):
    """20,000 steps of babble that never pauses: utterances are cut at max_steps, the beams stay within bounds."""
    _, tree, _ = commands
    rng = np.random.default_rng(11)
    options = DecoderOptions(beam=8, loop_beam=3, loop_tokens=2, max_steps=400)
    frames = rng.integers(1, len(tree.labels), size=20_000)
    d = GrammarDecoder(tree, options)
    results, most = [], (0, 0, 0)
    for i in range(0, len(frames), 500):
        results += d.push(posteriors(frames[i : i + 500], len(tree.labels), rng, noise=0.3))
        most = tuple(max(a, b) for a, b in zip(most, d.held))
    assert len(results) == 20_000 // 400 and not any(r.accepted for r in results)
    assert all(r.t_end - r.t_start <= 400 for r in results)
    assert most[0] <= 8 and most[1] <= 3 and most[2] <= 1 + 3 * 2 * 400


def test_bad_input_and_options_are_refused(commands):
    _, tree, _ = commands
    d = GrammarDecoder(tree)
    with pytest.raises(ValueError, match=rf"log-posteriors must be \(steps, {len(tree.labels)}\), got \(4, 3\)"):
        d.push(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="log-posteriors contain NaN"):
        d.push(np.full((2, len(tree.labels)), np.nan))
    probabilities = np.full((3, len(tree.labels)), 1 / len(tree.labels))
    got = f"{np.log(len(tree.labels)) + 1 / len(tree.labels):.3g}"
    with pytest.raises(ValueError, match=rf"log-posteriors must be natural logs of probabilities .* got {got}\)"):
        d.push(probabilities)  # not their logs
    with pytest.raises(ValueError, match=r"got -inf\)"):
        d.push(np.full((1, len(tree.labels)), -np.inf))
    with pytest.raises(ValueError, match=r"decoder option beam must be a whole number from 1 to 256, got 0"):
        DecoderOptions(beam=0)
    with pytest.raises(ValueError, match=r"decoder option min_confidence must be from 0 to 1, got 2"):
        DecoderOptions(min_confidence=2)


def test_the_tree_keeps_word_boundaries_and_homophones_apart():
    grammar = parse_grammar("turn on\nturnon\nvolume (two|to)\n", "g.txt")
    lexicon = parse_lexicon("turn t 3: n\non O2 n\nturnon t 3: n O2 n\nvolume v 0 l\ntwo t u:\nto t u:\n", "lex.txt")
    labels = [BLANK, "t", "3:", "n", "O2", "v", "0", "l", "u:"]
    tree = PrefixTree.build(grammar.expansions, lexicon, labels, BLANK, "g.txt")
    ends = {tuple(grammar.expansions[e].text for e in tree.ends[n]) for n in range(tree.size) if tree.ends[n]}
    assert ends == {("turn on",), ("turnon",), ("volume two", "volume to")}
    rng = np.random.default_rng(12)
    (r,) = decode(tree, posteriors([0, 1, 2, 3, 0, 4, 3] + [0] * 10, len(labels), rng, noise=0.1))
    assert r.phrase == "turn on" and r.words == ("turn", "on")  # the first line's reading of the same sound


def test_the_tree_names_words_and_phonemes_the_model_lacks():
    grammar = parse_grammar("turn on the lamp\n", "g.txt")
    lexicon = parse_lexicon("turn t 3: n\non O2 n\nthe D @\nlamp l a m p\n", "lex.txt")
    with pytest.raises(LexiconError) as e:
        PrefixTree.build(
            grammar.expansions, lexicon, [BLANK, "t", "3:", "n", "O2", "D", "@", "l", "a", "m"], BLANK, "g.txt"
        )
    assert (
        str(e.value)
        == "lex.txt: 'lamp': phoneme 'p' is not one the model outputs; use the lexicon shipped with the model"
    )
    with pytest.raises(LexiconError, match=r"^the model's labels have no blank '<blank>'; re-convert the model$"):
        PrefixTree.build(grammar.expansions, lexicon, ["t"], BLANK, "g.txt")
    with pytest.raises(LexiconError, match=r"^g\.txt: 'on', 'the' are not in the model's lexicon small\.txt"):
        PrefixTree.build(
            grammar.expansions, parse_lexicon("turn t\nlamp l\n", "small.txt"), [BLANK, "t", "l"], BLANK, "g.txt"
        )


def test_the_board_side_of_speech_commands_imports_numpy_only():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import edge_runtime.asr.grammar, edge_runtime.asr.lexicon, edge_runtime.asr.prefix_tree\n"
        "import edge_runtime.asr.decoder\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in ('tensorflow', 'keras', 'converters', 'models', 'tf2onnx', 'scipy'))\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stderr


def test_decoding_recorded_posteriors_of_the_shipped_model():
    """Log-posteriors the shipped phrase model gave (ONNX) on two sentences Pico said (en-GB, an engine it
    never trained on), kept in tests/data/asr/recorded_posteriors.npz: "set a timer for ten minutes" and
    an out-of-grammar sentence ("the weather report said it would rain all weekend")."""
    from edge_runtime.defaults import model_dir

    rec = np.load(DATA / "recorded_posteriors.npz")
    labels = [str(x) for x in rec["labels"]]
    grammar = load_grammar(DATA / "commands.txt")
    lexicon = load_lexicon(model_dir("asr") / "lexicon.txt", labels[1:])
    tree = PrefixTree.build(grammar.expansions, lexicon, labels, "<blank>", grammar.where)
    got = [r for r in _decode(tree, rec["phrase"]) if r.accepted]
    assert [(r.phrase, r.slots) for r in got] == [("set a timer for ten minutes", {"minutes": "ten"})], got
    assert got[0].score >= 0.3
    assert not [r for r in _decode(tree, rec["other"]) if r.accepted]


def _decode(tree, logprobs):
    d = GrammarDecoder(tree, DecoderOptions(min_confidence=0.2))
    return d.push(logprobs) + d.flush()
