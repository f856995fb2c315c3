"""Runs one policy the way the pack's analyzer does, and returns the messages it reported."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

OPTIONS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def resource_violations(
    policy: ResourceValidationPolicy,
    resource_type: str,
    props: Mapping[str, Any],
    name: str = "subject",
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    found: list[str] = []
    args = ResourceValidationArgs(
        resource_type,
        props,
        f"urn:pulumi:test::p::{resource_type}::{name}",
        name,
        OPTIONS,
        None,
        dict(config or {}),
    )
    policy.validate(args, lambda message, urn=None: found.append(message))
    return found


def stack_violations(
    policy: StackValidationPolicy, resources: list[tuple[str, str, Mapping[str, Any]]]
) -> list[str]:
    """`resources`: (type, name, props) of each resource of the stack."""
    found: list[str] = []
    stack = [
        PolicyResource(
            typ, props, f"urn:pulumi:test::p::{typ}::{name}", name, OPTIONS, None, None, [], {}
        )
        for typ, name, props in resources
    ]
    policy.validate(StackValidationArgs(stack, {}), lambda message, urn=None: found.append(message))
    return found


def changed(props: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `props` with the dotted `path` set to `value` (a number indexes a list);
    value None deletes the key."""
    result = copy.deepcopy(dict(props))
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = result
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return result
