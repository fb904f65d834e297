"""INADE Studio: paint a layout, click an instance, re-draw it — in the browser.

``python -m inade.studio --checkpoint C`` (or ``make studio``) serves a local page
with a class palette, brush / line / fill / eraser and instance tools, undo/redo,
example layouts and PNG uploads; the synthesised image beside the layout follows
every stroke. A click on an instance re-draws only its noise; classes, the whole
picture, locked instances, variations and reference styles (through the encoder)
are one button away, and the picture exports with its maps and latents for
``inade-synth``. The page sends maps and actions; the server
(:mod:`inade.studio.server`, Starlette) runs :class:`inade.Synthesizer`
(:mod:`inade.studio.engine`) and answers with PNGs. Needs the ``studio`` extra:
``pip install "inade[studio]"`` (starlette, uvicorn).
"""
import importlib

__all__ = ["Studio", "StudioError", "create_app"]


def __getattr__(name: str):
    """``Studio``, ``StudioError`` when first used (PEP 562): ``python -m inade.studio`` parses its
    options before torch loads."""
    if name not in ("Studio", "StudioError"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("inade.studio.engine"), name)


def create_app(studio, **kw):
    """The ASGI app for ``studio`` (see :func:`inade.studio.server.create_app`)."""
    from inade.studio.server import create_app as _create  # noqa: PLC0415 - starlette is an optional extra

    return _create(studio, **kw)
