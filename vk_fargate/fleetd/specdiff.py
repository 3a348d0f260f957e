"""What a PUT changes in a microVM's spec, and whether that may happen in place. Pure.

A pod's spec is immutable but for its containers' images, and a kubelet answers an
image change by restarting that container from the new image. fleetd follows: a spec
that differs from the stored one only in its containers' image fields (``image``,
``image_pull_policy``; ``pull_credentials`` are never stored) is an in-place update;
any other difference is named field by field for the 409 that refuses it.
"""

from __future__ import annotations

from vk_fargate.fleet import models

IMAGE_FIELDS = frozenset({"image", "image_pull_policy", "pull_credentials"})


def refused(old: models.MicroVMSpec, new: models.MicroVMSpec) -> list[str]:
    """The fields that differ and cannot change in place, e.g. ``containers[web].env``;
    empty when only images (or nothing) differ. Files of ``files`` volumes do not
    count (``comparable``); any other change of ``volumes`` or ``volume_mounts`` does."""
    old, new = comparable(old), comparable(new)
    found = [
        name
        for name in models.MicroVMSpec.model_fields
        if name not in ("init_containers", "containers")
        and getattr(old, name) != getattr(new, name)
    ]
    for kind in ("init_containers", "containers"):
        before: list[models.Container] = getattr(old, kind)
        after: list[models.Container] = getattr(new, kind)
        if [c.name for c in before] != [c.name for c in after]:
            found.append(kind)
            continue
        for was, now in zip(before, after, strict=True):
            found += [
                f"{kind}[{was.name}].{name}"
                for name in models.Container.model_fields
                if name not in IMAGE_FIELDS and getattr(was, name) != getattr(now, name)
            ]
    return found


def comparable(spec: models.MicroVMSpec) -> models.MicroVMSpec:
    """``spec`` without what its ``files`` volumes hold: files come and change through
    PUT .../volumes/{name} (and their contents are write-only), so a spec PUT again
    with other files is the same spec; a volume's name and kind are what compare."""
    kept = [
        v.model_copy(update={"files": models.FileSet()}) if v.files is not None else v
        for v in spec.volumes
    ]
    return spec.model_copy(update={"volumes": kept})
