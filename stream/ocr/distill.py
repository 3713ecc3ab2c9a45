"""`oanet ocr distill`: teach a line its own small recogniser, with PaddleOCR as the teacher.

1. Labels. Every field line of the frames is cut and trimmed exactly as template mode does
   (`stream.ocr.crops`). A line is labelled by the dataset's manifest where it has the printed
   value (and the line was not smudged on purpose), otherwise by PaddleOCR's template read
   (through the OCR feature cache, so a dataset read before is not read again), kept only
   when the teacher is confident and the field parser accepts its value. Other lines stay
   unlabelled: they still teach consistency.
2. Training (torch, CPU). A small CNN with a CTC head over the profile's charset. Each line is
   seen as two views with capture nuisances (blur, exposure, shift, JPEG, noise): labelled
   views learn the label (CTC), and the strong view of every line learns to agree, time step
   by time step, with the weak view's character distribution (consistency). The budget is a
   number of optimisation steps, so the same frames, seed and steps give the same student on
   a quiet or a busy machine; a wall-time cap is only a safety net, and says so loudly when it
   cuts training short. Every `eval_every` steps the network reads the *selection* frames'
   lines and the checkpoint with the lowest fallback there is kept. `restarts` networks train
   so, from different seeds, each in its own process, and the best of their kept checkpoints
   wins: which seed a line gets moved its fallback on unseen lots several-fold.
3. Calibration. On the *calibration* frames' lines (as printed and under strong nuisances),
   which neither training nor the checkpoint choice saw, each field's threshold is set just
   above the most confident read of that field that the parser would accept but that is wrong
   (a field with few reads there takes the pooled threshold, above every field's wrong reads),
   so on those lines no accepted read is wrong; the rest falls back to PaddleOCR. `recalibrate`
   (`oanet ocr calibrate`) does this step again for a saved student. Reads the ink check refuses
   (`stream.ocr.ink`: a glyph left out, or read as one of another width; the widths are
   learnt on the training lines) fall back whatever their confidence, so they do not set it.
   A text field whose calibration lines print too few distinct values (lots) gets no threshold:
   reading uses its reads only where PaddleOCR confirmed them (`student.MIN_TEXT_VALUES`,
   `stream.ocr.confirm`), and a network that reads too many number lines wrong
   yet well formed did not learn the line: the next restart the selection lines rank is
   calibrated instead (`first_reliable`), and nothing is written when none passes
   (`calibration.unreliable`).
4. Export: `recognizer.onnx` (onnxruntime at reading time) and `recognizer.json` (charset,
   input geometry, threshold, profile digest, figures).

One pipeline (labels, crops, training, calibration, export) over one config and one report, read
top to bottom. Apart: the network's reader (student.py), the ink check (ink.py), a line and its
nuisance views (lines.py), the held-out parts, checks and calibration (calibration.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oanet.dataset import Dataset, ManifestEntry
from stream.ocr import crops as cropping
from stream.ocr.budget import DEFAULT_MAX_MINUTES, DEFAULT_RESTARTS, DEFAULT_STEPS, EMA_DECAY, MAX_NUMBER_WRONG_RATE
from stream.ocr.calibration import (
    KIND_NUISANCE,
    KIND_PRINTED,
    Checkpoint,
    HeldOutViews,
    calibrate,
    calibrate_outcomes,
    glyph_widths,
    split_frames,
    text_groups,
    unreliable,
    value_charsets,
    wrong_rate_problem,
)
from stream.ocr.errors import OcrError, StudentError
from stream.ocr.ink import GlyphWidths
from stream.ocr.lines import Line, augment
from stream.ocr.records import ENGINE_PADDLE, ParameterRecord
from stream.ocr.settings import OcrSettings
from stream.ocr.splice import spliced_lines
from stream.ocr.student import (
    INPUT_NAME,
    OUTPUT_NAME,
    STUDENT_META_FILE,
    STUDENT_MODEL_FILE,
    StudentMeta,
    encode_text,
    teacher_settings,
    line_input,
    line_steps,
    profile_charset,
    profile_sha256,
    target_text,
    to_gray,
)

log = logging.getLogger(__name__)

SOURCE_MANIFEST = "manifest"
SOURCE_TEACHER = "teacher"


@dataclass(frozen=True)
class DistillConfig:
    height: int = 32
    # Optimisation steps of `batch` lines: the budget, and what the schedule is a share of.
    steps: int = DEFAULT_STEPS
    # Read the selection lines every this many steps (0: a tenth of `steps`).
    eval_every: int = 0
    # Wall-time cap of the training loop only; reaching it is reported as a failure to train
    # to plan (`TrainResult.capped`), not a budget.
    max_minutes: float = DEFAULT_MAX_MINUTES
    batch: int = 32
    lr: float = 3e-3
    # A teacher read becomes a label only at or above this confidence (and parsed).
    teacher_min_confidence: float = 0.90
    # Shares of frames held out: calibration sets the threshold at the end; selection picks the
    # checkpoint. Neither is trained on, and the threshold is never set on the lines that chose
    # the checkpoint (that choice favours checkpoints that happen to do well on them).
    calibration_share: float = 0.15
    selection_share: float = 0.10
    consistency_weight: float = 1.0
    # Decay of the weights' exponential moving average (a "mean teacher"): the average guides the
    # consistency term and is the network the checks read and the one kept; 0: the raw network
    # does both (the rule before, docs/benchmarks.md "A mean teacher").
    ema_decay: float = EMA_DECAY
    # The threshold is never below this, whatever the calibration lines allow. 0.5 let digit swaps
    # through at 0.53 and 0.56 on 400 frames of 8 unseen lots; 0.7 cost 0.1-0.4 points of fallback
    # there (docs/benchmarks.md, "ocr19").
    min_threshold: float = 0.7
    # No student is written when more than this share of its calibration reads of number fields
    # are wrong yet well formed (`calibration.unreliable`); 1: write it whatever it reads.
    max_wrong_rate: float = MAX_NUMBER_WRONG_RATE
    seed: int = 0
    # Spliced copies of each training text-field line (`stream.ocr.splice`: the value redrawn
    # with other glyphs of its frame, so the student sees letters its lots never print); 0: none.
    splice_copies: int = 0
    # Networks trained on the same split from different seeds (restart r from seed + r *
    # RESTART_SEED_STEP), side by side in their own processes; the selection lines keep the best.
    restarts: int = DEFAULT_RESTARTS
    # torch threads. One by default: on the 2-core box, with another job on a core, two threads
    # made 1.9 steps/s against 6.2-6.9 with one (docs/benchmarks.md); the result is the same bit
    # for bit only with the same thread count.
    threads: int = 1

    def problems(self) -> list[str]:
        found = []
        if self.steps < 1:
            found.append(f"--steps must be at least 1, got {self.steps}")
        if self.eval_every < 0:
            found.append(f"--eval-every must not be negative, got {self.eval_every}")
        if self.max_minutes <= 0:
            found.append(f"--max-minutes must be positive, got {self.max_minutes}")
        if self.batch < 2:
            found.append(f"--batch must be at least 2, got {self.batch}")
        if self.restarts < 1:
            found.append(f"--restarts must be at least 1, got {self.restarts}")
        if not 0.0 <= self.ema_decay < 1.0:
            found.append(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.splice_copies < 0:
            found.append(f"--splice must not be negative, got {self.splice_copies}")
        if (problem := wrong_rate_problem(self.max_wrong_rate)) is not None:
            found.append(problem)
        return found

    @property
    def every(self) -> int:
        return self.eval_every or max(1, self.steps // 10)


@dataclass
class DistillReport:
    out: Path
    frames: int
    teacher_frames: int
    lines: int
    labelled: dict[str, int]
    unlabelled: int
    training: TrainResult
    seconds: dict[str, float] = field(default_factory=dict)
    threshold: float = 0.0
    calibration: dict[str, Any] = field(default_factory=dict)
    spliced: int = 0  # spliced text-field lines added to training (`stream.ocr.splice`)
    restarts: list[TrainResult] = field(default_factory=list)  # every restart's, `training` among them
    # (seed, why) of restarts the selection lines ranked above `training` whose calibration said
    # they did not learn the line (`calibration.unreliable`)
    vetoed: list[tuple[int, str]] = field(default_factory=list)


# -- labels ------------------------------------------------------------------------------


def collect_lines(
    dataset: Dataset,
    entries: Sequence[ManifestEntry],
    settings: OcrSettings,
    min_confidence: float,
    use_manifest: bool = True,
    on_frame: Callable[[str], None] | None = None,
) -> tuple[list[Line], int]:
    """Every template field line of `entries`, labelled where the manifest or teacher allows.

    Returns the lines and how many frames the teacher read: only frames with a line the
    manifest does not label go to PaddleOCR.
    """
    from stream.ocr.reader import iter_records

    profile = dataset.profile
    template = [(i, spec) for i, spec in enumerate(profile.fields) if spec.roi is not None]

    def manifest_value(entry: ManifestEntry, name: str) -> Any:
        if not use_manifest or name in entry.smudged_fields:
            return None
        return entry.params.get(name)

    needs_teacher = [e for e in entries if any(manifest_value(e, spec.name) is None for _, spec in template)]
    records: dict[str, ParameterRecord] = {}
    for result in iter_records(dataset, needs_teacher, teacher_settings(settings), "template"):
        if on_frame is not None:
            on_frame("teacher")
        if result.record is not None:
            records[result.entry.id] = result.record
    lines: list[Line] = []
    for entry in entries:
        if on_frame is not None:
            on_frame("crops")
        try:
            image = cropping.fit_to_profile(cropping.decode_image(dataset.read_bytes(entry)), profile)
        except OcrError:
            continue
        record = records.get(entry.id)
        for i, spec in template:
            slot = to_gray(cropping.crop(image, spec.roi)).copy()
            trimmed = cropping.trim_to_ink(slot)
            if trimmed is None:
                continue
            line = Line(entry.id, i, slot, trimmed, nuisance=bool(entry.nuisance_kinds))
            value = manifest_value(entry, spec.name)
            if value is not None:
                line.value, line.source = value, SOURCE_MANIFEST
            elif record is not None:
                line.value, line.source = _teacher_label(record, spec.name, min_confidence)
            lines.append(line)
    return lines, len(needs_teacher)


def _teacher_label(record: ParameterRecord, name: str, min_confidence: float) -> tuple[Any, str | None]:
    reading = record.reading(name)
    # Only the template read of this very crop ("" = cached before engines were recorded);
    # a detection fallback may have found the line outside its slot.
    if reading.missing or reading.engine not in (ENGINE_PADDLE, "") or reading.confidence < min_confidence:
        return None, None
    return reading.value, SOURCE_TEACHER


def _training_view(line: Line, rng: np.random.Generator, strong: bool, height: int, width: int) -> np.ndarray:
    """An input of a line with capture nuisances applied to its trimmed crop: every view of a
    line keeps the crop's geometry, so time step t of one view sees what step t of another
    sees, and consistency compares like with like. (Views made from the whole slot and trimmed
    again moved the ink box by a step or two under shifts and blur; step by step, consistency
    then pulled each character towards its neighbour's distribution.)"""
    return line_input(augment(line.trimmed, rng, strong, shift=False), height, width)


# -- the network -------------------------------------------------------------------------


def build_network(classes: int, height: int):
    """Conv stack to one feature column per TIME_STRIDE input columns, then a CTC head."""
    import torch
    from torch import nn

    def block(cin: int, cout: int, stride: int | tuple[int, int] = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    if height % 8:
        raise StudentError(f"student input height must be a multiple of 8, got {height}")

    class LineNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # Strided convolutions, not pooling: a quarter of the cost of full-resolution
            # layers, and a wider horizontal view per step (a label's first letter is told
            # from a value's by its neighbours).
            self.body = nn.Sequential(
                *block(1, 16, stride=2),  # H/2, W/2
                *block(16, 32, stride=2),  # H/4, W/4 = TIME_STRIDE
                *block(32, 48, stride=(2, 1)),  # H/8
                *block(48, 64),
                nn.Conv2d(64, 96, (height // 8, 1), bias=False),  # one column per time step
                nn.BatchNorm2d(96),
                nn.ReLU(inplace=True),
            )
            self.head = nn.Sequential(nn.Conv1d(96, 96, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv1d(96, classes, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 1, H, W] -> [N, T, C]
            return self.head(self.body(x).squeeze(2)).transpose(1, 2)

    return LineNet()


def input_width(lines: Sequence[Line], height: int) -> int:
    """Wide enough for most trimmed lines at `height` (multiple of 16, 64..512).

    The 95th percentile, not the widest: a speck beside a line widens its trim, and the cost
    of every read is linear in this width; a wider line is squeezed to fit, in training too.
    """
    widths = [line.trimmed.shape[1] * height / line.trimmed.shape[0] for line in lines]
    wide = float(np.percentile(widths, 95)) if widths else 256.0
    return int(min(512, max(64, 16 * math.ceil(wide * 1.05 / 16))))


# -- training ----------------------------------------------------------------------------


# Consistency starts after this share of training: before CTC has left its all-blank phase
# the weak view's guide is "blank everywhere", and agreeing with it only holds that phase.
CONSISTENCY_FROM = 0.35
# Learning rate: a short warm-up, then constant, then a cosine decay over the last share.
WARMUP_STEPS = 20
DECAY_SHARE = 0.4


def learning_rate_factor(step: int, share: float) -> float:
    """Factor on the base rate at `step`, `share` of the way through the budget.

    CTC from scratch spends its first few hundred steps emitting blanks; a rate that decays
    from the start (as a plain cosine does) makes that phase last the whole of a short budget.
    """
    warm = min(1.0, (step + 1) / WARMUP_STEPS)
    decay_start = 1.0 - DECAY_SHARE
    if share <= decay_start:
        return warm
    return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, (share - decay_start) / DECAY_SHARE)))


@dataclass(frozen=True)
class TrainProgress:
    """What the training loop reports: after every step, and with `checkpoint` after each check."""

    step: int
    steps: int
    epoch: int
    loss: float
    elapsed_s: float
    checkpoint: Checkpoint | None = None
    best: Checkpoint | None = None


@dataclass
class TrainResult:
    steps_planned: int
    steps: int  # run; fewer than planned only when the wall-time cap cut training short
    epochs: int
    best: Checkpoint | None  # the checkpoint kept (None: no selection lines, the last one kept)
    checks: list[Checkpoint] = field(default_factory=list)
    capped: bool = False
    seconds: float = 0.0
    seed: int = 0  # the training's: the network's initial weights, the order and the augmentations

    @property
    def kept_step(self) -> int:
        return self.best.step if self.best is not None else self.steps

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "steps_planned": self.steps_planned, "steps": self.steps, "epochs": self.epochs,
                "kept_step": self.kept_step, "capped_by_wall_time": self.capped, "seconds": round(self.seconds, 1),
                "checks": [dataclasses.asdict(c) for c in self.checks]}


def train(
    lines: Sequence[Line],
    profile,
    charset: str,
    height: int,
    width: int,
    config: DistillConfig,
    selection: HeldOutViews | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    widths: GlyphWidths | None = None,
):
    """Returns (network in eval mode, TrainResult): `config.steps` steps, or fewer if the
    wall-time cap is reached; the network is the checkpoint the selection lines liked best (of
    the weights' average, unless `config.ema_decay` is 0).

    Deterministic for given lines, config (seed, steps, batch) and thread count: the checks
    read fixed inputs and draw nothing from the training's random streams.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads or torch.get_num_threads())
    rng = np.random.default_rng(config.seed)
    fields = profile.fields
    value_chars = value_charsets(profile)
    targets = []
    for line in lines:
        ids = encode_text(target_text(fields[line.field], line.value), charset) if line.value is not None else None
        targets.append(ids if ids and 2 * len(ids) <= line_steps(line.trimmed, height, width) else None)
    net = build_network(len(charset) + 1, height)
    # The average starts from the initial weights; early on, (1 + n) / (10 + n) lets it follow the
    # fast-moving network instead of dragging the random start along.
    average = _averaged(net, config.ema_decay)
    guide_net = average.module if average is not None else net
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    result = TrainResult(steps_planned=config.steps, steps=0, epochs=0, best=None, seed=config.seed)
    best_state: dict[str, Any] | None = None
    started = clock()
    cap_s = config.max_minutes * 60.0
    step = 0
    order: np.ndarray = np.arange(0)
    cursor = 0
    loss_value = float("nan")

    def check() -> Checkpoint | None:
        """Read the selection lines; keep the network if it is the best so far."""
        nonlocal best_state
        if selection is None or not selection.views:
            return None
        judged = average.module if average is not None else net
        judged.eval()
        outcomes = selection.outcomes(judged, profile, charset, widths)
        thresholds, stats = calibrate_outcomes(outcomes, config.min_threshold, value_chars=value_chars)
        net.train()
        point = Checkpoint(step, stats[KIND_PRINTED]["fallback_rate"] or 0.0,
                           stats[KIND_NUISANCE]["fallback_rate"] or 0.0, round(thresholds.default, 4),
                           stats["wrong_but_well_formed"], sum(1 for o in outcomes if o.confidence is None),
                           stats["ink_refused"]["wrong"])
        result.checks.append(point)
        if result.best is None or point.key <= result.best.key:  # a tie goes to the later, more trained one
            result.best = point
            best_state = {k: v.detach().clone() for k, v in judged.state_dict().items()}
        return point

    net.train()
    while step < config.steps:
        if clock() - started >= cap_s:
            result.capped = True
            break
        if cursor >= len(order):
            if len(order):
                result.epochs += 1
            order, cursor = rng.permutation(len(lines)), 0
        chosen = order[cursor : cursor + config.batch]
        cursor += config.batch
        share = step / config.steps
        for group in optimizer.param_groups:
            group["lr"] = config.lr * learning_rate_factor(step, share)
        # The strong view learns the label (CTC) and, once the student reads, to agree with
        # the weak view (consistency); the weak view only guides (no gradient), read by the
        # average where there is one: a network guiding itself on its own reads of unlabelled
        # and hard lines can drift into its own mistakes (2 of 4 restarts never improved once
        # the term began), the average moves slowly enough to hold it.
        strong = torch.from_numpy(np.stack([_training_view(lines[k], rng, True, height, width) for k in chosen])[:, None])
        steps = torch.tensor([line_steps(lines[k].trimmed, height, width) for k in chosen], dtype=torch.long)
        log_probs = F.log_softmax(net(strong), dim=2)  # [B, T, C]
        labelled = [j for j, k in enumerate(chosen) if targets[k] is not None]
        loss = torch.zeros(())
        if labelled:
            seqs = [targets[chosen[j]] for j in labelled]
            flat = torch.tensor([c for s in seqs for c in s], dtype=torch.long)
            lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
            # Each line's own time steps: the padding on its right is not part of it.
            loss = loss + ctc(log_probs[labelled].transpose(0, 1), flat, steps[labelled], lengths)
        if config.consistency_weight and share >= CONSISTENCY_FROM:
            weak = torch.from_numpy(np.stack([_training_view(lines[k], rng, False, height, width)
                                              for k in chosen])[:, None])
            with torch.no_grad():
                guide = F.log_softmax(guide_net(weak), dim=2)
            mask = (torch.arange(log_probs.shape[1])[None, :] < steps[:, None]).float()
            kl = (guide.exp() * (guide - log_probs)).sum(dim=2)
            loss = loss + config.consistency_weight * (kl * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update_parameters(net)
        step += 1
        result.steps = step
        loss_value = float(loss.detach())
        point = check() if step % config.every == 0 or step == config.steps else None
        if progress is not None:
            progress(TrainProgress(step, config.steps, result.epochs, loss_value, clock() - started, point,
                                   result.best))
    if result.capped and step and (not result.checks or result.checks[-1].step != step):
        point = check()  # the steps the cap cut off never come; the last ones may still be the best
        if progress is not None and point is not None:
            progress(TrainProgress(step, config.steps, result.epochs, loss_value, clock() - started, point,
                                   result.best))
    result.epochs += 1 if cursor else 0
    result.seconds = clock() - started
    if best_state is not None:
        net.load_state_dict(best_state)
    elif average is not None:
        net.load_state_dict(average.module.state_dict())
    net.eval()
    return net, result


def _averaged(net, decay: float):
    """An exponential moving average of `net`'s weights and batch-norm statistics (None: decay 0)."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel

    def ema(averaged, current, updates):
        rate = min(decay, (1.0 + float(updates)) / (10.0 + float(updates)))
        return rate * averaged + (1.0 - rate) * current

    average = AveragedModel(net, avg_fn=ema, use_buffers=True)
    # Only ever read, never trained: batch norm from the averaged statistics, never the batch's.
    average.module.eval()
    return average


RESTART_SEED_STEP = 100


def train_restarts(config: DistillConfig, progress: Callable[[TrainProgress], None] | None = None, **inputs):
    """(every restart's (network, TrainResult), best first as the selection lines rank them; every
    restart's TrainResult in seed order). `inputs` are `train`'s: lines, profile, charset, height,
    width, selection and widths.

    Restart 0 trains here with `progress`; the others at the same time in spawned processes
    (fork is unsafe once torch has threads). Without selection lines there is nothing to choose
    by, so only restart 0 trains.
    """
    configs = [dataclasses.replace(config, seed=config.seed + RESTART_SEED_STEP * r) for r in range(config.restarts)]
    selection = inputs.get("selection")
    if len(configs) == 1 or selection is None or not selection.views:
        net, result = train(config=configs[0], progress=progress, **inputs)
        return [(net, result)], [result]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    with ProcessPoolExecutor(len(configs) - 1, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_weights, c, inputs) for c in configs[1:]]
        net, first = train(config=configs[0], progress=progress, **inputs)
        others = [f.result() for f in futures]
    nets = [net]
    for weights, _ in others:
        other = build_network(len(inputs["charset"]) + 1, inputs["height"])
        other.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        nets.append(other.eval())
    results = [first, *(result for _, result in others)]
    # A tie keeps the lower seed; a restart the wall-time cap stopped before its first check ranks last.
    order = sorted(range(len(results)), key=lambda r: results[r].best.key if results[r].best else (2.0, 2.0))
    return [(nets[r], results[r]) for r in order], results


def first_reliable(ranked: Sequence[tuple[Any, TrainResult]], calibrate_net: Callable[[Any], tuple[Any, dict]],
                   max_wrong_rate: float):
    """((network, TrainResult, thresholds, calibration stats) of the first of `ranked` whose
    calibration does not call it unreliable, or None; [(seed, why)] of those passed over).

    The selection lines rank the restarts; the calibration lines only veto one that did not learn
    the line (a seed that reads numbers wrong with confidence), so a distillation with one such
    seed among four still writes a student. They see one network more per veto, and set the
    threshold of the one kept on its own reads as before."""
    vetoed: list[tuple[int, str]] = []
    for net, training in ranked:
        thresholds, calibration = calibrate_net(net)
        problem = unreliable(calibration, max_wrong_rate)
        if problem is None:
            return (net, training, thresholds, calibration), vetoed
        vetoed.append((training.seed, problem))
    return None, vetoed


def _train_weights(config: DistillConfig, inputs: dict[str, Any]):
    """`train` in a restart's process -> (weights as numpy arrays, TrainResult): plain data to send back."""
    from oanet.allocator import keep_freed_memory

    keep_freed_memory()  # as the parent did (oanet/allocator.py): a spawned process starts with glibc's defaults
    net, result = train(config=config, **inputs)
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}, result


def export(net, out: Path, meta: StudentMeta) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 1, meta.height, meta.width)
    model_path = out / STUDENT_MODEL_FILE
    try:
        torch.onnx.export(
            net, example, str(model_path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "lines"}, OUTPUT_NAME: {0: "lines"}}, dynamo=False,
        )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many unrelated types
        raise StudentError(f"cannot export the recogniser to {model_path}: {exc}") from None
    (out / STUDENT_META_FILE).write_text(json.dumps(meta.to_json(), indent=2) + "\n", encoding="utf-8")


def held_out_parts(
    lines: Sequence[Line], profile, config: DistillConfig
) -> tuple[list[Line], list[Line], list[Line], dict[str, int]]:
    """(training, calibration, selection lines, frames in each part): whole lots, drawn from
    `config.seed`. `recalibrate` finds a student's calibration frames by drawing them again, so
    both go through here."""
    train_lines, calib_lines, select_lines = split_frames(
        lines, (config.calibration_share, config.selection_share), np.random.default_rng(config.seed),
        text_groups(lines, profile),
    )
    frames = {"training": len({x.frame_id for x in train_lines}), "selection": len({x.frame_id for x in select_lines}),
              "calibration": len({x.frame_id for x in calib_lines})}
    return train_lines, calib_lines, select_lines, frames


def distill(
    dataset: Dataset,
    entries: Sequence[ManifestEntry],
    out: Path,
    settings: OcrSettings,
    config: DistillConfig | None = None,
    use_manifest: bool = True,
    on_frame: Callable[[str], None] | None = None,
    on_step: Callable[[TrainProgress], None] | None = None,
) -> DistillReport:
    from stream.ocr.engine import engine_version

    config = config or DistillConfig()
    if config.problems():
        raise StudentError("; ".join(config.problems()))
    profile = dataset.profile
    if not any(f.roi is not None for f in profile.fields):
        raise StudentError(
            f"line profile {profile.name!r} has no field with a roi: nothing for a line recogniser to read"
        )
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    lines, teacher_frames = collect_lines(
        dataset, entries, settings, config.teacher_min_confidence, use_manifest, on_frame
    )
    seconds["labels"] = time.perf_counter() - started
    labelled = [line for line in lines if line.value is not None]
    if len(labelled) < 8:
        raise StudentError(
            f"only {len(labelled)} field lines could be labelled in {len(entries)} frames "
            "(the teacher was not confident, and the manifest has no values): give more frames"
        )
    charset = profile_charset(profile)
    width = input_width(lines, config.height)
    train_lines, calib_lines, select_lines, frames = held_out_parts(lines, profile, config)
    started = time.perf_counter()
    widths = glyph_widths(train_lines, profile, config.height, width)
    # Learnt from the lines as printed only; the copies train, and are never held out.
    spliced = spliced_lines(train_lines, profile, np.random.default_rng(config.seed + 3), config.splice_copies,
                            config.height)
    # One nuisance view per selection line: the check runs ten times, calibration once.
    selection = HeldOutViews.of(select_lines, 1, config.seed + 2, config.height, width)
    ranked, restarts = train_restarts(config, on_step, lines=[*train_lines, *spliced], profile=profile,
                                      charset=charset, height=config.height, width=width,
                                      selection=selection, widths=widths)
    seconds["train"] = time.perf_counter() - started
    started = time.perf_counter()
    chosen, vetoed = first_reliable(
        ranked, lambda net: calibrate(net, calib_lines or labelled, profile, charset, config.height, width,
                                      config.seed + 1, config.min_threshold, widths), config.max_wrong_rate)
    seconds["calibrate"] = time.perf_counter() - started
    if chosen is None:
        why = "; ".join(f"seed {seed}: {problem}" for seed, problem in vetoed)
        raise StudentError(f"no student written to {out}: {why}. Distill again with more --restarts (which seed "
                           "a line gets decides whether it learns: docs/benchmarks.md) or more frames")
    net, training, thresholds, calibration = chosen
    counts = {
        SOURCE_MANIFEST: sum(1 for x in lines if x.source == SOURCE_MANIFEST),
        SOURCE_TEACHER: sum(1 for x in lines if x.source == SOURCE_TEACHER),
    }
    meta = StudentMeta(
        profile=profile.name,
        profile_sha256=profile_sha256(profile),
        charset=charset,
        height=config.height,
        width=width,
        threshold=thresholds.default,
        teacher=engine_version(teacher_settings(settings)),
        glyph_widths=widths,
        field_thresholds=thresholds.by_field,
        stats={"frames": len(entries), "teacher_frames": teacher_frames, "lines": len(lines), "labelled": counts,
               "split": frames, "spliced": len(spliced), "seed": config.seed, "batch": config.batch,
               "ema_decay": config.ema_decay,
               "vetoed": [{"seed": seed, "why": why} for seed, why in vetoed],
               "restarts": [{"seed": r.seed, "kept_step": r.kept_step, "selection": dataclasses.asdict(r.best)
                             if r.best else None, "checks": [dataclasses.asdict(c) for c in r.checks]}
                            for r in restarts],
               "threads": config.threads,
               "epochs": training.epochs, "steps": training.steps, "training": training.to_json(),
               "calibration": calibration},
    )
    export(net, Path(out), meta)
    return DistillReport(
        out=Path(out), frames=len(entries), teacher_frames=teacher_frames, lines=len(lines), labelled=counts,
        unlabelled=len(lines) - len(labelled), training=training, seconds=seconds,
        threshold=thresholds.default, calibration=calibration, spliced=len(spliced), restarts=restarts,
        vetoed=vetoed,
    )


@dataclass
class CalibrateReport:
    out: Path
    frames: int
    threshold: float
    calibration: dict[str, Any]
    seconds: float


def recalibrate(
    dataset: Dataset,
    entries: Sequence[ManifestEntry],
    folder: Path,
    out: Path,
    settings: OcrSettings,
    use_manifest: bool = True,
    on_frame: Callable[[str], None] | None = None,
    max_wrong_rate: float = MAX_NUMBER_WRONG_RATE,
) -> CalibrateReport:
    """`oanet ocr calibrate`: the thresholds of a distilled student set again on its own calibration
    lines, without training: the same frames and seed give the same held-out parts as `distill`, read
    by the saved network (`Student`). For a student distilled before thresholds were set per field, or
    before the ink check's widths; the network and the charset are unchanged."""
    import shutil

    from stream.ocr.student import Student

    started = time.perf_counter()
    folder, out = Path(folder), Path(out)
    profile = dataset.profile
    student = Student(folder, profile, threads=settings.threads or 1)
    meta = student.meta
    config = DistillConfig(seed=int(meta.stats.get("seed", 0)))
    lines, _ = collect_lines(dataset, entries, settings, config.teacher_min_confidence, use_manifest, on_frame)
    labelled = [line for line in lines if line.value is not None]
    if not labelled:
        raise StudentError(f"no field line of the {len(entries)} frames could be labelled: nothing to calibrate on")
    train_lines, calib_lines, _, frames = held_out_parts(lines, profile, config)
    distilled = meta.stats.get("split")
    if distilled and distilled != frames:
        raise StudentError(
            f"these frames are not the ones {folder} was distilled on (held-out parts {frames}, then {distilled}): "
            "give the same --data, --split and --limit, and --teacher-only if it was distilled with it"
        )
    widths = meta.glyph_widths or glyph_widths(train_lines, profile, meta.height, meta.width)
    thresholds, calibration = calibrate(student, calib_lines or labelled, profile, meta.charset, meta.height,
                                        meta.width, config.seed + 1, config.min_threshold, widths)
    problem = unreliable(calibration, max_wrong_rate)
    if problem:
        raise StudentError(f"{folder} not recalibrated, nothing written to {out}: {problem}")
    stats = {**meta.stats, "calibration": calibration,
             "recalibrated": {"from_threshold": meta.threshold, "from_field_thresholds": meta.field_thresholds}}
    new = dataclasses.replace(meta, threshold=thresholds.default, field_thresholds=thresholds.by_field,
                              glyph_widths=widths, stats=stats)
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != folder.resolve():
        shutil.copyfile(folder / STUDENT_MODEL_FILE, out / STUDENT_MODEL_FILE)
    (out / STUDENT_META_FILE).write_text(json.dumps(new.to_json(), indent=2) + "\n", encoding="utf-8")
    return CalibrateReport(out, len(entries), thresholds.default, calibration, time.perf_counter() - started)
