"""The MobileNet recipe (python -m models.mobilenet): knowledge distillation on real digits, structured
pruning, bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DIGITS, have, require

TEACHER = DIGITS / "digits_mobilenetv2.keras"  # MobileNetV2 1.0, 96x96, 10 digits
PER_CLASS = 20
EPOCHS = 10  # of the small student in the alpha test


def _need_tf():
    require(have("tensorflow"), "TensorFlow is not installed (pip install -e '.[convert,test]')")
    require(TEACHER.is_file(), f"{TEACHER} is missing (python -m models.digits)")


@pytest.fixture(scope="module")
def digits_subset(tmp_path_factory) -> Path:
    """The first PER_CLASS held-out digits of every class, as class folders (200 32x32 PNGs)."""
    _need_tf()
    root = tmp_path_factory.mktemp("digits") / "data"
    for d in sorted((DIGITS / "data" / "eval").iterdir()):
        (root / d.name).mkdir(parents=True)
        for f in sorted(d.glob("*.png"))[:PER_CLASS]:
            shutil.copy(f, root / d.name / f.name)
    return root


def _small_student(seed: int = 0):
    """A small conv net ending in a softmax "scores" layer, as distill expects: fast to trace and train."""
    import keras

    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((32, 32, 3))
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="scores")(x))


def test_distillation_one_command(digits_subset, tmp_path, capsys):
    from models import mobilenet

    out = tmp_path / "student"
    code = mobilenet.main(
        [
            "--data",
            str(digits_subset),
            "--out",
            str(out),
            "--arch",
            "v3small",
            "--alpha",
            "0.75",
            "--size",
            "32",
            "--teacher",
            str(TEACHER),
            "--epochs",
            "2",
            "--seed",
            "0",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert (out / "model.keras").is_file()
    assert (out / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]  # no staging folder left behind
    info = json.loads((out / "training.json").read_text())
    assert (info["train_images"], info["val_images"]) == (160, 40)  # stratified 20 %: 4 of each digit
    kd = info["history"]["kd"]
    assert all(math.isfinite(v) and v > 0 for v in kd) and kd[-1] < kd[0]  # the teacher term is live and falls
    t = info["teacher"]
    assert t["val_accuracy"] >= 0.95  # the shipped teacher reads the 32x32 digits at its own 96x96
    # 2 epochs of a from-scratch student: far from the teacher, but well above chance (10 %) on held-out digits.
    assert t["val_agreement"] > 0.3 and info["val_accuracy"] > 0.3
    assert "student agrees with it on" in printed
    print(f"student val accuracy {info['val_accuracy']:.3f}, agreement with teacher {t['val_agreement']:.3f}, kd {kd}")

    # The saved student is an ordinary softmax classifier again (the logits were only for training).
    import keras

    model = keras.models.load_model(str(out / "model.keras"), compile=False)
    assert model.get_layer("scores").activation is keras.activations.softmax


def test_teacher_targets_drive_training_and_alpha_one_ignores_them(digits_subset):
    """Same seed: alpha 1 is plain label training (bit for bit, whatever the teacher); alpha 0 follows the teacher."""
    from models import mobilenet

    x, y, _ = mobilenet.load_folder(digits_subset, 32)
    wrong = np.eye(10)[(y + 1) % 10] * 0.9 + 0.01  # a teacher that always says "the next digit"
    kw = {"epochs": EPOCHS, "temperature": 2.0, "lr": 3e-3, "seed": 0, "verbose": 0}
    plain, no_kd, kd_only = _small_student(), _small_student(), _small_student()
    mobilenet.distill(plain, None, x, y, **kw)
    h1 = mobilenet.distill(no_kd, wrong, x, y, alpha=1.0, **kw)
    h0 = mobilenet.distill(kd_only, wrong, x, y, alpha=0.0, **kw)

    for a, b in zip(plain.get_weights(), no_kd.get_weights()):
        np.testing.assert_array_equal(a, b)  # deterministic, and alpha 1 leaves the teacher out exactly
    assert any(not np.array_equal(a, b) for a, b in zip(no_kd.get_weights(), kd_only.get_weights()))
    assert all(math.isfinite(v) for v in h0["kd"] + h1["kd"])
    # Trained on the teacher alone, the student learns the teacher's (shifted) answers, not the labels; and back.
    assert h0["agreement"][-1] > h0["accuracy"][-1] + 0.2
    assert h1["accuracy"][-1] > h1["agreement"][-1] + 0.2
    # The same at inference (softmax restored, batch-norm statistics re-estimated).
    assert mobilenet.evaluate(kd_only, x, (y + 1) % 10) > mobilenet.evaluate(kd_only, x, y) + 0.2
    assert h0["kd"][-1] < h0["kd"][0]


def _tiny_teacher(path: Path, classes: int) -> Path:
    import keras

    inp = keras.Input((32, 32, 3))
    out = keras.layers.Dense(classes, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    keras.Model(inp, out).save(str(path))
    return path


def _exit_code(argv: list[str]) -> int:
    from models import mobilenet

    try:
        return mobilenet.main(argv)
    except SystemExit as e:  # argparse errors exit from inside main
        return int(e.code)


def _tiny_v2(seed: int = 0):
    """MobileNetV2 0.35 at 32x32, random weights, with batch norms that are not the identity (so folding matters)."""
    import keras

    from models import mobilenet

    keras.utils.set_random_seed(seed)
    model = mobilenet.build("v2", 0.35, 32, 10)
    rng = np.random.default_rng(seed)
    for la in mobilenet.backbone(model).layers:
        if isinstance(la, keras.layers.BatchNormalization):
            gamma, beta, mean, var = la.get_weights()
            la.set_weights(
                [
                    rng.uniform(0.2, 2, gamma.shape),
                    rng.normal(0, 0.5, beta.shape),
                    rng.normal(0, 0.5, mean.shape),
                    rng.uniform(0.5, 2, var.shape),
                ]
            )
    return model


def test_prune_narrows_every_block_and_keeps_the_kept_weights():
    _need_tf()
    from models import mobilenet

    model = _tiny_v2()
    widths = mobilenet.expansion_widths(model)
    assert list(widths) == [f"block_{i}" for i in range(1, 17)]  # read from the graph: 16 expanding blocks
    assert (widths["block_1"], widths["block_16"]) == (48, 336)  # 0.35 * 16 rounded to 8, times 6
    target = mobilenet.pruned_widths(widths, 0.5)
    assert target["block_1"] == 24 and target["block_16"] == 168
    assert all(n % 8 == 0 and n >= 8 for n in mobilenet.pruned_widths(widths, 0.9).values())

    pruned = mobilenet.prune(model, target)
    assert mobilenet.expansion_widths(pruned) == target
    old, new = (mobilenet.backbone(m) for m in (model, pruned))
    for block, n in target.items():
        assert new.get_layer(f"{block}_depthwise").kernel.shape[2] == n
        assert new.get_layer(f"{block}_depthwise_BN").gamma.shape == (n,)
        assert new.get_layer(f"{block}_project").kernel.shape[2] == n
        assert new.get_layer(f"{block}_project").filters == old.get_layer(f"{block}_project").filters
    assert pruned.count_params() < 0.8 * model.count_params()
    print(f"parameters {model.count_params():,} -> {pruned.count_params():,}")

    # The ranking: L1 of each expansion output channel's kernel times |gamma| / sqrt(var + eps), by hand.
    conv, bn = old.get_layer("block_5_expand"), old.get_layer("block_5_expand_BN")
    folded = (
        np.abs(conv.kernel.numpy()).sum((0, 1, 2))
        * np.abs(bn.gamma.numpy())
        / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    )
    kept5 = np.sort(np.argsort(-folded)[: target["block_5"]])
    np.testing.assert_array_equal(new.get_layer("block_5_expand").kernel.numpy(), conv.kernel.numpy()[..., kept5])
    np.testing.assert_array_equal(
        new.get_layer("block_5_project").kernel.numpy(), old.get_layer("block_5_project").kernel.numpy()[:, :, kept5]
    )

    # Same outputs as the unpruned network whose removed channels are cut off (projection inputs zeroed).
    x = np.random.default_rng(1).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    l1 = mobilenet.l1_importance(model)
    for block, n in target.items():
        keep = np.sort(np.argsort(-l1[block])[:n])
        project = old.get_layer(f"{block}_project")
        kernel = project.kernel.numpy()
        kernel[:, :, np.setdiff1d(np.arange(kernel.shape[2]), keep)] = 0
        project.kernel.assign(kernel)
    want, got = (np.asarray(m(x, training=False)) for m in (old, new))
    assert np.abs(want).max() > 0.1  # the comparison is not between two zero tensors
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_taylor_importance_scores_a_cut_off_channel_zero_and_prunes_it_first():
    """The most important channel, once its projection weights are zero, cannot change the loss: score 0, pruned."""
    _need_tf()
    import keras

    from models import mobilenet

    keras.utils.set_random_seed(0)
    model = mobilenet.build("v2", 0.35, 32, 10)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-1, 1, (64, 32, 32, 3)).astype("float32"), rng.integers(0, 10, 64)
    before = mobilenet.taylor_importance(model, x, y, batch=32)
    assert list(before) == list(mobilenet.expansion_widths(model)) and before["block_3"].shape == (48,)
    top = int(before["block_3"].argmax())
    project = mobilenet.backbone(model).get_layer("block_3_project")
    kernel = project.kernel.numpy()
    kernel[:, :, top] = 0
    project.kernel.assign(kernel)
    score = mobilenet.taylor_importance(model, x, y, batch=32)["block_3"]
    assert np.isfinite(score).all() and before["block_3"][top] > 0 and score[top] == 0 and (score == 0).sum() <= 8
    pruned = mobilenet.prune(model, {"block_3": 40}, {"block_3": score})
    kept = np.sort(np.argsort(-score, kind="stable")[:40])
    assert top not in kept
    np.testing.assert_array_equal(
        mobilenet.backbone(pruned).get_layer("block_3_project").kernel.numpy(), kernel[:, :, kept]
    )


def test_prune_one_command_iterative_schedule(digits_subset, tmp_path):
    from models import mobilenet

    init = tmp_path / "tiny.keras"
    mobilenet.save(_tiny_v2(), init)
    out = tmp_path / "pruned"
    code = mobilenet.main(
        [
            "--data",
            str(digits_subset),
            "--out",
            str(out),
            "--init",
            str(init),
            "--prune",
            "0.5",
            "--prune-steps",
            "2",
            "--prune-epochs",
            "1",
            "--seed",
            "0",
        ]
    )
    assert code == 0
    info = json.loads((out / "training.json").read_text())["prune"]
    assert [s["fraction"] for s in info["schedule"]] == [0.25, 0.5]
    params = [info["params_before"]] + [s["params"] for s in info["schedule"]]
    assert params == sorted(params, reverse=True) and len(set(params)) == 3  # each step narrower
    assert info["widths_after"] == mobilenet.pruned_widths(info["widths_before"], 0.5)
    assert all(0 <= s["val_accuracy"] <= 1 for s in info["schedule"])

    import keras

    saved = keras.models.load_model(str(out / "model.keras"), compile=False)
    assert mobilenet.expansion_widths(saved) == info["widths_after"]
    assert saved.count_params() == info["params_after"]


@pytest.mark.parametrize("flag", ["--data", "--teacher", "--arch", "--weights", "--prune"])
def test_bad_input_one_line_exit_2_nothing_written(flag, digits_subset, tmp_path, capsys):
    data = ["--data", str(digits_subset)]
    argv = {
        "--data": lambda: ["--data", str(tmp_path / "nowhere")],  # no such folder
        "--teacher": lambda: data + ["--teacher", str(_tiny_teacher(tmp_path / "t3.keras", 3))],  # 3 classes, not 10
        "--arch": lambda: data + ["--arch", "v9"],
        "--weights": lambda: data + ["--arch", "v3small", "--weights", str(TEACHER)],  # a MobileNetV2 1.0 file
        "--prune": lambda: data + ["--prune", "1.5"],
    }[flag]()
    out = tmp_path / "out"
    code = _exit_code([*argv, "--out", str(out), "--size", "32", "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("mobilenet: error: ") and flag in err[0], err
    print(err[0])
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder either
