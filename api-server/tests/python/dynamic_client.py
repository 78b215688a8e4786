"""The official Kubernetes Python client's DynamicClient, with its default settings,
against a StartOS server: create, get, patch, watch, server-side apply and delete Packages.

Usage: python dynamic_client.py KUBECONFIG
Exits non-zero (with a traceback) on the first thing that does not work.
"""

import sys

from kubernetes import config, dynamic
from kubernetes.dynamic.exceptions import NotFoundError


def package(name, running):
    return {
        "apiVersion": "startos.dev/v1alpha1",
        "kind": "Package",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"source": {"registry": "default", "version": "^1.0"}, "running": running},
    }


def main(kubeconfig):
    client = dynamic.DynamicClient(config.new_client_from_config(config_file=kubeconfig))
    assert client.version["kubernetes"]["major"] == "1", client.version
    packages = client.resources.get(api_version="startos.dev/v1alpha1", kind="Package")

    start = packages.get().metadata.resourceVersion
    created = packages.create(body=package("py", True))
    assert created.metadata.name == "py" and created.spec.running is True, created

    got = packages.get(name="py")
    assert got.metadata.uid == created.metadata.uid, got

    # Custom kinds take JSON merge patches (strategic merge is for built-in kinds only).
    patched = packages.patch(
        name="py",
        body={"spec": {"running": False}},
        content_type="application/merge-patch+json",
    )
    assert patched.spec.running is False, patched

    # Watching from before the create sees it, then the patch.
    seen = []
    for event in packages.watch(resource_version=start, timeout=10):
        seen.append((event["type"], event["object"].spec.running))
        if len(seen) == 2:
            break
    assert seen == [("ADDED", True), ("MODIFIED", False)], seen

    applied = packages.server_side_apply(body=package("applied", True), field_manager="py-test")
    assert applied.metadata.name == "applied" and applied.spec.running is True, applied
    applied = packages.server_side_apply(body=package("applied", False), field_manager="py-test")
    assert applied.spec.running is False, applied

    names = sorted(item.metadata.name for item in packages.get(label_selector="app").items)
    assert names == ["applied", "py"], names

    for name in names:
        packages.delete(name=name)
    try:
        packages.get(name="py")
        raise AssertionError("py is still there after delete")
    except NotFoundError:
        pass
    print("dynamic client: ok")


if __name__ == "__main__":
    main(sys.argv[1])
