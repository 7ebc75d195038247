"""Config values against the types their constructors declare, checked before anything is built.

Hydra hands a YAML or command-line value to its ``_target_`` as it is: ``algorithm.inner_lr=abc``
reaches MAML as the string ``'abc'`` and fails deep inside with a ``TypeError`` that names no
key. Here each configured value is compared with the annotation of the constructor parameter of
its name (``inspect.signature`` and ``typing.get_type_hints``, following ``**kwargs`` to the base
classes' constructors), and a mismatch is a ``ConfigError`` naming the key and the type wanted.
What a config value cannot decide (a class, a callable, a tensor, a missing annotation) passes:
this check must never refuse valid input, only spare the user a traceback.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal, Union

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from metarun.errors import ConfigError

# The groups ``run.build`` instantiates; ``optimizers.<group>`` holds more optimisers.
BUILT_GROUPS = ("dataset", "algorithm", "model", "optimizer", "scheduler", "hardware", "logger")
# Plain sections (no ``_target_``) and the class ``run.py`` builds from each.
SECTIONS = {"trainer": "metarun.training.trainer.TrainerConfig"}
SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
# Types no config value is, beside which a union's other members decide (``float | Tensor``).
NEVER_CONFIG = (torch.Tensor,)
MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def check_config(cfg: DictConfig) -> None:
    """Every group a run builds, and each ``optimizers.<group>`` optimiser and scheduler."""
    for key in BUILT_GROUPS:
        check_group(cfg, key)
    for key, target in SECTIONS.items():
        check_group(cfg, key, target=target)
    for group, own in (cfg.get("optimizers") or {}).items():
        for key in ("optimizer", "scheduler"):
            check_group(own, key, prefix=f"optimizers.{group}.")


def check_group(cfg: DictConfig, key: str, prefix: str = "", target: str | None = None) -> None:
    """``cfg[key]`` (resolved) against its ``_target_``'s constructor (or ``target``'s); nested
    ``_target_`` configs too. Unresolvable values are left for ``build`` to report."""
    node = cfg.get(key)
    if not isinstance(node, DictConfig):
        return
    try:
        values = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
    except Exception:
        return
    if isinstance(values, dict):
        check_values({"_target_": target, **values} if target else values, prefix + key)


def check_values(values: dict[str, Any], key: str) -> None:
    """One config mapping: its own target's parameters, then any target config within it."""
    target = values.get("_target_")
    parameters = parameters_of(target) if isinstance(target, str) else {}
    for name, value in values.items():
        if not isinstance(name, str) or name.startswith("_"):
            continue
        if name in parameters and not has_target(value):  # a nested target becomes an object
            hint, default = parameters[name]
            if not (value is None and default is None) and not fits(value, hint):
                raise ConfigError(f"{key}.{name}", f"must be {describe(hint)}, got {value!r}")
        for where, nested in targets_within(value, f"{key}.{name}"):
            check_values(nested, where)


def has_target(value: Any) -> bool:
    return isinstance(value, dict) and "_target_" in value


def targets_within(value: Any, key: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ``_target_`` configs in ``value`` (itself, or inside its mappings and lists)."""
    if has_target(value):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from targets_within(item, f"{key}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from targets_within(item, f"{key}[{index}]")


@functools.cache
def parameters_of(target: str) -> dict[str, tuple[Any, Any]]:
    """Each named parameter's (annotation, default) for ``target``: a function, a bound
    classmethod, or a class, whose ``**kwargs`` lead on to its bases' constructors. Empty when
    the target does not import (``build`` reports that)."""
    try:
        found = get_object(target)
    except Exception:
        return {}
    parameters: dict[str, tuple[Any, Any]] = {}
    for function in constructors(found):
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            break
        hints = hints_of(function)
        keywords = False
        for name, parameter in signature.parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                keywords = True
            elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
                parameters.setdefault(name, (hints.get(name, Any), parameter.default))
        if not keywords:
            break
    return parameters


def hints_of(function: Any) -> dict[str, Any]:
    """The resolved annotations of ``function``; one by one where some name does not resolve
    (e.g. imported for type checking only), and those left out."""
    try:
        return typing.get_type_hints(function)
    except Exception:
        pass
    hints = {}
    namespace = getattr(function, "__globals__", {})
    for name, annotation in getattr(function, "__annotations__", {}).items():
        try:
            hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:
            continue
    return hints


def constructors(found: Any) -> list[Any]:
    """What a call of ``found`` runs, outermost first: a class's ``__init__`` methods along its
    method resolution order, or the function itself."""
    if inspect.isclass(found):
        return [c.__init__ for c in found.__mro__ if c is not object and "__init__" in vars(c)]
    return [found] if callable(found) else []


def fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (a resolved config value) can be ``hint``; True when undecidable."""
    if hint is Any or isinstance(hint, (typing.TypeVar, str)):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        return any(fits(value, arg) for arg in args if arg not in NEVER_CONFIG)
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in SEQUENCES or origin in SEQUENCES:
        if isinstance(value, str):  # a sequence, but not a list
            return hint not in (list, tuple) and origin not in (list, tuple)
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(fits, value, args))
        return not args or all(fits(item, args[0]) for item in value)
    if hint in MAPPINGS or origin in MAPPINGS:
        return isinstance(value, dict)
    return True  # a class, a callable, a protocol: not for a config value to decide


def describe(hint: Any) -> str:
    """``hint`` as the message says it: 'a float', 'an int or null', 'one of 'a', 'b''."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        others = [describe(a) for a in args if a is not type(None) and a not in NEVER_CONFIG]
        return " or ".join(others + (["null"] if type(None) in args else []))
    if origin is Literal:
        return f"one of {', '.join(repr(arg) for arg in args)}"
    names = {bool: "a bool (true or false)", int: "an int", float: "a float", str: "a string"}
    if hint in names:
        return names[hint]
    if hint is type(None):
        return "null"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} ({', '.join(plain(arg) for arg in args)})"
    if hint in SEQUENCES or origin in SEQUENCES:
        return f"a list of {plain(args[0])}" if args else "a list"
    if hint in MAPPINGS or origin in MAPPINGS:
        return "a mapping"
    return plain(hint)


def plain(hint: Any) -> str:
    """A type's short name inside a message: 'float', 'int or null'."""
    if hint is type(None):
        return "null"
    said = describe(hint) if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))
    return said.removeprefix("a ").removeprefix("an ")


__all__ = ["check_config", "check_group", "fits"]
