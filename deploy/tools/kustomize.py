"""A small, strict renderer of the kustomize features that deploy/k8s uses, for offline tests.

Neither kubectl nor kustomize can be installed on the machines that test this project, so the
tests render the overlays with this module and validate the result against the Kubernetes
schemas. It implements exactly these kustomization fields, with kustomize's semantics:

* `resources`: YAML files (several documents each) and directories holding a kustomization;
* `namespace`: set on every namespaced object (cluster-scoped kinds are left alone);
* `configMapGenerator`: `literals`, `envs` and `files`, `behavior` create | merge | replace,
  only with `generatorOptions.disableNameSuffixHash: true` (kustomize's name hash and the
  rewriting of every reference to it are deliberately not used, see docs/operations.md);
* `images`: `newName`, `newTag`, `digest` on `containers` and `initContainers` images;
* `replicas`: `spec.replicas` of the named workload;
* `patches`: RFC 6902 JSON patches (inline `patch` or `path`) with a `target` of `kind`/`name`
  (strategic-merge patches are refused: their list-merge rules differ per field).

Anything else in a kustomization is refused with an error, so an overlay can never use a
feature that this renderer would silently get wrong. Output order is resources first, then
generated objects; kustomize orders its output by kind, which does not matter to a cluster.
Files are loaded only from inside each kustomization's folder, as kustomize's default load
restrictor demands.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "configMapGenerator", "generatorOptions", "images",
             "replicas", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass",
                  "StorageClass", "PersistentVolume", "ClusterTriggerAuthentication", "APIService",
                  "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "IngressClass", "RuntimeClass"}
WORKLOADS = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}


class KustomizeError(ValueError):
    pass


def build(folder: str | Path) -> list[dict[str, Any]]:
    """Render the kustomization in `folder` (like `kustomize build folder`)."""
    return _build(Path(folder).resolve(), stack=())


def _kustomization(folder: Path) -> dict[str, Any]:
    for name in KUSTOMIZATION_FILES:
        path = folder / name
        if path.is_file():
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            unknown = set(data) - SUPPORTED
            if unknown:
                raise KustomizeError(f"{path}: fields {sorted(unknown)} are not supported by this renderer "
                                     f"(supported: {sorted(SUPPORTED)})")
            return data
    raise KustomizeError(f"{folder} has no kustomization.yaml")


def _inside(folder: Path, relative: str) -> Path:
    path = (folder / relative).resolve()
    if folder != path and folder not in path.parents:
        raise KustomizeError(f"{relative} is outside {folder} (kustomize's load restrictor refuses it)")
    return path


def _build(folder: Path, stack: tuple[Path, ...]) -> list[dict[str, Any]]:
    if folder in stack:
        raise KustomizeError(f"cycle of kustomizations: {' -> '.join(map(str, (*stack, folder)))}")
    k = _kustomization(folder)
    objects: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = (folder / entry).resolve()  # a resource folder may lie anywhere (e.g. ../base)
        if path.is_dir():
            objects += _build(path, (*stack, folder))
        elif path.is_file():
            if folder not in path.parents:
                raise KustomizeError(f"resource file {entry} is outside {folder}")
            # deepcopy: YAML anchors must not make two places of a document one object
            objects += [copy.deepcopy(d) for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        else:
            raise KustomizeError(f"{folder}: resource {entry} does not exist")
    _generate_configmaps(folder, k, objects)
    if "namespace" in k:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for image in k.get("images", []):
        _set_images(objects, image)
    for replicas in k.get("replicas", []):
        _set_replicas(objects, replicas)
    for patch in k.get("patches", []):
        _apply_patch(folder, objects, patch)
    _check_unique(folder, objects)
    return objects


def _check_unique(folder: Path, objects: list[dict[str, Any]]) -> None:
    seen = set()
    for obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"), obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if key in seen:
            raise KustomizeError(f"{folder}: {key[1]} {key[3]} is defined twice")
        seen.add(key)


# ------------------------------------------------------------------------------ generators


def _generate_configmaps(folder: Path, k: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    generators = k.get("configMapGenerator", [])
    if not generators:
        return
    options = k.get("generatorOptions", {})
    if set(options) - {"disableNameSuffixHash", "labels", "annotations"}:
        raise KustomizeError(f"{folder}: generatorOptions {sorted(options)} not supported")
    if options.get("disableNameSuffixHash") is not True:
        raise KustomizeError(f"{folder}: configMapGenerator needs generatorOptions.disableNameSuffixHash: true "
                             "(this renderer does not reproduce kustomize's name hashes)")
    for gen in generators:
        unknown = set(gen) - {"name", "namespace", "behavior", "literals", "envs", "files", "options"}
        if unknown:
            raise KustomizeError(f"{folder}: configMapGenerator fields {sorted(unknown)} not supported")
        data: dict[str, str] = {}
        for literal in gen.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        for env in gen.get("envs", []):
            for line in _inside(folder, env).read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    key, sep, value = line.partition("=")
                    if not sep:
                        raise KustomizeError(f"{env}: line {line!r} is not KEY=VALUE")
                    data[key.strip()] = value
        for spec in gen.get("files", []):
            key, sep, rel = spec.partition("=")
            rel = rel if sep else key
            path = _inside(folder, rel)
            data[key if sep else path.name] = path.read_text(encoding="utf-8")
        meta: dict[str, Any] = {"name": gen["name"]}
        if "namespace" in gen:
            meta["namespace"] = gen["namespace"]
        for field_name in ("labels", "annotations"):
            merged = {**options.get(field_name, {}), **gen.get("options", {}).get(field_name, {})}
            if merged:
                meta[field_name] = merged
        behavior = gen.get("behavior", "create")
        existing = [o for o in objects if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == gen["name"]]
        if behavior == "create":
            if existing:
                raise KustomizeError(f"{folder}: ConfigMap {gen['name']} already exists (use behavior: merge)")
            objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
        elif behavior in ("merge", "replace"):
            if len(existing) != 1:
                raise KustomizeError(f"{folder}: behavior {behavior} needs exactly one ConfigMap {gen['name']} "
                                     f"from the resources, found {len(existing)}")
            target = existing[0]
            target["data"] = {**target.get("data", {}), **data} if behavior == "merge" else data
            for field_name in ("labels", "annotations"):
                if field_name in meta:
                    target["metadata"][field_name] = {**target["metadata"].get(field_name, {}), **meta[field_name]}
        else:
            raise KustomizeError(f"{folder}: unknown behavior {behavior!r}")


# ------------------------------------------------------------------------------ transformers


def _containers(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    """name, tag, digest of an image reference (a registry port is not a tag)."""
    rest, _, digest = image.partition("@")
    name, tag = rest, None
    if ":" in rest.rsplit("/", 1)[-1]:
        name, tag = rest.rsplit(":", 1)
    return name, tag, digest or None


def _set_images(objects: list[dict[str, Any]], spec: dict[str, Any]) -> None:
    if set(spec) - {"name", "newName", "newTag", "digest"}:
        raise KustomizeError(f"images entry {spec} has unsupported fields")
    for obj in objects:
        for container in _containers(obj.get("spec", {})):
            name, tag, digest = _split_image(container["image"])
            if name != spec["name"]:
                continue
            name = spec.get("newName", name)
            tag = spec.get("newTag", tag)
            digest = spec.get("digest", digest)
            container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _set_replicas(objects: list[dict[str, Any]], spec: dict[str, Any]) -> None:
    hits = [o for o in objects if o.get("kind") in WORKLOADS and o["metadata"]["name"] == spec["name"]]
    if not hits:
        raise KustomizeError(f"replicas: no workload named {spec['name']}")
    for obj in hits:
        obj.setdefault("spec", {})["replicas"] = int(spec["count"])


def _apply_patch(folder: Path, objects: list[dict[str, Any]], spec: dict[str, Any]) -> None:
    if set(spec) - {"target", "patch", "path"} or "target" not in spec:
        raise KustomizeError(f"{folder}: patches need a target and a patch or path; got {sorted(spec)}")
    target = spec["target"]
    if set(target) - {"kind", "name", "group", "version", "namespace"}:
        raise KustomizeError(f"{folder}: patch target {target} uses unsupported selectors")
    text = spec["patch"] if "patch" in spec else _inside(folder, spec["path"]).read_text(encoding="utf-8")
    ops = yaml.safe_load(text)
    if not isinstance(ops, list):
        raise KustomizeError(f"{folder}: only JSON 6902 patches (a list of operations) are supported")
    hits = [o for o in objects
            if o.get("kind") == target.get("kind", o.get("kind"))
            and o["metadata"]["name"] == target.get("name", o["metadata"]["name"])]
    if not hits:
        raise KustomizeError(f"{folder}: patch target {target} matches nothing")
    for obj in hits:
        for op in ops:
            json_patch(obj, op)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list, token: str, adding: bool) -> int:
    if token == "-" and adding:
        return len(container)
    if not token.isdigit():
        raise KustomizeError(f"list index {token!r} is not a number")
    index = int(token)
    if index > len(container) or (index == len(container) and not adding):
        raise KustomizeError(f"list index {index} out of range")
    return index


def json_patch(doc: dict[str, Any], op: dict[str, Any]) -> None:
    """Apply one RFC 6902 operation (add, remove, replace, test) to `doc` in place."""
    kind = op.get("op")
    if kind not in ("add", "remove", "replace", "test"):
        raise KustomizeError(f"JSON patch op {kind!r} not supported")
    *parents, last = _pointer(op["path"])
    node: Any = doc
    for token in parents:
        try:
            node = node[_index(node, token, False)] if isinstance(node, list) else node[token]
        except (KeyError, TypeError):
            raise KustomizeError(f"JSON patch path {op['path']} does not exist") from None
    value = copy.deepcopy(op.get("value"))
    if isinstance(node, list):
        index = _index(node, last, kind == "add")
        if kind == "add":
            node.insert(index, value)
        elif kind == "remove":
            node.pop(index)
        elif kind == "replace":
            node[index] = value
        elif json.dumps(node[index], sort_keys=True) != json.dumps(value, sort_keys=True):
            raise KustomizeError(f"JSON patch test failed at {op['path']}")
        return
    if not isinstance(node, dict):
        raise KustomizeError(f"JSON patch path {op['path']} goes through a scalar")
    if kind in ("remove", "replace", "test") and last not in node:
        raise KustomizeError(f"JSON patch {kind} of missing {op['path']}")
    if kind in ("add", "replace"):
        node[last] = value
    elif kind == "remove":
        del node[last]
    elif json.dumps(node[last], sort_keys=True) != json.dumps(value, sort_keys=True):
        raise KustomizeError(f"JSON patch test failed at {op['path']}")
