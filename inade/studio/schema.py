"""The fields a studio request may carry, their types and ranges (pydantic).

:func:`parse` checks a decoded JSON request against :class:`ActRequest` before any
action reads it: wrong types (strict: ``"3"`` is not a number, ``true`` is not an
id), a list where a name goes, NaN or infinite coordinates, integers past their
range (a 5000-digit seed), unknown fields. What depends on the model or the maps
(a class id past the palette, a click outside the map, a base64 map's size) is
checked by the actions themselves. Every failure is one :class:`StudioError` line
naming the field, e.g. ``seed: must be at most 4611686018427387903, got 10**40``.
"""
from __future__ import annotations

import reprlib
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class StudioError(ValueError):
    """A request the studio cannot carry out; the message is shown to the user as it is."""


MAX_INSTANCES = 1024
MAX_VARIATIONS = 16
MAX_SEED = 2**62 - 1
MAX_NAME = 200  # characters of an action, example name or session id

Finite = Annotated[float, Field(allow_inf_nan=False)]
Point = Annotated[list[Finite], Field(min_length=2, max_length=2)]  # [x, y]
Name = Annotated[str, Field(max_length=MAX_NAME)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


class State(_Strict):
    """The page's maps (base64 uint16) and latents (base64 float32, ``L`` instances)."""

    label: str | None = None
    inst: str | None = None
    L: int | None = Field(None, ge=1, le=MAX_INSTANCES)
    noise: str | None = None
    z: str | None = None


class Reference(_Strict):
    """A reference picture and its instance map, base64 PNG files."""

    image_png: str | None = None
    inst_png: str | None = None


class ActRequest(_Strict):
    """Every field any action reads; each action says which it needs (``Studio._act_*``)."""

    action: Name | None = None
    client: Name | None = None  # the session id the server issued (POST /api/session)
    supersedable: bool = False
    seed: int = Field(0, ge=0, le=MAX_SEED)
    name: Name | None = None
    label_png: str | None = None
    inst_png: str | None = None
    state: State | None = None
    locked: list[Annotated[int, Field(ge=0, le=65535)]] = Field(default_factory=list, max_length=MAX_INSTANCES)
    point: Point | None = None
    instance: int | None = Field(None, ge=0, le=65535)
    cls: int | None = Field(None, alias="class", ge=0, le=65535)
    count: int = Field(4, ge=1, le=MAX_VARIATIONS)
    reference: Reference | None = None
    ref_point: Point | None = None
    strength: Finite = Field(1.0, ge=0, le=1)
    sample: bool = False


_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlong, _short.maxlevel = 40, 40, 40, 3


def _one(err: dict) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "request"
    message = err["msg"].replace("Input should be", "must be").replace("Extra inputs are not permitted", "unknown field")
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown field"
    return f"{where}: {message}, got {_short.repr(err.get('input'))}"


def parse(req) -> dict:
    """``req`` checked against :class:`ActRequest`, as a dict of the fields it set (``class``
    under its own name; nested parts as dicts). Raises :class:`StudioError` naming the
    first bad fields."""
    if not isinstance(req, dict):
        raise StudioError("the request must be a JSON object")
    try:
        model = ActRequest.model_validate(req)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        shown = "; ".join(_one(e) for e in errors[:3]) + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else "")
        raise StudioError(shown) from None
    except RecursionError:
        raise StudioError("the request is nested too deeply") from None
    return model.model_dump(by_alias=True, exclude_unset=True)
