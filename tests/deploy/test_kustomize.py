"""The strict kustomize renderer of the tests (deploy/tools/kustomize.py) on small kustomizations."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deploy.tools.kustomize import KustomizeError, build, json_patch

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, labels: {a: b}}
spec:
  replicas: 1
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      initContainers: [{name: init, image: "registry:5000/tools/init:1.0"}]
      containers:
        - {name: c, image: "registry.example.com/app:1.0", ports: [{containerPort: 80}]}
        - {name: side, image: "busybox@sha256:abc"}
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def kustomization(**fields) -> str:
    return yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **fields})


def test_overlay_over_base(tmp_path):
    write(tmp_path / "base", {"kustomization.yaml": kustomization(resources=["app.yaml"], namespace="base-ns"),
                              "app.yaml": DEPLOYMENT + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"})
    write(tmp_path / "overlay", {
        "kustomization.yaml": kustomization(
            resources=["../base"], namespace="prod",
            images=[{"name": "registry.example.com/app", "newTag": "2.0"},
                    {"name": "registry:5000/tools/init", "newName": "mirror/init"},
                    {"name": "busybox", "digest": "sha256:def"}],
            replicas=[{"name": "app", "count": 3}],
            patches=[{"target": {"kind": "Deployment", "name": "app"}, "patch": yaml.safe_dump([
                {"op": "add", "path": "/spec/template/spec/containers/0/env", "value": [{"name": "X", "value": "1"}]},
                {"op": "replace", "path": "/metadata/labels/a", "value": "c"},
                {"op": "remove", "path": "/spec/template/spec/containers/0/ports"},
                {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "last", "image": "l:1"}},
                {"op": "test", "path": "/spec/selector/matchLabels/a", "value": "b"},
            ])}]),
    })
    deployment, namespace = build(tmp_path / "overlay")
    assert deployment["metadata"]["namespace"] == "prod"
    assert "namespace" not in namespace["metadata"]  # cluster-scoped
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    containers = spec["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == ["registry.example.com/app:2.0", "busybox@sha256:def", "l:1"]
    assert spec["template"]["spec"]["initContainers"][0]["image"] == "mirror/init:1.0"  # port is not a tag
    assert containers[0]["env"] == [{"name": "X", "value": "1"}] and "ports" not in containers[0]
    assert deployment["metadata"]["labels"] == {"a": "c"} and spec["template"]["metadata"]["labels"] == {"a": "b"}


def test_configmap_generator_create_and_merge(tmp_path):
    write(tmp_path / "base", {
        "kustomization.yaml": kustomization(configMapGenerator=[{"name": "cfg", "envs": ["a.env"], "literals": ["L=1"],
                                                                 "files": ["k=data/f.json", "data/g.txt"]}],
                                            generatorOptions={"disableNameSuffixHash": True}),
        "a.env": "# comment\nA=1\nB=x=y\n", "data/f.json": "{}", "data/g.txt": "g"})
    write(tmp_path / "over", {
        "kustomization.yaml": kustomization(resources=["../base"], configMapGenerator=[
            {"name": "cfg", "behavior": "merge", "literals": ["A=2"], "options": {"labels": {"x": "1"}}}],
            generatorOptions={"disableNameSuffixHash": True})})
    (base,) = build(tmp_path / "base")
    assert base["data"] == {"L": "1", "A": "1", "B": "x=y", "k": "{}", "g.txt": "g"}
    (merged,) = build(tmp_path / "over")
    assert merged["data"]["A"] == "2" and merged["data"]["B"] == "x=y" and merged["metadata"]["labels"] == {"x": "1"}


@pytest.mark.parametrize(("fields", "files", "message"), [
    ({"commonLabels": {"a": "b"}}, {}, "not supported by this renderer"),
    ({"configMapGenerator": [{"name": "c", "literals": ["a=b"]}]}, {}, "disableNameSuffixHash"),
    ({"resources": ["missing.yaml"]}, {}, "does not exist"),
    ({"resources": ["app.yaml"], "patches": [{"target": {"kind": "Deployment", "name": "app"},
                                              "patch": "spec: {replicas: 2}"}]}, {"app.yaml": DEPLOYMENT},
     "only JSON 6902"),
    ({"resources": ["app.yaml"], "patches": [{"target": {"kind": "Service"}, "patch": "[]"}]}, {"app.yaml": DEPLOYMENT},
     "matches nothing"),
    ({"resources": ["app.yaml", "app.yaml"]}, {"app.yaml": DEPLOYMENT}, "defined twice"),
    ({"configMapGenerator": [{"name": "c", "files": ["../outside.txt"]}],
      "generatorOptions": {"disableNameSuffixHash": True}}, {}, "outside"),
])
def test_unsupported_or_wrong_kustomizations_are_refused(tmp_path, fields, files, message):
    (tmp_path / "outside.txt").write_text("x")
    write(tmp_path / "k", {"kustomization.yaml": kustomization(**fields), **files})
    with pytest.raises(KustomizeError, match=message):
        build(tmp_path / "k")


@pytest.mark.parametrize("op", [
    {"op": "replace", "path": "/spec/missing", "value": 1},
    {"op": "remove", "path": "/spec/list/5"},
    {"op": "test", "path": "/spec/list/0", "value": 9},
    {"op": "move", "path": "/spec/a", "from": "/spec/b"},
    {"op": "add", "path": "/spec/nope/deeper", "value": 1},
])
def test_json_patch_refuses_what_rfc6902_refuses(op):
    with pytest.raises(KustomizeError):
        json_patch({"spec": {"list": [1, 2]}}, op)


def test_json_patch_escapes():
    doc = {"limits": {"nvidia.com/gpu": 1, "a~b": 2}}
    json_patch(doc, {"op": "remove", "path": "/limits/nvidia.com~1gpu"})
    json_patch(doc, {"op": "replace", "path": "/limits/a~0b", "value": 3})
    assert doc == {"limits": {"a~b": 3}}
