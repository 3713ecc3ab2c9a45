"""`oanet ocr distill`'s training budget: steps, not minutes, so a student is reproducible.

Real training on a few dozen lines of the small test line (labels from the manifest, so no
PaddleOCR), a handful of steps each: what is pinned is the loop's contract, not accuracy.
The wall-time cap is driven by a fake clock, so nothing here depends on the machine's speed.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from oanet.dataset import Dataset, load_dataset
from oanet.profile import LineProfile
from stream.ocr.calibration import (
    KIND_NUISANCE,
    KIND_PRINTED,
    HeldOutViews,
    Outcome,
    calibrate_outcomes,
    split_frames,
    unreliable,
)
from stream.ocr.distill import DistillConfig, TrainProgress, _averaged, collect_lines, input_width, train
from stream.ocr.lines import Line
from stream.ocr.student import profile_charset

HEIGHT = 32


@pytest.fixture(scope="module")
def small_line(tmp_path_factory: pytest.TempPathFactory, line_t_profile: LineProfile) -> Dataset:
    from training.synth.generate import generate

    root = tmp_path_factory.mktemp("distill-steps") / "d"
    generate(root, line_t_profile, 16, seed=4, workers=1, progress=False)
    return load_dataset(root)


@pytest.fixture(scope="module")
def lines(small_line: Dataset, ocr_settings) -> list[Line]:
    entries = [e for e in small_line.entries if not e.smudged_fields]  # the manifest labels every line
    found, teacher_frames = collect_lines(small_line, entries, ocr_settings, 0.9)
    assert teacher_frames == 0 and all(line.value is not None for line in found)
    return found


def _train(lines: list[Line], profile: LineProfile, selection=None, progress=None, clock=None, **config):
    charset = profile_charset(profile)
    options = {"steps": 6, "batch": 8, "eval_every": 3, **config}
    kwargs = {"clock": clock} if clock is not None else {}
    return train(lines, profile, charset, HEIGHT, input_width(lines, HEIGHT), DistillConfig(**options),
                 selection, progress, **kwargs)


def _weights(net) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_held_out_parts_are_whole_frames_and_never_empty(lines: list[Line]) -> None:
    rng = np.random.default_rng(0)
    training, calibration, selection = split_frames(lines, (0.15, 0.10), rng)
    frames = [{x.frame_id for x in part} for part in (training, calibration, selection)]
    assert all(frames) and not (frames[0] & frames[1] or frames[0] & frames[2] or frames[1] & frames[2])
    assert len(training) + len(calibration) + len(selection) == len(lines)
    # The same seed, the same parts; a single frame stays with training.
    again = split_frames(lines, (0.15, 0.10), np.random.default_rng(0))
    assert [[id(x) for x in p] for p in again] == [[id(x) for x in p] for p in (training, calibration, selection)]
    one = [x for x in lines if x.frame_id == lines[0].frame_id]
    assert [len(p) for p in split_frames(one, (0.15, 0.10), rng)] == [len(one), 0, 0]


def test_frames_that_print_the_same_lot_stay_in_one_part() -> None:
    from stream.ocr.calibration import text_groups
    from oanet.profile import DEFAULT_PROFILE_PATH, load_profile

    profile = load_profile(DEFAULT_PROFILE_PATH)  # line-a: lot_id is a text field
    lot = profile.field_names.index("lot_id")
    blank = np.zeros((4, 4), np.uint8)
    lines = []
    for n in range(40):  # 8 lots of 5 frames, two lines each (the lot and a number)
        lines.append(Line(f"f{n:02d}", lot, blank, blank, f"AB{n // 5:04d}-00", "manifest"))
        lines.append(Line(f"f{n:02d}", lot + 1, blank, blank, 170.0 + n, "manifest"))
    groups = text_groups(lines, profile)
    assert groups["f00"] == groups["f04"] == "lot_id=AB0000-00" != groups["f05"]
    parts = split_frames(lines, (0.15, 0.10), np.random.default_rng(0), groups)
    lots = [{x.value for x in part if x.field == lot} for part in parts]
    assert all(lots) and not (lots[0] & lots[1] or lots[0] & lots[2] or lots[1] & lots[2])
    assert [len({x.frame_id for x in part}) for part in parts] == [30, 5, 5]  # whole lots: 6, 1 and 1


def test_the_same_lines_seed_and_steps_make_the_same_student(lines: list[Line], line_t_profile) -> None:
    seen: list[TrainProgress] = []
    first, result = _train(lines, line_t_profile, progress=seen.append)
    second, _ = _train(lines, line_t_profile)
    assert result.steps == result.steps_planned == 6 and not result.capped
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6]
    assert _same(_weights(first), _weights(second))
    other, _ = _train(lines, line_t_profile, seed=1)
    assert not _same(_weights(first), _weights(other))


def test_the_weights_average_follows_the_network_then_settles_at_its_decay() -> None:
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    average = _averaged(net, decay=0.5)
    expected_weight, expected_mean = 0.0, 0.0
    for n, value in enumerate([4.0, 8.0, 2.0, 6.0]):
        with torch.no_grad():
            net[0].weight.fill_(value)
            net[1].running_mean.fill_(-value)
        average.update_parameters(net)
        # The first update copies; then the rate is (1 + n) / (10 + n) until it reaches the decay.
        rate = 0.0 if n == 0 else min(0.5, (1 + n) / (10 + n))
        expected_weight = rate * expected_weight + (1 - rate) * value
        expected_mean = rate * expected_mean + (1 - rate) * -value
        assert average.module[0].weight.item() == pytest.approx(expected_weight)
        assert average.module[1].running_mean.item() == pytest.approx(expected_mean)  # statistics too
    assert average.module[0].weight.item() != net[0].weight.item()  # it lags the network
    assert _averaged(net, decay=0.0) is None


def test_the_average_is_the_network_kept(lines: list[Line], line_t_profile) -> None:
    averaged, _ = _train(lines, line_t_profile)
    raw, _ = _train(lines, line_t_profile, ema_decay=0.0)
    again, _ = _train(lines, line_t_profile, ema_decay=0.0)
    assert _same(_weights(raw), _weights(again)) and not _same(_weights(averaged), _weights(raw))
    assert DistillConfig(ema_decay=1.0).problems() == ["--ema-decay must be in [0, 1), got 1.0"]


class _Scripted(HeldOutViews):
    """Selection lines whose verdicts are scripted: fallback 50%, then 10%, then 30%."""

    def __init__(self, line: Line) -> None:
        super().__init__((line,), (KIND_PRINTED,), ((np.zeros((HEIGHT, 16), np.float32), 1),))
        object.__setattr__(self, "_calls", itertools.count())

    def outcomes(self, net, profile, charset, widths=None):
        rate = (0.5, 0.1, 0.3)[next(self._calls)]
        return [Outcome(KIND_PRINTED, "temp", 0.9 if i >= 100 * rate else None, True) for i in range(100)]


def test_the_checkpoint_the_selection_lines_like_best_is_kept(lines: list[Line], line_t_profile) -> None:
    checks: list[TrainProgress] = []
    net, result = _train(lines, line_t_profile, _Scripted(lines[0]), checks.append, steps=9)
    assert [c.step for c in result.checks] == [3, 6, 9]
    assert result.best is not None and result.best.step == 6 and result.best.printed == pytest.approx(0.1)
    # Reported as it goes: every check, with the best so far.
    reported = [(p.step, p.checkpoint.printed, p.best.step) for p in checks if p.checkpoint is not None]
    assert reported == [(3, 0.5, 3), (6, 0.1, 6), (9, 0.3, 6)]
    # The network returned is the one of step 6: what 6 steps of the same schedule give. The
    # schedule is a share of the planned steps, so that run is 9 planned steps cut at 6 by a
    # cap; its own last check (at 6) keeps it.
    clock = itertools.count()  # one "second" per call: the cap falls after the 6th step
    cut, capped = _train(lines, line_t_profile, steps=9, max_minutes=6.5 / 60, clock=lambda: float(next(clock)))
    assert capped.capped and capped.steps == 6
    assert _same(_weights(net), _weights(cut))


def test_the_wall_time_cap_stops_training_and_says_so(lines: list[Line], line_t_profile) -> None:
    clock = itertools.count(step=30)  # half a minute per call of the clock
    _, result = _train(lines, line_t_profile, steps=50, max_minutes=2, clock=lambda: float(next(clock)))
    assert result.capped and 0 < result.steps < 50 and result.to_json()["capped_by_wall_time"]
    assert result.to_json()["steps_planned"] == 50


def test_the_threshold_clears_every_wrong_read_and_counts_what_falls_back() -> None:
    outcomes = [Outcome(KIND_PRINTED, "temp", 0.9, True), Outcome(KIND_PRINTED, "temp", 0.6, False),
                Outcome(KIND_PRINTED, "lot", None, False), Outcome(KIND_NUISANCE, "lot", 0.55, True),
                Outcome(KIND_NUISANCE, "temp", 0.7, True)]
    thresholds, stats = calibrate_outcomes(outcomes, 0.5, min_field_views=100)
    # Too few views for a threshold per field: the pooled one for every field, so temp's wrong
    # read at 0.6 holds back the lot id at 0.55 too.
    assert 0.6 < thresholds.default < 0.6001 and thresholds.by_field == {}
    assert thresholds.of("lot") == thresholds.of("temp") == thresholds.default
    assert stats[KIND_PRINTED] == {"reads": 3, "accepted": 1, "accepted_wrong": 0, "fallback_rate": 0.6667}
    assert stats[KIND_NUISANCE]["fallback_rate"] == 0.5 and stats["wrong_by_field"] == {"temp": 1}
    assert calibrate_outcomes([Outcome(KIND_PRINTED, "temp", 0.4, True)], 0.5)[0].default == 0.5


def test_a_field_with_enough_views_gets_a_threshold_of_its_own() -> None:
    outcomes = [Outcome(KIND_PRINTED, "temp", 0.9, True), Outcome(KIND_PRINTED, "temp", 0.6, False),
                Outcome(KIND_NUISANCE, "temp", 0.95, True), Outcome(KIND_PRINTED, "power", 0.8, True),
                Outcome(KIND_NUISANCE, "power", 0.55, True), Outcome(KIND_NUISANCE, "power", 0.52, False),
                Outcome(KIND_NUISANCE, "power", None, False), Outcome(KIND_PRINTED, "lot", 0.58, True)]
    thresholds, stats = calibrate_outcomes(outcomes, 0.5, min_field_views=2)
    # temp and power each above their own wrong reads only; lot (one view) keeps the pooled one.
    assert 0.6 < thresholds.of("temp") < 0.6001 and 0.52 < thresholds.of("power") < 0.5201
    assert thresholds.of("lot") == thresholds.default == thresholds.of("temp")
    assert stats["thresholds_by_field"] == {"power": 0.52, "temp": 0.6}
    # power's right read at 0.55 is used now (temp's wrong read no longer holds it back), and no
    # wrong read of any field is accepted; lot's 0.58 stays under the pooled threshold.
    assert stats[KIND_NUISANCE] == {"reads": 4, "accepted": 2, "accepted_wrong": 0, "fallback_rate": 0.5}
    assert stats[KIND_PRINTED]["accepted"] == 2 and stats[KIND_PRINTED]["accepted_wrong"] == 0
    # A field's floor is the minimum threshold, whatever its wrong reads.
    assert calibrate_outcomes(outcomes, 0.7, min_field_views=2)[0].of("power") == 0.7


def test_every_fields_substitutions_set_each_fields_floor() -> None:
    # pressure's calibration lines had no wrong read; temp had "6" for "8" at 0.7 (a substitution:
    # the digits are the same glyphs in every field) and a dropped digit at 0.8 (its own).
    outcomes = [Outcome(KIND_PRINTED, "temp", 0.9, True), Outcome(KIND_NUISANCE, "temp", 0.7, False, substitution=True),
                Outcome(KIND_NUISANCE, "temp", 0.8, False), Outcome(KIND_PRINTED, "pressure", 0.95, True),
                Outcome(KIND_NUISANCE, "pressure", 0.75, True), Outcome(KIND_NUISANCE, "pressure", 0.65, True)]
    thresholds, stats = calibrate_outcomes(outcomes, 0.5, min_field_views=2)
    assert 0.7 < thresholds.floor < 0.7001 and stats["substitution_floor"] == 0.7
    assert 0.8 < thresholds.of("temp") < 0.8001  # its own dropped digit
    assert thresholds.of("pressure") == thresholds.floor  # not 0.5: temp's "6" for "8" could be its
    assert stats[KIND_NUISANCE]["accepted"] == 1  # pressure's 0.75; its 0.65 falls back
    # A dropped glyph is the field's own: it sets no other field's threshold.
    dropped = [o for o in outcomes if not o.substitution]
    assert calibrate_outcomes(dropped, 0.5, min_field_views=2)[0].of("pressure") == 0.5


def test_a_substitution_floors_only_the_fields_that_can_print_both_glyphs() -> None:
    # An unseen lot's "Q" read "O" at 0.9 cannot make a wrong number; its "3" read "8" at 0.6 can.
    numbers, lots = frozenset("0123456789.-+C"), frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
    outcomes = [Outcome(KIND_PRINTED, "lot_id", 0.95, True), Outcome(KIND_PRINTED, "lot_id", 0.93, True),
                Outcome(KIND_NUISANCE, "lot_id", 0.9, False, substitution=True, swaps=frozenset({("Q", "O")})),
                Outcome(KIND_NUISANCE, "lot_id", 0.6, False, substitution=True, swaps=frozenset({("3", "8")})),
                Outcome(KIND_PRINTED, "temp", 0.95, True), Outcome(KIND_NUISANCE, "temp", 0.7, True)]
    value_chars = {"lot_id": lots, "temp": numbers}
    thresholds, stats = calibrate_outcomes(outcomes, 0.5, min_field_views=2, value_chars=value_chars)
    assert 0.6 < thresholds.of("temp") < 0.6001  # above the digit swap only
    assert 0.9 < thresholds.of("lot_id") < 0.9001
    assert 0.9 < thresholds.floor < 0.9001 and stats["substitution_floor"] == 0.9
    assert stats["substitution_floor_by_field"] == {"lot_id": 0.9, "temp": 0.6}
    assert stats[KIND_NUISANCE]["accepted"] == 1  # temp's 0.7
    # Without the swaps, or without the fields' characters, every substitution floors every field.
    unknown = [dataclasses.replace(o, swaps=frozenset()) for o in outcomes]
    assert calibrate_outcomes(unknown, 0.5, min_field_views=2, value_chars=value_chars)[0].of("temp") > 0.9
    assert calibrate_outcomes(outcomes, 0.5, min_field_views=2)[0].of("temp") > 0.9


def test_a_network_reading_numbers_wrong_too_often_is_unreliable() -> None:
    # 200 views of number fields: 3 wrong yet well formed (1.5%), 1 wrong refused by the ink check
    # (no confidence: the check stands against it, not the threshold); the lot id's wrong reads
    # (letters no training lot printed) do not count.
    outcomes = [Outcome(KIND_NUISANCE, "temp", 0.9, True)] * 196 + [Outcome(KIND_NUISANCE, "temp", 0.99, False)] * 3
    outcomes += [Outcome(KIND_NUISANCE, "temp", None, False, ink_refused=True)]
    outcomes += [Outcome(KIND_NUISANCE, "lot_id", 0.95, False)] * 50
    _, stats = calibrate_outcomes(outcomes, 0.5, number_fields={"temp"})
    assert stats["number_views"] == 200 and stats["number_wrong"] == 3
    problem = unreliable(stats)  # the default limit, 1%
    assert problem is not None and problem.startswith("3 of the 200 calibration reads of number fields")
    assert "(1.50%, above the 1% of --max-wrong-rate)" in problem
    assert unreliable(stats, limit=0.015) is None  # at the limit is not above it
    assert unreliable({**stats, "number_wrong": 2}) is None
    # Stats of a student calibrated before the counts were kept, or of a line without numbers.
    assert "number_views" not in calibrate_outcomes(outcomes, 0.5)[1]
    assert unreliable({"wrong_but_well_formed": 500}) is None
    assert unreliable(calibrate_outcomes(outcomes[-50:], 0.5, number_fields={"temp"})[1]) is None


def test_a_restart_its_calibration_calls_unreliable_is_passed_over_for_the_next_in_rank() -> None:
    from types import SimpleNamespace

    from stream.ocr.distill import first_reliable

    # Three restarts best first; the networks stand in as names, each with its calibration's counts.
    wrong = {"a": 5, "b": 1, "c": 0}
    ranked = [(name, SimpleNamespace(seed=seed)) for name, seed in (("a", 200), ("b", 0), ("c", 100))]
    calibrated: list[str] = []

    def calibrate_net(net):
        calibrated.append(net)
        return f"thresholds of {net}", {"number_views": 100, "number_wrong": wrong[net]}

    (net, training, thresholds, stats), vetoed = first_reliable(ranked, calibrate_net, 0.01)
    assert (net, training.seed, thresholds) == ("b", 0, "thresholds of b") and stats["number_wrong"] == 1
    assert [seed for seed, _ in vetoed] == [200] and "5 of the 100 calibration reads" in vetoed[0][1]
    assert calibrated == ["a", "b"]  # the third is never calibrated: the second passed
    chosen, vetoed = first_reliable(ranked, calibrate_net, 0.0)
    assert chosen[0] == "c" and [seed for seed, _ in vetoed] == [200, 0]
    wrong["c"] = 2
    chosen, vetoed = first_reliable(ranked, calibrate_net, 0.0)
    assert chosen is None and [seed for seed, _ in vetoed] == [200, 0, 100]  # none: distill writes nothing


def test_a_text_field_needs_many_distinct_values_before_the_student_reads_it() -> None:
    from stream.ocr.student import MIN_TEXT_VALUES, NEVER

    # Two lots on the calibration lines, read right at 0.99: too few values to know how a new lot's
    # letters are misread, so PaddleOCR reads the lot id; numbers keep their own thresholds.
    lots = [Outcome(KIND_NUISANCE, "lot_id", 0.99, True, value=f"AB{i % 2}") for i in range(300)]
    temps = [Outcome(KIND_NUISANCE, "temp", 0.99, True)] * 300
    thresholds, stats = calibrate_outcomes(lots + temps, 0.5, text_fields={"lot_id"})
    assert thresholds.of("lot_id") == NEVER and thresholds.of("temp") == 0.5
    assert stats["text_values"] == {"lot_id": 2} and stats[KIND_NUISANCE]["accepted"] == 300
    many = [dataclasses.replace(o, value=f"AB{i % MIN_TEXT_VALUES}") for i, o in enumerate(lots)]
    thresholds, stats = calibrate_outcomes(many + temps, 0.5, text_fields={"lot_id"})
    assert thresholds.of("lot_id") == 0.5 and stats["text_values"] == {"lot_id": MIN_TEXT_VALUES}
    assert "text_values" not in calibrate_outcomes(lots, 0.5)[1]  # not asked: not counted, not refused


def test_a_bad_budget_is_refused() -> None:
    assert DistillConfig(steps=0, batch=1).problems() == ["--steps must be at least 1, got 0",
                                                           "--batch must be at least 2, got 1"]
    assert DistillConfig(steps=3000).every == 300 and DistillConfig(steps=5).every == 1
    assert DistillConfig(splice_copies=-1).problems() == ["--splice must not be negative, got -1"]
    assert DistillConfig(restarts=0).problems() == ["--restarts must be at least 1, got 0"]
    assert DistillConfig(max_wrong_rate=1.5).problems() == ["--max-wrong-rate must be in [0, 1], got 1.5"]



class _ScriptedReads:
    """A network that reads each view as the next text of a script (CTC logits: character,
    blank, character, ...), for `HeldOutViews.outcomes`."""

    def __init__(self, texts: list[str], charset: str):
        self.texts, self.charset = texts, charset

    def logits(self, batch: np.ndarray) -> np.ndarray:
        steps = batch.shape[-1] // 4
        out = np.zeros((len(batch), steps, len(self.charset) + 1), np.float32)
        out[:, :, 0] = 20.0  # blank everywhere ...
        for i, text in enumerate(self.texts[: len(batch)]):
            for j, char in enumerate(text):  # ... but a character every other step
                out[i, 2 * j, 0] = 0.0
                out[i, 2 * j, self.charset.index(char) + 1] = 20.0
        return out


def test_a_wrong_read_with_the_printed_values_length_is_a_substitution(line_profile: LineProfile) -> None:
    import cv2

    from stream.ocr.crops import trim_to_ink

    canvas = np.full((48, 640), 20, np.uint8)
    cv2.putText(canvas, "TEMP: 172.4 C", (8, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 235, 1, cv2.LINE_AA)
    temp = [f.name for f in line_profile.fields].index("temp")
    line = Line("f1", temp, canvas, trim_to_ink(canvas), 172.4, "manifest")
    charset = profile_charset(line_profile)
    views = HeldOutViews.of([line, line, line], 0, 0, 32, 256)
    network = _ScriptedReads(["TEMP172.4C", "TEMP172.6C", "TEMP1772.4C"], charset)
    outcomes = views.outcomes(network, line_profile, charset)
    right, swapped, longer = outcomes
    assert right.correct and not right.substitution and right.confidence > 0.99
    assert not swapped.correct and swapped.substitution and swapped.confidence > 0.99
    assert swapped.swaps == {("4", "6")}
    assert not longer.correct and not longer.substitution


class _RatedByWeights(HeldOutViews):
    """Selection lines whose fallback is a function of the network's first weights: the same
    in any process, and different for networks of different seeds."""

    def __init__(self, line: Line) -> None:
        super().__init__((line,), (KIND_PRINTED,), ((np.zeros((HEIGHT, 16), np.float32), 1),))

    def outcomes(self, net, profile, charset, widths=None):
        first = float(next(iter(net.parameters())).detach().sum())
        fallbacks = int(abs(first) * 1e4) % 100  # of 100 lines
        return [Outcome(KIND_PRINTED, "temp", 0.9 if i >= fallbacks else None, True) for i in range(100)]


def test_restarts_train_each_seed_and_keep_the_one_the_selection_lines_like_best(
    lines: list[Line], line_t_profile: LineProfile
) -> None:
    from stream.ocr.distill import RESTART_SEED_STEP, train_restarts

    charset, width = profile_charset(line_t_profile), input_width(lines, HEIGHT)
    selection = _RatedByWeights(lines[0])
    config = DistillConfig(steps=6, batch=8, eval_every=3, restarts=3, seed=7)
    ranked, results = train_restarts(config, lines=lines, profile=line_t_profile, charset=charset, height=HEIGHT,
                                     width=width, selection=selection)
    (net, kept), *others = ranked
    # Each restart (two in other processes) is what `train` gives for its seed, here.
    alone = [_train(lines, line_t_profile, selection, seed=7 + RESTART_SEED_STEP * r) for r in range(3)]
    assert [r.seed for r in results] == [7, 7 + RESTART_SEED_STEP, 7 + 2 * RESTART_SEED_STEP]
    assert [r.best.key for r in results] == [r.best.key for _, r in alone]
    assert len({r.best.key for r in results}) == 3  # else the test would not tell them apart
    best = min(range(3), key=lambda r: alone[r][1].best.key)
    assert best != 0  # the kept weights come back from another process
    assert kept.seed == results[best].seed
    assert _same(_weights(net), _weights(alone[best][0]))
    # The others follow in the selection lines' order, each its own seed's network, for distill
    # to fall back on when the first one's calibration vetoes it.
    order = sorted(range(3), key=lambda r: alone[r][1].best.key)
    assert [r.seed for _, r in ranked] == [results[r].seed for r in order]
    assert all(_same(_weights(n), _weights(alone[r][0])) for (n, _), r in zip(others, order[1:], strict=True))


def test_without_selection_lines_one_network_trains(lines: list[Line], line_t_profile: LineProfile) -> None:
    from stream.ocr.distill import train_restarts

    config = DistillConfig(steps=3, batch=8, restarts=2)
    ranked, results = train_restarts(config, lines=lines, profile=line_t_profile,
                                     charset=profile_charset(line_t_profile), height=HEIGHT,
                                     width=input_width(lines, HEIGHT))
    [(net, kept)] = ranked
    assert results == [kept] and kept.seed == 0 and kept.best is None
    assert _same(_weights(net), _weights(_train(lines, line_t_profile, steps=3)[0]))
