"""The phrase model's evaluation: phrase clips said by held-out voices, the operating point chosen on
validation data only, and our recognizer beside pocketsphinx on the same files."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT, have, require

from edge_runtime.defaults import model_dir

COMMANDS = ROOT / "tests" / "data" / "asr" / "commands.txt"


@pytest.fixture(scope="module")
def phrase_sets(tmp_path_factory):
    require(
        shutil.which("espeak-ng") is not None and shutil.which("flite") is not None,
        "espeak-ng and flite are not installed (apt-get install espeak-ng flite)",
    )
    from models import asr_data

    d = tmp_path_factory.mktemp("phrases")
    grammar = d / "two.txt"
    grammar.write_text("start the coffee machine\nwhat is the (time|weather)\n")
    sets = {}
    for split in ("val", "test"):
        sets[split] = d / split
        meta = asr_data.generate_phrases(sets[split], grammar, per_phrase=1, jobs=2, progress=False, split=split)
        assert meta["phrases"] == 3 and meta["split"] == split
    return grammar, sets


def test_phrase_sets_are_said_by_held_out_voices(phrase_sets):
    from models import asr_data
    from models import kws_data as kd

    _, sets = phrase_sets
    params = kd.Params()
    used, _ = kd.licence_filter(kd.all_voices(params), params)
    voices = kd.split_voices(used, 0, params.split_fractions, params.held_out_engines)
    train = {v.id for v in voices["train"]}
    for split, folder in sets.items():
        rows = [json.loads(line) for line in (folder / "clips.jsonl").read_text().splitlines()]
        assert sorted(r["text"] for r in rows) == [
            "start the coffee machine",
            "what is the time",
            "what is the weather",
        ]
        assert all((folder / r["path"]).exists() and r["split"] == split for r in rows)
        assert not {r["speech"]["voice"] for r in rows} & train
    with pytest.raises(asr_data.AsrDataError, match="give val or test"):
        asr_data.generate_phrases(sets["val"].parent / "x", phrase_sets[0], split="train")


def test_tune_on_val_writes_the_operating_point_and_evaluate_reports_both_recognizers(tmp_path, phrase_sets, capsys):
    require(have("pocketsphinx"), "pocketsphinx is not installed (pip install 'edge-runtime[peers]')")
    from edge_runtime import manifest as mf
    from models import asr_eval

    grammar, sets = phrase_sets
    model = tmp_path / "asr"
    shutil.copytree(model_dir("asr"), model)
    # the val phrase set doubles as out-of-grammar speech for a grammar without its phrases
    oog = tmp_path / "oog"
    oog.mkdir()
    rows = [json.loads(line) for line in (sets["val"] / "clips.jsonl").read_text().splitlines()]
    (oog / "clips.jsonl").write_text(
        "".join(json.dumps({**r, "path": str(sets["val"] / r["path"])}) + "\n" for r in rows)
    )
    out = tmp_path / "tune.json"
    argv = ["--model", str(model), "--grammar", str(grammar), "--phrases", str(sets["val"]), "--engines", "onnx"]
    assert asr_eval.main([*argv, "--tune", "--out-of-grammar", str(oog), "--write", "--out", str(out)]) == 0
    point = json.loads(out.read_text())
    m, _ = mf.load(model)
    assert m.metrics["asr"]["min_confidence"] == point["min_confidence"] in asr_eval.THRESHOLDS
    assert [c["min_confidence"] for c in point["curve"]] == list(asr_eval.THRESHOLDS)
    out = tmp_path / "eval.json"
    argv = ["--model", str(model), "--grammar", str(grammar), "--phrases", str(sets["test"]), "--out", str(out)]
    assert asr_eval.main([*argv, "--engines", "onnx,litert"]) == 0
    res = json.loads(out.read_text())
    assert set(res) >= {"onnx", "litert", "pocketsphinx"}
    for k in ("onnx", "litert", "pocketsphinx"):
        r = res[k]["held_out_phrases"]
        assert r["clips"] == 3 and 0 <= r["phrase_accuracy"] <= 1 and r["rtf"] > 0
    assert res["onnx"]["min_confidence"] == point["min_confidence"]  # the manifest's operating point is used
    # the same clips as a telephone line passes them, both recognizers; the given files stay as they were
    before = {f: f.read_bytes() for f in sets["test"].rglob("*.wav")}
    assert asr_eval.main([*argv, "--engines", "onnx", "--telephone"]) == 0
    phone = json.loads(out.read_text())
    assert "telephone_channel" in phone["telephone"]
    assert phone["onnx"]["held_out_phrases"]["clips"] == phone["pocketsphinx"]["held_out_phrases"]["clips"] == 3
    assert {f: f.read_bytes() for f in sets["test"].rglob("*.wav")} == before
    with pytest.raises(SystemExit):
        asr_eval.main([*argv, "--tune", "--telephone"])
    capsys.readouterr()
    assert asr_eval.main([*argv[:4], "--phrases", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"asr_eval: error: {tmp_path / 'nowhere' / 'clips.jsonl'}: cannot read it (No such file or directory); "
        "pass a folder made by models.asr_data"
    )
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "clips.jsonl").write_text('{"path": "a.wav"}\n')
    assert asr_eval.main([*argv[:4], "--phrases", str(tmp_path / "rows"), "--out", str(out)]) == 2
    assert "a line lacks path or text" in capsys.readouterr().err


def test_g2p_writes_only_the_model_phonemes(tmp_path):
    require(shutil.which("espeak-ng") is not None, "espeak-ng is not installed (apt-get install espeak-ng)")
    from edge_runtime.asr.lexicon import load_lexicon
    from edge_runtime.manifest import load
    from models import g2p

    model = tmp_path / "asr"
    shutil.copytree(model_dir("asr"), model)
    m, _ = load(model)
    added = g2p.add_words(model / "lexicon.txt", ["hold", "kettle"], phrases=[["hold", "the", "kettle"]])
    assert added == ["hold"]  # "kettle" is in the shipped lexicon already
    load_lexicon(model / "lexicon.txt", [x for x in m.labels if x != "<blank>"])  # every phoneme is the model's
    # espeak-ng says "loch" with /x/, which the model does not output: the one word it cannot say
    assert g2p.unsayable(model, ["hold", "kettle", "loch", "bell"]) == ["loch"]
