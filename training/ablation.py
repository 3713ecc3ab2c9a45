"""`oanet ablation`: the structure of the paper's Table 1 and Table 2, mean ± std over repeats.

Per encoder and repeat (seed = --seed + repeat): the CNN, the augmented fusion table and the
LightGBM bag are trained once; every fusion variant (alignment / refinement / gate switched
on or off) is then trained on top of them and scored on the test split. Table 2 scores the
image-only model and the full model on the test split clean, with `--missing-rate` of the OCR
fields made missing at random, with GridMask on the object image, and with both (seeded, the
same corruption for every variant).

Metrics are taken at threshold 0.5 (the paper's argmax protocol); the operating point
(threshold chosen on validation for the target recall) is reported beside it.

Baselines beside the paper's rows: the image-only and params-only branches, a late fusion (a
logistic regression on the two branch logits, fitted on the validation frames), and the image
branch scored on object defects only (good frames and object-caused defects: what it is
trained to see). Table 1 states OANet's gain over the best baseline scored on all frames.

Table 3 gives the AUROC of each defect kind against the good frames (clean test split) for the
image-only, params-only, late-fusion and OANet rows.

Writes OUT/table1.md, OUT/table2.md, OUT/table3.md, OUT/results.json (every repeat, with each seed's CNN restarts,
kept epoch and patch memory report) and OUT/*.png
(PR curves, confusion matrices, gate-weight histograms).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from training import data as data_mod
from training.data import corrupt
from training.errors import TrainingError
from training.fusion import operating_threshold
from training.metrics import binary_metrics, metrics_by_defect
from triton_models.oanet_fusion import core

# name, alignment, refinement, gate (None: the image-only / params-only baselines)
VARIANTS: list[tuple[str, bool | None, bool | None, bool | None]] = [
    ("image only", None, None, None),
    ("+ alignment", True, False, False),
    ("+ alignment + refinement", True, True, False),
    ("+ alignment + refinement + gate (OANet)", True, True, True),
    ("+ alignment + gate", True, False, True),
    ("refinement + gate, no alignment", False, True, True),
    ("params only (LightGBM bag)", None, None, None),
    ("late fusion (LR on image + params logits)", None, None, None),
    ("image only, object defects only", None, None, None),
]
FULL = "+ alignment + refinement + gate (OANet)"
PARAMS_ONLY = "params only (LightGBM bag)"
LATE = "late fusion (LR on image + params logits)"
IMAGE_OBJECT = "image only, object defects only"
# The baselines OANet is measured against (all scored on every frame of the split).
BASELINES = ("image only", PARAMS_ONLY, LATE)
BOUND = "recall bound"
CONDITIONS = ("clean", "missing", "grid", "both")
METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "auroc", "recall_at_p90")


def _variant_args(args: argparse.Namespace, align: bool, refine: bool, gate: bool) -> argparse.Namespace:
    a = copy.copy(args)
    a.align = align
    a.refine_rounds = args.refine_rounds if refine else 0
    a.gate = gate
    return a


def branch_logits(out: dict[str, np.ndarray]) -> np.ndarray:
    """[N, 2]: logit of the image and of the params branch probability."""
    return core.logit(out["branch_probabilities"][:, :2])


def fit_late_fusion(val_out: dict[str, np.ndarray], labels: np.ndarray):
    """The late-fusion baseline: a logistic regression on the two branch logits, fitted on the
    validation frames (the branches were trained on the train split)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000).fit(branch_logits(val_out), np.asarray(labels).astype(int))


def _scores(out: dict[str, np.ndarray], variant: str, late) -> np.ndarray:
    if variant in ("image only", IMAGE_OBJECT):
        return out["branch_probabilities"][:, 0]
    if variant == PARAMS_ONLY:
        return out["branch_probabilities"][:, 1]
    if variant == LATE:
        return late.predict_proba(branch_logits(out))[:, 1]
    return out["defect_probability"]


def recall_bound(causes: list[str], details: list[list[str]], feature_names: list[str],
                 missing: np.ndarray) -> float | None:
    """The highest recall any model can reach on these frames: every object defect found (a
    perfect image model), and a parameter defect found only when at least one of its
    out-of-spec fields was read (OCR returned it). A parameter defect whose every out-of-spec
    field is missing looks like a good frame to the parameter branch and is invisible in the
    image, so no fusion can recover it; Table 2 prints this bound beside the models."""
    column = {name: j for j, name in enumerate(feature_names)}
    found = []
    for i, cause in enumerate(causes):
        if cause == "object":
            found.append(True)
        elif cause == "param":
            cols = [column[f] for f in details[i] if f in column]
            found.append(any(not missing[i, j] for j in cols))
    return float(np.mean(found)) if found else None


def _operating_threshold(fc: core.FusionCore, variant: str, late_threshold: float) -> float:
    if variant in ("image only", IMAGE_OBJECT):
        return fc.config["branch_thresholds"]["image"]
    if variant == PARAMS_ONLY:
        return fc.config["branch_thresholds"]["params"]
    if variant == LATE:
        return late_threshold
    return fc.threshold


def _frames_scored(frames, variant: str) -> np.ndarray:
    """Which frames a variant is scored on: all, or good + object defects for IMAGE_OBJECT."""
    if variant == IMAGE_OBJECT:
        return np.array([label == 0 or cause == "object" for label, cause in zip(frames.labels, frames.causes,
                                                                                   strict=True)])
    return np.ones(len(frames), dtype=bool)


def run_ablation(args: argparse.Namespace, progress: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    from training.cnn import AUTO_ENCODER, extract
    from training.train import fusion_stage, image_stage, resolve_encoder, validate_args

    if args.repeats < 1:
        raise TrainingError("--repeats must be at least 1")
    if not 0.0 <= args.missing_rate <= 1.0 or not 0.0 <= args.eval_grid_mask <= 1.0:
        raise TrainingError("--missing-rate and --eval-grid-mask must be in [0, 1]")
    bundles: dict[int, data_mod.DataBundle] = {}
    results: list[dict[str, Any]] = []
    plots: dict[str, Any] = {}
    if AUTO_ENCODER in args.encoders:  # chosen once, so the tables name the encoder that ran
        probe = copy.copy(args)
        probe.encoder = AUTO_ENCODER
        validate_args(probe)
        bundles[probe.image_size] = data_mod.load_bundle(args.data, probe.image_size, probe.features,
                                                         progress=progress)
        chose = resolve_encoder(probe, bundles[probe.image_size].splits["train"])
        if progress:
            print(chose, flush=True)
        args.encoders = list(dict.fromkeys(probe.encoder if e == AUTO_ENCODER else e for e in args.encoders))
    jobs = [(enc, r) for enc in args.encoders for r in range(args.repeats)]
    bar = tqdm(jobs, desc="ablation", unit="run", disable=not progress)
    for encoder, repeat in bar:
        bar.set_postfix(encoder=encoder, repeat=repeat + 1)
        a = copy.copy(args)
        a.encoder, a.seed = encoder, args.seed + repeat
        validate_args(a)
        if a.image_size not in bundles:
            bundles[a.image_size] = data_mod.load_bundle(args.data, a.image_size, a.features, progress=progress)
        bundle = bundles[a.image_size]
        data_mod.check_trainable(bundle, max(a.folds, a.crossfit_folds))
        started = time.perf_counter()
        stage = image_stage(bundle, a, progress=False)
        test = bundle.splits["test"]
        corrupted = {
            "clean": test,
            "missing": corrupt(test, args.missing_rate, 0.0, a.seed),
            "grid": corrupt(test, 0.0, args.eval_grid_mask, a.seed),
            "both": corrupt(test, args.missing_rate, args.eval_grid_mask, a.seed),
        }
        test_entries = bundle.dataset.split("test")
        details = {e.id: e.defect_detail for e in test_entries}
        defects = {e.id: e.defect for e in test_entries}
        subtle = {e.id: e.subtle for e in test_entries}
        for cond, frames in corrupted.items():
            bound = recall_bound(frames.causes, [details[i] for i in frames.ids], bundle.feature_names, frames.missing)
            results.append({"encoder": encoder, "repeat": repeat, "condition": cond, "variant": BOUND,
                            "recall_bound": bound})
        cnn_out = {c: extract(stage.model, f.rois, a.device) for c, f in corrupted.items()}
        val = bundle.splits["val"]
        with tempfile.TemporaryDirectory(prefix="oanet-ablation-") as tmp:
            fitted: dict[tuple, core.FusionCore] = {}
            late, late_threshold = None, 0.5
            for name, align, refine, gate in VARIANTS:
                key = (True, True, True) if align is None else (align, refine, gate)
                if key not in fitted:
                    fitted[key], _ = fusion_stage(bundle, stage, _variant_args(a, *key), Path(tmp) / "-".join(map(str, key)),
                                                  progress=False)
                fc = fitted[key]
                if name == LATE and late is None:
                    val_out = fc.predict(stage.val_embedding, stage.val_logit, np.where(val.missing, np.nan, val.values),
                                         val.missing)
                    late = fit_late_fusion(val_out, val.labels)
                    late_threshold = operating_threshold(val.labels, _scores(val_out, LATE, late), a.target_recall,
                                                         a.min_precision)
                threshold = _operating_threshold(fc, name, late_threshold)
                for cond, frames in corrupted.items():
                    emb, logit = cnn_out[cond]
                    out = fc.predict(emb, logit, np.where(frames.missing, np.nan, frames.values), frames.missing)
                    keep = _frames_scored(frames, name)
                    labels, scores = frames.labels[keep], _scores(out, name, late)[keep]
                    record = {
                        "encoder": encoder, "repeat": repeat, "seed": a.seed, "variant": name, "condition": cond,
                        "at_0.5": binary_metrics(labels, scores, 0.5),
                        "operating": binary_metrics(labels, scores, threshold),
                        "mean_gate_weights": out["gate_weights"][keep].mean(axis=0).tolist(),
                    }
                    if cond == "clean":
                        kept_ids = [frame_id for frame_id, k in zip(frames.ids, keep, strict=True) if k]
                        record["by_defect"] = metrics_by_defect(labels, scores, [defects[i] for i in kept_ids],
                                                                threshold, [subtle[i] for i in kept_ids])
                    results.append(record)
                    if repeat == 0:
                        plots[(encoder, name, cond)] = {"labels": labels, "scores": scores,
                                                        "weights": out["gate_weights"][keep], "threshold": threshold}
        # The CNN's restarts and kept epoch per seed: how often the onset needs a restart, or
        # exhausts them, is what a change to the restart policy has to be measured against.
        results.append({"encoder": encoder, "repeat": repeat, "seconds": round(time.perf_counter() - started, 1),
                        "cnn": {"restarts": sum(bool(r.get("restart")) for r in stage.history),
                                **stage.best.summary()},
                        "patch_memory": None if stage.memory is None else stage.memory.to_json()})
    return {"results": results, "plots": plots}


def _agg(results: list[dict], encoder: str, variant: str, cond: str, which: str) -> dict[str, tuple[float, float]]:
    rows = [r[which] for r in results if r.get("variant") == variant and r.get("encoder") == encoder
            and r.get("condition") == cond]
    out = {}
    for k in METRIC_KEYS:
        vals = [100.0 * r[k] for r in rows if r[k] is not None]
        out[k] = (float(np.mean(vals)), float(np.std(vals))) if vals else (float("nan"), float("nan"))
    return out


def _fmt(ms: tuple[float, float]) -> str:
    return f"{ms[0]:.2f} ± {ms[1]:.2f}"


def table1(results: list[dict], encoders: list[str], repeats: int) -> str:
    lines = [
        f"# Table 1: ablation on the test split (mean ± std over {repeats} repeat(s), percent)",
        "",
        "Accuracy, precision, recall and F1 at threshold 0.5 (the paper's argmax protocol); R@P90 is the highest "
        "recall at a precision of at least 90% (any threshold: the models compared at equal precision); the last "
        "two columns are recall and precision at the operating threshold chosen on validation for the target "
        "recall.",
        "",
        "| Image encoder | Variant | Alignment | Refinement | Gate | Accuracy | Precision | Recall | F1 | AUROC "
        "| R@P90 | Recall @op | Precision @op |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    mark = {True: "✓", False: "✗", None: "–"}
    for enc in encoders:
        for name, align, refine, gate in VARIANTS:
            m = _agg(results, enc, name, "clean", "at_0.5")
            op = _agg(results, enc, name, "clean", "operating")
            flags = (False, False, False) if name == "image only" else (align, refine, gate)
            lines.append(f"| {enc} | {name} | {mark[flags[0]]} | {mark[flags[1]]} | {mark[flags[2]]} | "
                         + " | ".join(_fmt(m[k]) for k in METRIC_KEYS) + f" | {_fmt(op['recall'])} | "
                         f"{_fmt(op['precision'])} |")
    lines += ["", f"Late fusion: a logistic regression on the image and params branch logits, fitted on the validation "
              f"frames. \"{IMAGE_OBJECT}\": the image branch scored on the good frames and the object-caused defects "
              "only (it is not compared below: other frames)."]
    lines += [gain_line(results, enc) for enc in encoders]
    return "\n".join(lines) + "\n"


def gain_line(results: list[dict], encoder: str) -> str:
    """OANet against the best baseline (highest mean AUROC, clean test split) of one encoder."""
    means = {name: _agg(results, encoder, name, "clean", "at_0.5") for name in (FULL, *BASELINES)}
    best = max(BASELINES, key=lambda name: np.nan_to_num(means[name]["auroc"][0], nan=-1.0))
    diffs = ", ".join(f"{label} {means[FULL][k][0] - means[best][k][0]:+.2f}"
                      for k, label in (("auroc", "AUROC"), ("recall_at_p90", "R@P90"), ("recall", "recall at 0.5"),
                                       ("precision", "precision at 0.5")))
    return (f"OANet ({encoder}) against the best baseline by AUROC, {best}: {diffs} points (mean over "
            "repeats, clean test split).")


def table2(results: list[dict], encoders: list[str], repeats: int, missing_rate: float, grid: float) -> str:
    lines = [
        f"# Table 2: robustness on the test split (mean ± std over {repeats} repeat(s), percent)",
        "",
        f"Random missing: each OCR field missing with probability {missing_rate}; grid mask: GridMask on each "
        f"object image with probability {grid}. Threshold 0.5; R@P90 as in Table 1; operating-point recall in the last column.",
        "",
        "| Method | Random missing | Grid mask | Accuracy | Precision | Recall | F1 | AUROC | R@P90 | Recall @op |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    flags = {"clean": ("✗", "✗"), "missing": ("✓", "✗"), "grid": ("✗", "✓"), "both": ("✓", "✓")}
    for enc in encoders:
        rows = [(f"{enc} image only", "image only", ("clean", "grid"))]
        rows.append((f"OANet + {enc}", FULL, CONDITIONS))
        rows.append((PARAMS_ONLY, PARAMS_ONLY, ("clean", "missing")))
        rows.append((f"late fusion + {enc}", LATE, CONDITIONS))
        for label, variant, conds in rows:
            for cond in conds:
                m = _agg(results, enc, variant, cond, "at_0.5")
                op = _agg(results, enc, variant, cond, "operating")
                lines.append(f"| {label} | {flags[cond][0]} | {flags[cond][1]} | "
                             + " | ".join(_fmt(m[k]) for k in METRIC_KEYS) + f" | {_fmt(op['recall'])} |")
    bounds = {cond: [100.0 * r["recall_bound"] for r in results if r.get("variant") == BOUND
                     and r.get("condition") == cond and r.get("recall_bound") is not None] for cond in ("clean", "missing")}
    if all(bounds.values()):
        clean, missing = (float(np.mean(bounds[c])) for c in ("clean", "missing"))
        lines += ["", f"Recall bound (any model; a perfect image model, and a parameter defect found only when at "
                  f"least one of its out-of-spec fields was read): {clean:.2f} clean, {missing:.2f} with random "
                  f"missing ({clean - missing:.2f} points lost to the missing fields alone)."]
    return "\n".join(lines) + "\n"


BY_DEFECT_VARIANTS = ("image only", PARAMS_ONLY, LATE, FULL)


def table3(results: list[dict], encoders: list[str], repeats: int) -> str:
    """AUROC of each defect kind's frames against the good frames, clean test split: which kinds
    each branch finds, which the pooled AUROC of Table 1 averages away."""
    lines = [
        f"# Table 3: AUROC per defect kind on the clean test split (mean ± std over {repeats} repeat(s), percent)",
        "",
        "Each defect kind's frames against the good frames; a parameter defect counts under each of its "
        "out-of-spec fields. n: frames of the kind in the test split.",
        "",
        "| Image encoder | Defect kind | n | " + " | ".join(BY_DEFECT_VARIANTS) + " |",
        "|---|---|---|" + "---|" * len(BY_DEFECT_VARIANTS),
    ]
    for enc in encoders:
        rows = {v: [r["by_defect"] for r in results if r.get("variant") == v and r.get("encoder") == enc
                    and r.get("condition") == "clean" and "by_defect" in r] for v in BY_DEFECT_VARIANTS}
        kinds = sorted({kind for per_seed in rows[FULL] for kind in per_seed})
        for kind in kinds:
            cells = []
            for v in BY_DEFECT_VARIANTS:
                vals = [100.0 * seed[kind]["auroc"] for seed in rows[v] if seed.get(kind, {}).get("auroc") is not None]
                cells.append(_fmt((float(np.mean(vals)), float(np.std(vals)))) if vals else "–")
            n = rows[FULL][0].get(kind, {}).get("n", 0) if rows[FULL] else 0
            lines.append(f"| {enc} | {kind} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_plots(plots: dict, encoders: list[str], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    written = []
    for enc in encoders:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for ax, cond in zip(axes, ("clean", "both"), strict=True):
            for name in ("image only", PARAMS_ONLY, LATE, "+ alignment", FULL):
                item = plots.get((enc, name, cond))
                if item is None or len(set(item["labels"].tolist())) < 2:
                    continue
                p, r, _ = precision_recall_curve(item["labels"], item["scores"])
                ax.plot(r, p, label=name)
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
            ax.set_title(f"{enc}, test {cond}")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower left")
        written.append(_save(fig, out / f"pr_curves_{enc}.png"))

        fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
        cells = [("image only", "clean"), (FULL, "clean"), (FULL, "missing"), (FULL, "both")]
        for ax, (name, cond) in zip(axes, cells, strict=True):
            item = plots.get((enc, name, cond))
            if item is None:
                ax.axis("off")
                continue
            cm = np.array(binary_metrics(item["labels"], item["scores"], item["threshold"])["confusion_matrix"])
            ax.imshow(cm, cmap="Blues")
            for (i, j), v in np.ndenumerate(cm):
                ax.text(j, i, str(v), ha="center", va="center")
            ax.set_xticks([0, 1], ["pred good", "pred defect"])
            ax.set_yticks([0, 1], ["good", "defect"])
            ax.set_title(f"{'image only' if name == 'image only' else 'OANet'}, {cond}", fontsize=9)
        written.append(_save(fig, out / f"confusion_{enc}.png"))

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for b, ax in enumerate(axes):
            for cond in CONDITIONS:
                item = plots.get((enc, FULL, cond))
                if item is not None:
                    ax.hist(item["weights"][:, b], bins=20, range=(0, 1), alpha=0.5, label=cond)
            ax.set_title(f"gate weight: {core.BRANCHES[b]} branch ({enc})", fontsize=9)
            ax.legend(fontsize=7)
        written.append(_save(fig, out / f"gate_weights_{enc}.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(args: argparse.Namespace) -> int:
    progress = not args.quiet
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = run_ablation(args, progress)
    results = report["results"]
    (out / "table1.md").write_text(table1(results, args.encoders, args.repeats), encoding="utf-8")
    (out / "table2.md").write_text(table2(results, args.encoders, args.repeats, args.missing_rate,
                                          args.eval_grid_mask), encoding="utf-8")
    (out / "table3.md").write_text(table3(results, args.encoders, args.repeats), encoding="utf-8")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    (out / "results.json").write_text(json.dumps({"settings": settings, "results": results}, indent=1) + "\n",
                                      encoding="utf-8")
    pngs = write_plots(report["plots"], args.encoders, out)
    print((out / "table1.md").read_text(encoding="utf-8"))
    print((out / "table2.md").read_text(encoding="utf-8"))
    print((out / "table3.md").read_text(encoding="utf-8"))
    print(f"ablation of {len(args.encoders)} encoder(s) x {args.repeats} repeat(s) in "
          f"{time.perf_counter() - started:.0f} s -> {out} ({len(pngs)} plots)")
    return 0
