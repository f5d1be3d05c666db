"""The base of the typed settings: pydantic models whose errors name the key, the value and what
is allowed, and whose docstrings list the options from their ``Field`` descriptions.

Each option is declared once, as a pydantic field with a ``description``: that text is the
option's ``--help`` line (:mod:`sk_braintune.commands.cli`), its entry in the class docstring
(generated here) and the documentation's. Values are checked strictly (``"8"`` is not a number,
``1`` is not ``true``), when a settings object is built and whenever a field is set; a failure
raises :class:`~sk_braintune.exceptions.SettingsError` with a one-line message such as
``setting 'tuner.lr_head' must be a number > 0, got 'fast' (str)`` or
``unknown setting 'windw' for DemoSettings; did you mean 'window'?``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .exceptions import SettingsError

__all__ = ["SettingsModel", "OptionSpec", "Many", "option_specs"]

_Item = TypeVar("_Item")


def _as_tuple(value):
    """A TOML array or a command-line list becomes a tuple; a single value a tuple of one."""
    if isinstance(value, (str, bytes, Path, Mapping)) or not hasattr(value, "__iter__"):
        return (value,)
    return value if isinstance(value, tuple) else tuple(value)


Many = Annotated[tuple[_Item, ...], BeforeValidator(_as_tuple)]
"""A list option: ``Many[str]`` takes a tuple, a list (TOML array, ``nargs="+"``) or one value."""

_KIND_WORDS = {int: ("an integer", "integers"), float: ("a number", "numbers"),
               str: ("a string", "strings"), bool: ("true or false", "booleans"),
               Path: ("a path (string)", "paths"), dict: ("a table", "tables")}
_KIND_TYPES = {int: "int", float: "float", str: "str", bool: "bool", Path: "pathlib.Path",
               dict: "dict"}


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """What a settings field accepts, read from its pydantic annotation and ``Field``.

    Parameters
    ----------
    name : str
    kind : type
        ``int``, ``float``, ``str``, ``bool``, ``pathlib.Path``, ``dict`` or a
        :class:`SettingsModel` (a nested table).
    description : str
        The option's one documentation text (``--help`` line and docstring).
    default : object
        The default value (``None`` for a nested table built by a factory).
    many : bool
        A list of ``kind`` values (``nargs="+"`` on the command line).
    optional : bool
        ``None`` (TOML: the key left out) is allowed.
    choices : tuple or None
        Allowed values.
    minimum : float or None
        Smallest allowed value (of each item of a list).
    exclusive_minimum : bool
        Whether ``minimum`` itself is excluded.
    command_line : bool
        Whether the field is a command-line option (``json_schema_extra={"command_line":
        False}`` makes it a config-file key only; nested tables never are).
    flags : tuple of str
        Extra short flags (``json_schema_extra={"flags": ["-o"]}``).
    """

    name: str
    kind: type
    description: str
    default: object
    many: bool = False
    optional: bool = False
    choices: tuple | None = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    command_line: bool = True
    flags: tuple = ()

    @property
    def is_table(self):
        """Whether the value is a nested table (a settings model or a dict)."""
        return self.kind is dict or _is_settings_model(self.kind)

    def describe(self):
        """Words for what the option accepts, e.g. ``"a list of integers >= 1"``.

        Returns
        -------
        text : str
        """
        if _is_settings_model(self.kind):
            text = f"a table of {self.kind.__name__} keys"
        else:
            one, several = _KIND_WORDS[self.kind]
            text = f"a list of {several}" if self.many else one
        if self.minimum is not None:
            text += f" {'>' if self.exclusive_minimum else '>='} {self.minimum:g}"
        if self.optional:
            text += " (or left out)"
        return text

    def type_text(self):
        """The numpydoc type of the option, e.g. ``"tuple of str, optional"``.

        Returns
        -------
        text : str
        """
        if self.choices is not None:
            text = "{" + ", ".join(repr(c) for c in self.choices) + "}"
        elif _is_settings_model(self.kind):
            text = self.kind.__name__
        else:
            text = _KIND_TYPES[self.kind]
        if self.many:
            text = f"tuple of {text}"
        if self.optional:
            text += ", optional"
        elif not self.is_table:
            default = str(self.default) if isinstance(self.default, Path) else self.default
            text += f", default={default!r}"
        return text


def _is_settings_model(kind):
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _spec(name, field):
    """The :class:`OptionSpec` of one pydantic field (annotation unwrapped layer by layer)."""
    kind, many, optional, constraints = field.annotation, False, False, list(field.metadata)
    while True:
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin is Annotated:
            kind, constraints = args[0], constraints + list(kind.__metadata__)
        elif origin in (typing.Union, types.UnionType) and type(None) in args:
            optional = True
            (kind,) = [a for a in args if a is not type(None)]
        elif origin is tuple:
            many, kind = True, args[0]
        else:
            break
    flat = []
    for item in constraints:  # a Field(...) inside Annotated carries its own constraints
        flat += list(item.metadata) if isinstance(item, FieldInfo) else [item]
    minimum, exclusive = None, False
    for item in flat:
        if getattr(item, "gt", None) is not None:
            minimum, exclusive = item.gt, True
        elif getattr(item, "ge", None) is not None:
            minimum = item.ge
    choices = None
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        kind = type(choices[0])
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    default = None if field.default is PydanticUndefined else field.default
    return OptionSpec(name, kind, field.description or "", default, many=many, optional=optional,
                      choices=choices, minimum=minimum, exclusive_minimum=exclusive,
                      command_line=bool(extra.get("command_line", True)),
                      flags=tuple(extra.get("flags", ())))


def option_specs(settings_cls):
    """The :class:`OptionSpec` of each field of a settings class, in declaration order.

    Parameters
    ----------
    settings_cls : type
        A :class:`SettingsModel` subclass.

    Returns
    -------
    specs : dict of str to OptionSpec
    """
    return {name: _spec(name, field) for name, field in settings_cls.model_fields.items()}


# -- errors -------------------------------------------------------------------------------------

def _unknown_key(owner, key, where, parent):
    valid = list(owner.model_fields)
    hint = difflib.get_close_matches(str(key), valid, n=1)
    return (f"{where}unknown setting {parent + str(key)!r} for {owner.__name__}"
            + (f"; did you mean {parent + hint[0]!r}?" if hint else "")
            + f" (valid keys: {', '.join(valid)})")


def _lookup(data, keys):
    for key in keys:
        data = data[key] if isinstance(data, Mapping) else getattr(data, key)
    return data


def _settings_error(settings_cls, exc, data, *, source=None, prefix=""):
    """The :class:`SettingsError` that tells a user what is wrong with one value or key.

    Parameters
    ----------
    settings_cls : type
    exc : pydantic.ValidationError
    data : mapping
        What was validated, to quote a whole list where one item is wrong.
    source : str, optional
        File the values came from, quoted first.
    prefix : str, default=""
        Prefix of the keys (``"study."`` for a ``[study]`` table).

    Returns
    -------
    error : SettingsError
    """
    # one error, an unknown key before a wrong value
    error = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    keys = [part for part in error["loc"] if isinstance(part, str)]  # ints: items of a list
    where = f"{source}: " if source else ""
    if not keys:  # not about one field (no such error today)
        return SettingsError(f"{where}{prefix}{settings_cls.__name__}: {error['msg']}")
    owner, spec = settings_cls, None
    for depth, key in enumerate(keys):
        if key not in owner.model_fields:
            parent = prefix + "".join(f"{k}." for k in keys[:depth])
            return SettingsError(_unknown_key(owner, key, where, parent))
        spec = _spec(key, owner.model_fields[key])
        if depth < len(keys) - 1:
            owner = spec.kind
    name = prefix + ".".join(keys)
    value = error.get("input")
    try:
        whole = _lookup(data, keys)
    except (KeyError, AttributeError, TypeError):
        whole = value
    kind = error["type"]
    if kind == "literal_error" and type(value) is spec.kind:  # the right type, not allowed
        allowed = ", ".join(repr(c) for c in spec.choices)
        hint = difflib.get_close_matches(str(value), [str(c) for c in spec.choices], n=1)
        return SettingsError(f"{where}unknown {keys[-1]} {value!r}: setting {name!r} must be one "
                             f"of {allowed} ({spec.describe()})"
                             + (f"; did you mean {hint[0]!r}?" if hint else ""))
    if kind in ("greater_than", "greater_than_equal"):
        if spec.kind is float and isinstance(value, int):
            value = float(value)
        return SettingsError(f"{where}setting {name!r} must be {spec.describe()}, got {value!r}")
    if kind == "too_short":
        return SettingsError(f"{where}setting {name!r} must be {spec.describe()} with at least "
                             "one value, got an empty list")
    allowed = (" (allowed values: " + ", ".join(repr(c) for c in spec.choices) + ")"
               if spec.choices else "")
    got = "nothing (None)" if whole is None else f"{whole!r} ({type(whole).__name__})"
    return SettingsError(f"{where}setting {name!r} must be {spec.describe()}{allowed}, got {got}")


# -- docstrings ---------------------------------------------------------------------------------

_SECTION = re.compile(r"^(\w[\w ]*)\n-+$", flags=re.MULTILINE)


def _parameters_section(settings_cls):
    lines = ["Parameters", "----------"]
    for spec in option_specs(settings_cls).values():
        text = spec.description[:1].upper() + spec.description[1:]
        if text and not text.endswith("."):
            text += "."
        if not spec.command_line and not spec.is_table:
            text += " Config-file key only (no command-line flag)."
        lines += [f"{spec.name} : {spec.type_text()}",
                  *textwrap.wrap(text, width=96, initial_indent="    ",
                                 subsequent_indent="    ", break_on_hyphens=False)]
    return "\n".join(lines)


def _document_options(settings_cls):
    """``settings_cls.__doc__`` with a Parameters section generated from the field descriptions.

    The section goes before the first section of the docstring (``See Also``, ...) or at its end.
    """
    doc = inspect.cleandoc(settings_cls.__dict__.get("__doc__") or settings_cls.__name__)
    section = _parameters_section(settings_cls)
    match = _SECTION.search(doc)
    if match is None:
        return f"{doc}\n\n{section}\n"
    return f"{doc[:match.start()]}{section}\n\n{doc[match.start():]}\n"


# -- the base class -------------------------------------------------------------------------------

class SettingsModel(BaseModel):
    """Base of the settings classes: strict, checked on every assignment, no unknown keys.

    Build one from keyword arguments or with :meth:`from_mapping` (a TOML table); read and set
    fields as attributes; :meth:`~pydantic.BaseModel.model_dump` gives plain values
    (``mode="json"``: lists and strings, as a TOML file holds them).
    """

    model_config = ConfigDict(strict=True, extra="forbid", validate_assignment=True,
                              allow_inf_nan=False)

    def __init__(self, /, **values):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _settings_error(type(self), exc, values) from None

    # Validation of a nested table or of model_validate() must not go through this __init__
    # (pydantic-core would wrap its SettingsError as a ValueError of the outer model): mark it as
    # pydantic's own __init__, which it wraps in the same way (pydantic's RootModel does this).
    __init__.__pydantic_base_init__ = True

    def __setattr__(self, name, value):
        if name not in type(self).model_fields:
            raise SettingsError(_unknown_key(type(self), name, "", ""))
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise _settings_error(type(self), exc, {name: value}) from None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs):
        super().__pydantic_init_subclass__(**kwargs)
        cls.__doc__ = _document_options(cls)

    @classmethod
    def from_mapping(cls, mapping, *, source=None, prefix=""):
        """Build the settings from a mapping (a TOML table, keyword arguments), all checked.

        Parameters
        ----------
        mapping : mapping of str to object or instance of this class
            Keys are field names; missing ones take the defaults; nested tables are mappings.
            An instance is returned as it is.
        source : str, optional
            Where the mapping came from (a file name), quoted first in errors.
        prefix : str, default=""
            Prefix of the keys in errors (``"study."`` for a ``[study]`` table).

        Returns
        -------
        settings : instance of this class

        Raises
        ------
        SettingsError
            For an unknown key or a value of the wrong type.
        """
        if isinstance(mapping, cls):
            return mapping
        mapping = dict(mapping)
        try:
            return cls.model_validate(mapping)
        except ValidationError as exc:
            raise _settings_error(cls, exc, mapping, source=source, prefix=prefix) from None

    def with_overrides(self, overrides, *, source=None, prefix=""):
        """A checked copy with some fields changed; a mapping for a nested table changes only
        the keys it holds.

        Unlike setting a nested field to a mapping (which builds the table afresh from its
        defaults), ``{"tuner": {"lr_head": 0.01}}`` changes only ``tuner.lr_head``.

        Parameters
        ----------
        overrides : mapping of str to object
        source : str, optional
            Where the overrides came from, quoted first in errors.
        prefix : str, default=""
            Prefix of the keys in errors (``"study."`` for a ``[study]`` table).

        Returns
        -------
        settings : instance of this class
            A new object; this one is left as it is.

        Raises
        ------
        SettingsError
            For an unknown key or a value of the wrong type, named with ``prefix``.
        """
        merged = _merge(self.model_dump(), overrides)
        return type(self).from_mapping(merged, source=source, prefix=prefix)


def _merge(values, overrides):
    merged = dict(values)
    for key, value in dict(overrides).items():
        if isinstance(merged.get(key), dict) and isinstance(value, Mapping):
            value = _merge(merged[key], value)
        merged[key] = value
    return merged
