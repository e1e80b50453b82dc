"""What a delta-compressed subscription receives (PROTOCOL.md §4.5).

A subscription that negotiated ``delta: "fossil"`` gets each publication in
one of two forms, built here once per publication (never per subscriber):

* **full**: the publication as it is, ``delta`` false. On JSON connections
  its data travels as a JSON *string* holding the payload's text (the SDK
  ``JSON.parse``s it and keeps its UTF-8 bytes as the base of the next
  delta); on Protobuf the full form is the ordinary publication.
* **delta**: ``data`` is the fossil delta from the previous publication's
  payload to this one's, ``delta`` true (as a JSON string on JSON
  connections). Only when that delta is shorter than the payload; otherwise
  the delta form is the full one.

:class:`DeltaForms` holds the forms of one publication and makes each at
most once; :func:`delta_chain` turns recovered publications into the chain
a subscribe reply carries (the first full, each next one a delta from its
predecessor).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Final

from rtcore.protocol._json_decode import check_json_text
from rtcore.protocol.errors import InappropriateProtocol
from rtcore.protocol.fossil import create_delta
from rtcore.protocol.types import Publication


__all__ = ["FOSSIL", "DeltaForms", "delta_chain", "json_string"]

#: The only delta type there is.
FOSSIL: Final = "fossil"

_quote: Final = json.encoder.encode_basestring_ascii


def json_string(data: bytes) -> bytes:
    """``data`` (a JSON text) as a JSON string value, for a delta subscriber on JSON.

    Raises:
        InappropriateProtocol: ``data`` is not valid JSON (a JSON client
            could not parse it; the subscriber is disconnected with 3506).
    """
    try:
        text = data.decode("utf-8")
        check_json_text(text)
    except (ValueError, RecursionError) as exc:
        raise InappropriateProtocol(
            f"data: payload is not valid JSON and cannot be sent to a JSON client ({exc})"
        ) from None
    return _quote(text).encode("ascii")


def _with_data(pub: Publication, data: bytes, delta: bool) -> Publication:
    return dataclasses.replace(pub, data=data, delta=delta)


class DeltaForms:
    """The full and delta forms of one publication, made on first use.

    Args:
        pub: the publication.
        prev_data: the payload of the channel's previous publication (the
            base of the delta), or None when there is none to diff against;
            then the delta form is the full one.
    """

    __slots__ = ("pub", "prev_data", "_patch", "_json_full", "_json_delta", "_binary_delta")

    def __init__(self, pub: Publication, prev_data: bytes | None) -> None:
        self.pub = pub
        self.prev_data = prev_data
        self._patch: bytes | None = None
        self._json_full: Publication | None = None
        self._json_delta: Publication | None = None
        self._binary_delta: Publication | None = None

    def _delta(self) -> bytes | None:
        """The fossil delta when it is shorter than the payload, else None."""
        if self.prev_data is None:
            return None
        if self._patch is None:
            self._patch = create_delta(self.prev_data, self.pub.data)
        return self._patch if len(self._patch) < len(self.pub.data) else None

    def full(self, json_codec: bool) -> Publication:
        """The full form: the publication itself, on JSON with its data as a string.

        A map key's removal has no payload: it goes as it is in both forms.
        """
        if not json_codec or self.pub.removed:
            return self.pub
        if self._json_full is None:
            self._json_full = _with_data(self.pub, json_string(self.pub.data), False)
        return self._json_full

    def delta(self, json_codec: bool) -> Publication:
        """The delta form (the full form when no shorter delta exists)."""
        if self.pub.removed:
            return self.pub
        patch = self._delta()
        if patch is None:
            return self.full(json_codec)
        if json_codec:
            if self._json_delta is None:
                # A fossil delta of a UTF-8 text is UTF-8 (rtcore.protocol.fossil).
                self.full(True)  # the payload must be JSON for a JSON client at all
                text = _quote(patch.decode("utf-8")).encode("ascii")
                self._json_delta = _with_data(self.pub, text, True)
            return self._json_delta
        if self._binary_delta is None:
            self._binary_delta = _with_data(self.pub, patch, True)
        return self._binary_delta


def delta_chain(pubs: list[Publication], json_codec: bool) -> list[Publication]:
    """Recovered publications as a delta subscriber gets them in its subscribe reply.

    The first goes in full, each next one as a delta from the one before it
    (or in full when the delta would not be shorter).

    Raises:
        InappropriateProtocol: a payload is not valid JSON on a JSON connection.
    """
    out = []
    prev: bytes | None = None
    for pub in pubs:
        forms = DeltaForms(pub, prev)
        out.append(forms.delta(json_codec) if prev is not None else forms.full(json_codec))
        prev = pub.data
    return out
