"""The fusion stage: alignment, PCA refinement, fused classifier, gate calibration, threshold.

Trained on top of a frozen image encoder and the out-of-fold predictions of the LightGBM bag:

1. Alignment (paper 3.3): tabular encoder + projections of both modalities, trained with
   BCE of an auxiliary classifier on [a_img, a_tab] plus `align_weight` x the alignment loss
   (cosine: mean 1 - cos(a_img, a_tab); or symmetric InfoNCE). `--no-align` drops the
   alignment term (the projections are then trained by the auxiliary classifier only).
2. Refinement: PCA of the aligned features f_0 = [a_img, a_tab], the components appended
   (f_{r+1} = [f_r, PCA_r(f_r)]), `refine_rounds` times (0 = `--no-refine`).
3. Fused classifier: MLP on [f_R, logit(out-of-fold p_params), present fraction].
4. Gate on validation frames: the modalities' KL constants, and the weights of the logit
   combination of the three branches (`fit_combination`, see core.combine); threshold for the
   target recall.

Every row of the training table is a (frame, copy) pair: copy 0 is the clean frame, copies
1..K carry OCR-field dropout and GridMask (mask learning), so the classifier learns to lean
on the other modality when one is damaged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from training.encoders import ALIGN_LOSSES, AlignmentNet, FusedClassifier
from triton_models.oanet_fusion import core


@dataclass
class FusionOptions:
    align: bool = True
    align_loss: str = "cosine"
    align_weight: float = 1.0
    refine_rounds: int = 2
    pca_components: int = 8
    gate: bool = True
    gate_margin: float = 2.0
    gate_quantile: float = 99.5
    base_weights: dict[str, float] = field(default_factory=lambda: {"image": 1.0, "params": 1.0, "fused": 2.0})
    auto_base_weights: bool = False
    tab_dim: int = 32
    align_dim: int = 32
    hidden: int = 64
    epochs_align: int = 30
    epochs_fused: int = 40
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class FusionRows:
    """The fusion stage's training table (one row per frame copy)."""

    embedding: np.ndarray  # [M, E]
    values: np.ndarray  # [M, F] NaN missing
    missing: np.ndarray  # [M, F]
    labels: np.ndarray  # [M]
    frame: np.ndarray  # [M] index of the frame in the train split
    p_params: np.ndarray | None = None  # [M] out-of-fold bag probability


def reference_stats(embedding: np.ndarray, values: np.ndarray, missing: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension mean/std of the training frames: the gate's reference and the z-scoring."""
    mu = embedding.astype(np.float64).mean(axis=0)
    sigma = np.maximum(embedding.astype(np.float64).std(axis=0), 1e-6)
    v = np.where(missing, np.nan, values).astype(np.float64)
    with np.errstate(all="ignore"):
        fmean = np.nanmean(v, axis=0)
        fstd = np.nanstd(v, axis=0)
    fmean = np.where(np.isfinite(fmean), fmean, 0.0)
    fstd = np.where(np.isfinite(fstd) & (fstd > 1e-9), fstd, 1.0)
    return {"ref_img_mu": mu, "ref_img_sigma": sigma, "feat_mean": fmean, "feat_std": fstd}


def _batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def fit_alignment(rows: FusionRows, ref: dict[str, np.ndarray], opts: FusionOptions,
                  progress: bool = True) -> tuple[AlignmentNet, list[dict]]:
    from tqdm import tqdm

    torch.manual_seed(opts.seed)
    rng = np.random.default_rng([opts.seed, 1])
    e = torch.tensor((rows.embedding - ref["ref_img_mu"]) / ref["ref_img_sigma"], dtype=torch.float32)
    t = torch.tensor(core.tabular_input(rows.values, rows.missing, ref["feat_mean"], ref["feat_std"]),
                     dtype=torch.float32)
    y = torch.tensor(rows.labels, dtype=torch.float32)
    net = AlignmentNet(e.shape[1], rows.values.shape[1], opts.tab_dim, opts.align_dim, opts.hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=opts.lr, weight_decay=1e-4)
    align_fn = ALIGN_LOSSES[opts.align_loss]
    history = []
    for epoch in tqdm(range(opts.epochs_align), desc="alignment", unit="epoch", disable=not progress, leave=False):
        net.train()
        sums = np.zeros(2)
        for idx in _batches(len(y), opts.batch_size, rng):
            a_img, a_tab, aux = net(e[idx], t[idx])
            cls = F.binary_cross_entropy_with_logits(aux, y[idx])
            align = align_fn(a_img, a_tab)
            loss = cls + (opts.align_weight * align if opts.align else 0.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += [cls.item() * len(idx), align.item() * len(idx)]
        history.append({"epoch": epoch + 1, "cls_loss": sums[0] / len(y), "align_loss": sums[1] / len(y)})
    net.eval()
    return net, history


def alignment_weights(net: AlignmentNet) -> dict[str, np.ndarray]:
    def arr(p: torch.Tensor) -> np.ndarray:
        return p.detach().cpu().double().numpy()

    return {
        "tab_w1": arr(net.tab.fc1.weight), "tab_b1": arr(net.tab.fc1.bias),
        "tab_w2": arr(net.tab.fc2.weight), "tab_b2": arr(net.tab.fc2.bias),
        "proj_img_w": arr(net.proj_img.weight), "proj_img_b": arr(net.proj_img.bias),
        "proj_tab_w": arr(net.proj_tab.weight), "proj_tab_b": arr(net.proj_tab.bias),
    }


def fused_inputs(f_refined: np.ndarray, p_params: np.ndarray, missing: np.ndarray) -> np.ndarray:
    return np.concatenate([f_refined, core.logit(p_params)[:, None], core.present_fraction(missing)[:, None]], axis=1)


def fit_fused_classifier(x: np.ndarray, labels: np.ndarray, opts: FusionOptions,
                         progress: bool = True) -> tuple[FusedClassifier, list[dict]]:
    from tqdm import tqdm

    torch.manual_seed(opts.seed + 1)
    rng = np.random.default_rng([opts.seed, 2])
    xt = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.float32)
    clf = FusedClassifier(x.shape[1], opts.hidden)
    optimizer = torch.optim.Adam(clf.parameters(), lr=opts.lr, weight_decay=1e-4)
    history = []
    for epoch in tqdm(range(opts.epochs_fused), desc="fused classifier", unit="epoch", disable=not progress,
                      leave=False):
        clf.train()
        total = 0.0
        for idx in _batches(len(y), opts.batch_size, rng):
            loss = F.binary_cross_entropy_with_logits(clf(xt[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        history.append({"epoch": epoch + 1, "loss": total / len(y)})
    clf.eval()
    return clf, history


def fit_fusion(rows: FusionRows, ref: dict[str, np.ndarray], opts: FusionOptions,
               progress: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Train alignment + refinement + fused classifier; returns (npz weights, history)."""
    if rows.p_params is None:
        raise ValueError("rows.p_params (out-of-fold bag probabilities) are required")
    net, align_hist = fit_alignment(rows, ref, opts, progress)
    weights = {k: np.asarray(v, dtype=np.float64) for k, v in ref.items()}
    weights.update(alignment_weights(net))
    # Aligned features by the numpy core itself: what is refined and classified at inference.
    probe = core.FusionCore.__new__(core.FusionCore)
    probe.w = weights
    a_img, a_tab = probe.aligned(rows.embedding.astype(np.float64), np.where(rows.missing, np.nan, rows.values),
                                 rows.missing)
    f0 = np.concatenate([a_img, a_tab], axis=1)
    rounds = core.fit_refinement(f0, opts.refine_rounds, opts.pca_components)
    for r, (mean, comp) in enumerate(rounds):
        weights[f"pca_mean_{r}"] = mean
        weights[f"pca_comp_{r}"] = comp
    x = fused_inputs(core.pca_refine(f0, rounds), rows.p_params, rows.missing)
    clf, fused_hist = fit_fused_classifier(x, rows.labels, opts, progress)
    for name, layer in (("cls_w1", clf.fc1.weight), ("cls_b1", clf.fc1.bias), ("cls_w2", clf.fc2.weight),
                        ("cls_b2", clf.fc2.bias)):
        weights[name] = layer.detach().double().numpy()
    return weights, {"alignment": align_hist, "fused_classifier": fused_hist}


# L2 penalty of the logit combination's branch weights: sklearn's LogisticRegression default
# (C = 1), as the late-fusion baseline it is compared with (`training/ablation.py`).
COMBINATION_L2 = 1.0


def fit_combination(views: list[tuple[np.ndarray, dict[str, np.ndarray]]], gate_params: dict) -> dict | None:
    """The gate's logit combination (`core.combine`, "logit") learned on validation frames:
    `views` are (labels, fusion outputs) of the validation frames in each state; returns the gate
    keys {"combine", "base_weights", "intercept"}, or None when the labels hold one class.

    A logistic regression of the labels on the switched-on branch logits s_b logit(p_b), with the
    branch weights held >= 0 (a branch never counts against its own verdict). In logit space a
    defect that one modality alone shows keeps its evidence; the probability mean pulled it down."""
    from scipy.optimize import minimize

    labels = np.concatenate([np.asarray(y, dtype=np.float64) for y, _ in views])
    if len(set(labels.tolist())) < 2:
        return None
    x = np.concatenate([
        core.switches(out["kl_scores"][:, 0], out["kl_scores"][:, 1], out["present_fraction"], gate_params)
        * core.logit(out["branch_probabilities"]) for _, out in views])

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights, intercept = theta[:-1], theta[-1]
        z = x @ weights + intercept
        residual = core.sigmoid(z) - labels
        value = np.sum(np.logaddexp(0.0, z) - labels * z) + 0.5 * COMBINATION_L2 * weights @ weights
        return float(value), np.append(x.T @ residual + COMBINATION_L2 * weights, residual.sum())

    start = np.append(np.full(x.shape[1], 0.5), 0.0)
    bounds = [(0.0, None)] * x.shape[1] + [(None, None)]
    theta = minimize(loss, start, jac=True, bounds=bounds, method="L-BFGS-B").x
    return {"combine": core.COMBINE_LOGIT,
            "base_weights": {b: float(w) for b, w in zip(core.BRANCHES, theta[:-1], strict=True)},
            "intercept": float(theta[-1])}


def threshold_for_recall(labels: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The highest threshold t whose recall (score >= t) on these frames reaches `target`."""
    pos = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(labels) == 1])[::-1]
    if len(pos) == 0:
        return 0.5
    k = min(len(pos) - 1, max(0, int(np.ceil(target * len(pos))) - 1))
    return float(pos[k])


def operating_threshold(labels: np.ndarray, scores: np.ndarray, target_recall: float,
                        min_precision: float = 0.0) -> float:
    """The verdict threshold on validation frames: the highest t whose recall (score >= t) reaches
    `target_recall`, provided its precision is at least `min_precision`. When no threshold reaches
    the recall at that precision (a branch that cannot find every defect without flagging good
    frames), the threshold with the highest recall among those whose precision is at least
    `min_precision`; when none has that precision either, the recall threshold.

    Recall alone let the hardest one or two validation defects set the threshold: the demo's line
    then flagged about half of its good frames (precision 0.47-0.51, docs/benchmarks.md). An alarm
    a sorter cannot trust gets switched off, so the precision floor bounds the false alarms."""
    recall_threshold = threshold_for_recall(labels, scores, target_recall)
    labels = np.asarray(labels).astype(int)
    if min_precision <= 0.0 or len(set(labels.tolist())) < 2:
        return recall_threshold
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, np.asarray(scores, dtype=np.float64))
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    trusted = precision >= min_precision
    reaching = trusted & (recall >= target_recall)
    if reaching.any():
        return float(thresholds[reaching].max())
    if not trusted.any():
        return recall_threshold
    best_recall = recall[trusted].max()
    return float(thresholds[trusted & (recall == best_recall)].max())


def fit_calibration(p: np.ndarray, labels: np.ndarray) -> dict[str, float] | None:
    """Platt constants for `core.calibrate` from validation probabilities and labels (None when a
    class is absent or the fit would reverse the ranking)."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels).astype(int)
    if len(set(labels.tolist())) < 2:
        return None
    x = core.logit(p)[:, None]
    model = LogisticRegression(C=1e4, max_iter=1000).fit(x, labels)
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    if not slope > 0:
        return None
    return {"slope": slope, "intercept": intercept}
