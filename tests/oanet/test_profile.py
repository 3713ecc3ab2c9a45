"""Line profile loading and validation: every bad profile gets a specific, one-line reason."""

from __future__ import annotations

import copy
from pathlib import Path
from importlib import resources

import pytest
import yaml

from oanet.profile import LineProfile, ProfileError, load_profile, parse_profile, save_profile

DEFAULT = resources.files("oanet") / "profiles" / "line-a.yaml"


@pytest.fixture
def data() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


def test_default_profile_loads_with_fields_in_order():
    profile = load_profile(str(DEFAULT))
    assert profile.name == "line-a"
    assert profile.field_names == ["lot_id", "temp", "exposure", "bond_force", "pressure", "speed",
                                     "humidity", "z_offset", "tilt", "us_power"]
    assert profile.field("temp").in_spec(172.4) is True
    assert profile.field("temp").in_spec(190.0) is False
    assert profile.field("lot_id").in_spec("AB1234-07") is None


def test_save_and_load_round_trip(tmp_path):
    profile = load_profile(str(DEFAULT))
    path = save_profile(profile, tmp_path)
    assert path.name == "profile.yaml"
    assert load_profile(tmp_path) == profile


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(colour="red"), "colour: unknown key"),
        (lambda d: d["fields"][1].update(colour="red"), "fields[1] (temp).colour: unknown key"),
        (lambda d: d.pop("frame"), "frame: missing key"),
        (lambda d: d.update(object_roi=[900, 700, 448, 448]),
         "object_roi [900, 700, 448, 448] lies outside the 1024x768"),
        (lambda d: d.update(panel_roi=[496, 16, 512, 0]), "must have w, h > 0"),
        (lambda d: d["fields"][2].update(roi=[504, 740, 496, 48]), "roi of field 'exposure'"),
        (lambda d: d["fields"].append(copy.deepcopy(d["fields"][1])), "duplicate field name(s): temp"),
        (lambda d: d["fields"][3].update(label="temp"), "duplicate field label(s): TEMP"),
        (lambda d: d["fields"][1].update(label="  "), "fields[1] (temp).label: label must not be empty"),
        (lambda d: d["fields"][1].update(name="Temp"), "must be snake_case"),
        (lambda d: d["fields"][1].update(kind="float"), "Input should be 'number' or 'text'"),
        (lambda d: d["fields"][1].update(spec=[185, 160]), "low <= high"),
        (lambda d: d["fields"][1].update(spec=[-10, 185]), "must lie inside its plausible range"),
        (lambda d: d["fields"][0].update(spec=[0, 1]), "applies to number fields only"),
        (lambda d: d["fields"][0].update(pattern="[A-Z"), "not a valid regular expression"),
        (lambda d: d.update(fields=[]), "fields"),
        (lambda d: d.update(printing={"fonts": ["comic"]}), "printing.fonts"),
        (lambda d: d.update(printing={"separators": [" -> "]}), "must be made of ':', '=' and spaces"),
    ],
)
def test_invalid_profiles_name_the_problem(data, mutate, message):
    mutate(data)
    with pytest.raises(ProfileError) as info:
        parse_profile(data, "p.yaml")
    text = str(info.value)
    assert message in text and text.startswith("p.yaml: ") and "\n" not in text


def test_missing_file(tmp_path):
    with pytest.raises(ProfileError, match="line profile not found"):
        load_profile(tmp_path / "nope.yaml")
    with pytest.raises(ProfileError, match="line profile not found: .*profile.yaml"):
        load_profile(tmp_path)  # a folder means its profile.yaml


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed\n", "not valid YAML"),
        ("", "the line profile is empty"),
        ("- just\n- a list\n", "must be a YAML mapping, got list"),
    ],
)
def test_unreadable_files(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message):
        load_profile(path)


def test_profiles_are_immutable():
    profile = load_profile(str(DEFAULT))
    with pytest.raises(Exception):
        profile.name = "other"  # type: ignore[misc]
    assert isinstance(profile, LineProfile)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "oanet" / "profiles").glob("*.yaml")))
def test_every_shipped_profile_is_valid(path):
    profile = load_profile(path)
    assert profile.field_names


def test_a_print_style_is_for_the_generator_only(data):
    """`printing` (faces, italic, separators for `oanet synth`) is left out of dumps: the digests
    of the OCR cache and of a distilled student, and a dataset's profile.yaml, stay the same."""
    plain = parse_profile(data)
    styled = parse_profile({**data, "printing": {"fonts": ["complex_small"], "italic": True,
                                                 "separators": ["=", " := "]}})
    assert styled.printing is not None and styled.printing.fonts == ("complex_small",)
    assert styled.model_dump_json() == plain.model_dump_json()
    assert "printing" not in styled.to_yaml()
