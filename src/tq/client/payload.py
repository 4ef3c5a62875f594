"""Payloads of Python task functions: arguments as JSON ``{"args": [...], "kwargs": {...}}``,
the return value as JSON, both decoded against the function's annotations. Never pickle.

``typing.get_type_hints`` supplies the types, so a ``datetime``, a dataclass or a msgspec
Struct parameter arrives as one and ``decode_result`` returns the annotated type. A parameter
with no annotation, or one msgspec cannot decode to, is decoded as plain JSON (Any).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any, get_type_hints

import msgspec

from tq.errors import ValidationError

_AnyDecoder = msgspec.json.Decoder[Any]
_Signature = tuple[list[_AnyDecoder], _AnyDecoder, dict[str, _AnyDecoder], _AnyDecoder]


class _Envelope(msgspec.Struct, frozen=True):
    # Raw: each value is decoded later, against the type of the parameter it binds to.
    args: list[msgspec.Raw] = []
    kwargs: dict[str, msgspec.Raw] = {}


_envelope = msgspec.json.Decoder(_Envelope)
_encoder = msgspec.json.Encoder()
_any: _AnyDecoder = msgspec.json.Decoder()


def _decoder(hint: Any) -> _AnyDecoder:
    if hint is Any or hint is inspect.Parameter.empty:
        return _any
    try:
        return msgspec.json.Decoder(hint)
    except TypeError:  # a type msgspec cannot decode to: the value stays plain JSON
        return _any


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable forward refs etc.: fall back to Any
        return {}


class PayloadCodec:
    """Encodes calls of ``fn`` and its results; ``name`` labels errors."""

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn = fn
        self.name = name

    @cached_property
    def _signature(
        self,
    ) -> tuple[list[_AnyDecoder], _AnyDecoder, dict[str, _AnyDecoder], _AnyDecoder]:
        """Decoders for: positional parameters, extra positionals, keywords, extra keywords."""
        hints = _hints(self.fn)
        try:
            params = list(inspect.signature(self.fn).parameters.values())
        except (TypeError, ValueError):  # builtins and the like have no signature
            params = []
        positional: list[_AnyDecoder] = []
        keyword: dict[str, _AnyDecoder] = {}
        var_positional = var_keyword = _any
        kinds = inspect.Parameter
        for p in params:
            decoder = _decoder(hints.get(p.name, p.annotation))
            if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD):
                positional.append(decoder)
            if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY):
                keyword[p.name] = decoder
            if p.kind is kinds.VAR_POSITIONAL:
                var_positional = decoder
            if p.kind is kinds.VAR_KEYWORD:
                var_keyword = decoder
        return positional, var_positional, keyword, var_keyword

    @cached_property
    def _result(self) -> _AnyDecoder:
        return _decoder(_hints(self.fn).get("return", Any))

    def encode_args(self, args: Sequence[object], kwargs: Mapping[str, object]) -> bytes:
        """The task payload for ``fn(*args, **kwargs)``."""
        try:
            return _encoder.encode({"args": list(args), "kwargs": dict(kwargs)})
        except (msgspec.EncodeError, TypeError, OverflowError) as e:
            raise ValidationError(
                f"arguments of task {self.name!r} cannot be encoded as JSON: {e}"
            ) from e

    def decode_args(self, payload: bytes) -> tuple[list[Any], dict[str, Any]]:
        """``(args, kwargs)`` for calling ``fn``, each decoded to its parameter's type."""
        positional, var_positional, keyword, var_keyword = self._signature
        try:
            envelope = _envelope.decode(payload)
            args = [
                (positional[i] if i < len(positional) else var_positional).decode(raw)
                for i, raw in enumerate(envelope.args)
            ]
            kwargs = {
                key: keyword.get(key, var_keyword).decode(raw)
                for key, raw in envelope.kwargs.items()
            }
        except msgspec.DecodeError as e:  # ValidationError (a wrong type) is a DecodeError
            raise ValidationError(f"payload of task {self.name!r} does not fit: {e}") from e
        return args, kwargs

    def encode_result(self, value: object) -> bytes:
        try:
            return _encoder.encode(value)
        except (msgspec.EncodeError, TypeError, OverflowError) as e:
            raise ValidationError(
                f"result of task {self.name!r} ({type(value).__name__}) cannot be encoded as "
                f"JSON: {e}"
            ) from e

    def decode_result(self, data: bytes) -> Any:
        try:
            return self._result.decode(data)
        except msgspec.DecodeError as e:
            raise ValidationError(f"result of task {self.name!r} does not fit: {e}") from e
