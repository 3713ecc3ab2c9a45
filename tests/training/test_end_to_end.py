"""A tiny train -> evaluate -> export on 120 synthetic frames, the manifest check, resume, and
the bad-input errors of `oanet train|evaluate|export`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from oanet.cli import main
from training.errors import ExportError, TrainingError
from training.metrics import PLAIN_OBJECTS, SUBTLE_OBJECTS
from triton_models.oanet_fusion import core, integrity

TINY = ["--features", "truth", "--image-size", "32", "--epochs", "1", "--fusion-epochs", "3", "--tree-rounds", "10", "--mask-copies", "1",
        "--embedding-dim", "16", "--quiet"]
# The run the tests share has a patch memory (off by default), so its served graph, export and
# Triton serving are tested with one.
MEMORY = ["--patch-memory", "2000"]


@pytest.fixture(scope="module")
def trained_run(e2e_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--data", str(e2e_dataset), "--out", str(run), *TINY, *MEMORY]) == 0
    return run


def test_train_writes_a_complete_run(trained_run: Path):
    for rel in ("args.json", "checkpoint.pt", "metrics.json", "model/image_encoder.pt", "model/profile.yaml",
                "model/fusion/fusion.json", "model/fusion/fusion_weights.npz"):
        assert (trained_run / rel).is_file(), rel
    config = json.loads((trained_run / "model/fusion/fusion.json").read_text())
    assert config["feature_names"][0] == "temp" and "lot_id" not in config["feature_names"]
    # the spec ranges travel with the model (the server reads no profile): the tree models see them
    assert config["format_version"] == core.FORMAT_VERSION and config["spec_ranges"][0] == [160.0, 185.0]
    assert len(config["spec_ranges"]) == len(config["feature_names"])
    assert len(config["trees"]) == 20  # 4 kinds x 5 folds
    assert 0.0 <= config["threshold"] <= 1.0
    assert set(config["gate"]) >= {"enabled", "image", "params", "base_weights"}
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics["val"]) == {"image", "params", "fused"}
    with np.load(trained_run / "model/fusion/fusion_weights.npz", allow_pickle=False) as npz:
        assert "pca_comp_1" in npz.files  # two refinement rounds by default
    import torch

    state = torch.load(trained_run / "checkpoint.pt", weights_only=True)
    assert state["stage"] == "done" and state["args"]["image_size"] == 32 and state["metrics"]["val"]
    # the checkpoint keeps the trained CNN alone; the served encoder adds the patch memory
    assert not any(key.startswith("memory.") for key in state["model"])
    memory = metrics["patch_memory"]
    assert memory["bank"] > 0 and memory["mix"]["fitted_on"] > 0 and set(memory["val_auroc"]) == {"cnn", "memory", "served"}
    assert 0.0 < memory["share_limit"] <= 1.0 and memory["val_degraded"] >= 0
    served = torch.jit.load(str(trained_run / "model/image_encoder.pt"))
    assert any(name.startswith("memory.") for name, _ in served.named_buffers())


def test_evaluate_writes_metrics_json_with_three_models(trained_run: Path, e2e_dataset: Path, tmp_path: Path, capsys):
    out = tmp_path / "m.json"
    assert main(["evaluate", "--run", str(trained_run), "--data", str(e2e_dataset), "--out", str(out), "--quiet",
                 "--ocr-missing", "0.6", "--grid-mask", "1"]) == 0
    report = json.loads(out.read_text())
    for name in ("fused", "image", "params"):
        m = report[name]
        for key in ("accuracy", "precision", "recall", "f1"):
            assert 0.0 <= m[key] <= 1.0
        assert sum(map(sum, m["confusion_matrix"])) == report["frames"]
    assert report["ocr_missing"] == 0.6
    assert "fused" in capsys.readouterr().out
    assert main(["evaluate", "--run", str(trained_run), "--data", str(e2e_dataset), "--out", str(out), "--quiet",
                 "--image-only"]) == 0
    assert set(json.loads(out.read_text())) & {"fused", "image", "params"} == {"image"}


def test_evaluate_metrics_follow_from_its_confusion_matrix_and_predictions(trained_run: Path, e2e_dataset: Path,
                                                                          tmp_path: Path):
    """Accuracy, precision and recall recomputed from the reported confusion matrix, the matrix
    recomputed from the per-frame predictions, and the per-cause AUROCs from the probabilities."""
    import csv

    from sklearn.metrics import roc_auc_score

    out, rows_file = tmp_path / "m.json", tmp_path / "pred.csv"
    # the train split: the only one of this small set with both defect causes
    assert main(["evaluate", "--run", str(trained_run), "--data", str(e2e_dataset), "--split", "train", "--out",
                 str(out), "--predictions", str(rows_file), "--quiet"]) == 0
    report = json.loads(out.read_text())
    with open(rows_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == report["frames"]
    labels = np.array([int(r["label"]) for r in rows])
    causes = np.array([r["cause"] for r in rows])
    assert set(causes[labels == 1]) == {"object", "param"} and set(causes[labels == 0]) == {"none"}
    manifest = (e2e_dataset / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in manifest if line.strip()]
    defects = {entry["id"]: entry["defect"] for entry in entries}
    subtle = {entry["id"]: entry.get("subtle") for entry in entries}
    # `oanet synth` records each object defect's severity, so the object defects are also pooled by it
    assert all(subtle[i] in (True, False) for i, d in defects.items() if d.startswith("object:"))
    assert all(subtle[i] is None for i, d in defects.items() if not d.startswith("object:"))
    severity_rows = {SUBTLE_OBJECTS: True, PLAIN_OBJECTS: False}
    for name in ("fused", "image", "params"):
        m = report[name]
        probs = np.array([float(r[f"{name}_probability"]) for r in rows])
        pred = np.array([int(r[f"{name}_defect"]) for r in rows])
        np.testing.assert_array_equal(pred, (probs >= m["threshold"]).astype(int))
        tn, fp = int(((pred == 0) & (labels == 0)).sum()), int(((pred == 1) & (labels == 0)).sum())
        fn, tp = int(((pred == 0) & (labels == 1)).sum()), int(((pred == 1) & (labels == 1)).sum())
        assert m["confusion_matrix"] == [[tn, fp], [fn, tp]], name
        assert m["accuracy"] == pytest.approx((tp + tn) / (tp + tn + fp + fn))
        assert m["precision"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)
        assert m["recall"] == pytest.approx(tp / (tp + fn))
        assert m["auroc"] == pytest.approx(roc_auc_score(labels, probs))
        for cause in ("object", "param"):
            keep = (labels == 0) | (causes == cause)
            assert m[f"auroc_{cause}"] == pytest.approx(roc_auc_score(labels[keep], probs[keep])), (name, cause)
        # by_defect: each defect kind's frames (a parameter defect under each of its fields)
        counted = set()
        shown = {kind for kind, flag in severity_rows.items()
                 if any(labels[i] == 1 and subtle[r["id"]] is flag for i, r in enumerate(rows))}
        assert shown and shown == set(severity_rows) & set(m["by_defect"]), name
        for kind, entry in m["by_defect"].items():
            if kind in severity_rows:
                members = [i for i, r in enumerate(rows) if labels[i] == 1 and subtle[r["id"]] is severity_rows[kind]]
            else:
                cause, item = kind.split(":")
                members = [i for i, r in enumerate(rows) if labels[i] == 1 and defects[r["id"]].split(":")[0] == cause
                           and item in defects[r["id"]].split(":")[1].split(",")]
                counted.update(members)
            assert entry["n"] == len(members), kind
            assert entry["recall"] == pytest.approx(pred[members].mean()), (name, kind)
            keep = np.r_[np.flatnonzero(labels == 0), members]
            assert entry["auroc"] == pytest.approx(roc_auc_score(labels[keep], probs[keep])), (name, kind)
        assert counted == set(np.flatnonzero(labels == 1).tolist())


def test_served_outputs_equal_evaluated_outputs(trained_run: Path, e2e_dataset: Path, tmp_path: Path):
    """What export writes, loaded fresh (TorchScript + core.py copy), reproduces evaluation."""
    import importlib.util

    import torch

    from training.evaluate import load_frames, load_run, predict

    repo = tmp_path / "repo"
    assert main(["export", "--run", str(trained_run), "--repo", str(repo)]) == 0
    run = load_run(trained_run)
    frames = load_frames(run, e2e_dataset, "test", None, progress=False)
    expected = predict(run.encoder, run.fusion, frames)
    spec = importlib.util.spec_from_file_location("exported_core", repo / "oanet_fusion/1/core.py")
    exported = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exported)
    fc = exported.FusionCore.load(repo / "oanet_fusion/1")
    encoder = torch.jit.load(str(repo / "oanet_image_encoder/1/model.pt"))
    with torch.no_grad():
        emb, logit = encoder(torch.from_numpy(frames.rois))
    got = fc.predict(emb.numpy(), logit.numpy()[:, 0], np.where(frames.missing, np.nan, frames.values), frames.missing)
    for key in ("defect_probability", "branch_probabilities", "gate_weights", "kl_scores"):
        assert np.allclose(got[key], expected[key], atol=1e-5), key


def test_export_versions_accumulate_and_tampering_is_detected(trained_run: Path, tmp_path: Path, capsys):
    repo = tmp_path / "repo"
    assert main(["export", "--run", str(trained_run), "--repo", str(repo)]) == 0
    assert main(["export", "--run", str(trained_run), "--repo", str(repo), "--cnn-backend", "libtorch"]) == 0
    for model in ("oanet", "oanet_image_encoder", "oanet_fusion"):
        assert (repo / model / "1").is_dir() and (repo / model / "2").is_dir()
        assert (repo / model / "config.pbtxt").is_file()
    version = repo / "oanet_fusion" / "2"
    for rel in ("core.py", "fusion.json", "fusion_weights.npz", "trees/gbdt_fold0.txt", "manifest.json"):
        assert (version / rel).is_file(), rel
    manifest = json.loads((version / "manifest.json").read_text())
    assert "oanet_image_encoder/2/model.pt" in manifest["files"]
    assert manifest["feature_names"] == json.loads((version / "fusion.json").read_text())["feature_names"]
    assert manifest["excluded_text_fields"] == ["lot_id"]
    for key in ("profile", "threshold", "metrics", "training_args", "tensors", "gate"):
        assert manifest[key], key
    assert integrity.version_problems(version) == []
    # never overwrite
    assert main(["export", "--run", str(trained_run), "--repo", str(repo), "--version", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "--repo", str(repo), "--verify"]) == 0
    # tamper one byte of a LightGBM file; delete the CNN
    tree = version / "trees" / "gbdt_fold0.txt"
    tree.write_text(tree.read_text().replace("Tree=0", "Tree=0 "))
    problems = integrity.version_problems(version)
    assert any("sha256 mismatch: oanet_fusion/2/trees/gbdt_fold0.txt" in p for p in problems)
    (repo / "oanet_image_encoder" / "1" / "model.pt").unlink()
    assert main(["export", "--repo", str(repo), "--verify", "--version", "1"]) == 2
    assert "missing file: oanet_image_encoder/1/model.pt" in capsys.readouterr().err
    assert main(["export", "--repo", str(repo), "--verify"]) == 2


def test_resume_finishes_an_interrupted_run(trained_run: Path, e2e_dataset: Path, tmp_path: Path):
    import torch

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["stage"], state["epoch"] = "cnn", 0  # as if stopped before the first epoch ended
    del state["args"]["cnn_grid_mask"]  # a run from before --cnn-grid-mask: its CNN used --grid-mask
    del state["args"]["patch_memory"]  # and from before the patch memory: resumed without one
    torch.save(state, run / "checkpoint.pt")
    shutil.rmtree(run / "model")
    with pytest.raises(SystemExit):
        main(["train", "--data", str(e2e_dataset)])  # --out required
    assert main(["train", "--data", str(e2e_dataset), "--out", str(run), *TINY]) == 2  # exists, no --resume
    assert main(["train", "--data", str(e2e_dataset), "--out", str(run), "--resume", "--quiet"]) == 0
    assert (run / "model" / "fusion" / "fusion.json").is_file()
    resumed = torch.load(run / "checkpoint.pt", weights_only=True)
    assert resumed["stage"] == "done"
    assert resumed["args"]["cnn_grid_mask"] == state["args"]["grid_mask"]
    assert resumed["args"]["patch_memory"] == 0
    assert json.loads((run / "metrics.json").read_text())["patch_memory"] is None


def test_resume_refuses_a_checkpoint_of_an_older_encoder(trained_run: Path, e2e_dataset: Path, tmp_path: Path, capsys):
    import torch

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["stage"], state["epoch"] = "cnn", 0
    state["model"]["mean"] = torch.zeros(1, 3, 1, 1)  # the data-set normalisation buffer of earlier versions
    torch.save(state, run / "checkpoint.pt")
    assert main(["train", "--data", str(e2e_dataset), "--out", str(run), "--resume", "--quiet"]) != 0
    assert "does not fit this version's encoder" in capsys.readouterr().err


def _copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_a_failed_start_leaves_the_out_folder_reusable(e2e_dataset: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    broken = _copy_dataset(e2e_dataset, tmp_path / "noimg")
    sorted((broken / "images").iterdir())[3].unlink()
    assert main(["train", "--data", str(broken), "--out", str(out), *TINY]) != 0
    assert main(["train", "--data", str(e2e_dataset), "--out", str(out), *TINY, "--epochs", "0"]) != 0
    assert not (out / "args.json").exists()
    (out / "args.json").write_text("{}")  # what a start killed before its first checkpoint leaves
    capsys.readouterr()
    assert main(["train", "--data", str(e2e_dataset), "--out", str(out), *TINY]) == 0, capsys.readouterr().err
    assert (out / "checkpoint.pt").is_file()


def test_bad_inputs_give_one_line_errors(e2e_dataset: Path, tmp_path: Path, capsys):
    def train_error(data: Path, *extra: str) -> str:
        code = main(["train", "--data", str(data), "--out", str(tmp_path / f"r{len(list(tmp_path.iterdir()))}"),
                     *TINY, *extra])
        err = capsys.readouterr().err.strip()
        assert code != 0 and len(err.splitlines()) == 1, err
        return err

    missing_image = _copy_dataset(e2e_dataset, tmp_path / "noimg")
    sorted((missing_image / "images").iterdir())[3].unlink()
    assert "image file(s) missing" in train_error(missing_image)

    malformed = _copy_dataset(e2e_dataset, tmp_path / "malformed")
    lines = (malformed / "manifest.jsonl").read_text().splitlines()
    lines[6] = lines[6][:-5]
    (malformed / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    assert "line 7" in train_error(malformed)

    one_class = _copy_dataset(e2e_dataset, tmp_path / "oneclass")
    rows = [json.loads(x) for x in (one_class / "manifest.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["label"] == 0]
    (one_class / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "only label 0" in train_error(one_class)

    few = _copy_dataset(e2e_dataset, tmp_path / "few")
    rows = [json.loads(x) for x in (few / "manifest.jsonl").read_text().splitlines()]
    defects = [r for r in rows if r["label"] == 1 and r["split"] == "train"]
    keep = {r["id"] for r in defects[:3]}
    rows = [r for r in rows if r["label"] == 0 or r["split"] != "train" or r["id"] in keep]
    (few / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "too few frames for 5-fold" in train_error(few)

    mismatch = _copy_dataset(e2e_dataset, tmp_path / "mismatch")
    rows = [json.loads(x) for x in (mismatch / "manifest.jsonl").read_text().splitlines()]
    for r in rows:
        r["params"].pop("humidity")
    (mismatch / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "profile/manifest mismatch" in train_error(mismatch)

    assert "--image-size must be at least 64" in train_error(e2e_dataset, "--encoder", "alexnet")
    assert "--crossfit-folds must be 0 (off) or at least 2" in train_error(e2e_dataset, "--crossfit-folds", "1")
    assert "--gate-weights" in train_error(e2e_dataset, "--gate-weights", "1,2")
    assert "cannot be used with --cnn-keep last" in train_error(e2e_dataset, "--cnn-keep", "last", "--cnn-patience", "2")

    assert main(["evaluate", "--run", str(tmp_path / "nothing"), "--data", str(e2e_dataset)]) == 2
    assert "not a finished training run" in capsys.readouterr().err
    with pytest.raises(ExportError, match="not a finished training run"):
        from training.export import export_run

        export_run(tmp_path / "nothing", tmp_path / "repo")
    assert issubclass(ExportError, TrainingError)


def test_ablation_writes_its_tables_and_plots(e2e_dataset: Path, tmp_path: Path):
    out = tmp_path / "abl"
    assert main(["ablation", "--data", str(e2e_dataset), "--out", str(out), "--repeats", "1", "--encoders", "compact",
                 "resnet18", *TINY, *MEMORY]) == 0
    t1 = (out / "table1.md").read_text()
    t2 = (out / "table2.md").read_text()
    assert "+ alignment + refinement + gate (OANet)" in t1
    assert "| compact | image only |" in t1 and "| resnet18 | image only |" in t1
    # the baselines: late fusion on the branch logits, image-only on object defects, OANet's gain
    assert "| compact | late fusion (LR on image + params logits) |" in t1
    assert "| compact | image only, object defects only |" in t1
    assert "OANet (compact) against the best baseline by AUROC" in t1
    assert t2.count("late fusion + resnet18") == 4
    assert t2.count("OANet + resnet18") == 4  # clean, missing, grid, both
    assert "Recall bound (any model" in t2
    # table 3: one row per defect kind of the test split, whose n is that kind's frame count
    t3 = (out / "table3.md").read_text()
    kinds = {}
    for row in map(json.loads, (e2e_dataset / "manifest.jsonl").read_text().splitlines()):
        if row.get("split") == "test" and row["defect"] != "none":
            cause, items = row["defect"].split(":")
            for item in items.split(","):
                kinds[f"{cause}:{item}"] = kinds.get(f"{cause}:{item}", 0) + 1
    assert kinds
    for kind, n in kinds.items():
        assert f"| compact | {kind} | {n} |" in t3, kind
    for png in ("pr_curves_resnet18.png", "confusion_resnet18.png", "gate_weights_resnet18.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())["results"]
    assert {r["condition"] for r in results if "condition" in r} == {"clean", "missing", "grid", "both"}
    clean = {r["variant"]: r["at_0.5"] for r in results
             if r.get("condition") == "clean" and r.get("encoder") == "compact" and "at_0.5" in r}
    # scored on the test split's good frames and object defects only (its parameter defects left out)
    test_rows = [r for r in map(json.loads, (e2e_dataset / "manifest.jsonl").read_text().splitlines())
                 if r.get("split") == "test"]
    assert clean["image only"]["n"] == len(test_rows)
    assert clean["image only, object defects only"]["n"] == sum(not r["defect"].startswith("param:") for r in test_rows)
    assert clean["late fusion (LR on image + params logits)"]["n"] == clean["image only"]["n"]
    # each seed's CNN: its restarts and the epoch it kept, as `train` reports them
    cnn = [r["cnn"] for r in results if "cnn" in r]
    assert len(cnn) == 2  # compact and resnet18, one repeat each
    for kept in cnn:
        assert kept["restarts"] >= 0 and kept["epoch"] >= 1 and 0.0 <= kept["val_auroc"] <= 1.0
        assert kept["attempt"] <= kept["restarts"]
    memories = [r["patch_memory"] for r in results if "cnn" in r]
    assert len(memories) == 2 and all(m["bank"] > 0 and m["mix"]["fitted_on"] > 0 for m in memories)
