"""Caffe's message classes, built at run time from the ``caffe.proto`` shipped beside this module.

No Caffe install, no ``protoc`` and no generated ``caffe_pb2.py``: the trimmed ``caffe.proto``
is parsed here into a ``FileDescriptorProto`` and turned into message classes by the
``protobuf`` package, in a private descriptor pool (so a ``caffe_pb2`` of a real Caffe install
imported in the same process cannot clash with it). Generated code carries a check against the
protobuf runtime version that made it; a descriptor built at run time works with any protobuf
from 4.21 on. To change the schema, edit ``caffe.proto``: :func:`messages` reads it again.

The parser reads the subset of proto2 that file uses (top-level ``message`` blocks of
``optional`` / ``repeated`` fields of scalar or message type, options ``default`` and
``packed``) and refuses anything else with the line it could not read. After editing the file,
compare with protoc (``pip install grpcio-tools``)::

    python -m grpc_tools.protoc -I src/senet/caffe --descriptor_set_out=caffe.pb caffe.proto

``FileDescriptorSet.FromString(open("caffe.pb", "rb").read()).file[0].message_type`` equals
``parse_proto(...).message_type`` once protoc's ``json_name`` fields are cleared.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["PROTO_PATH", "messages", "parse_proto"]

PROTO_PATH = Path(__file__).with_name("caffe.proto")

_TOKEN = re.compile(
    r"(?P<skip>\s+|//[^\n]*|/\*.*?\*/)"  # whitespace, comments
    r"|(?P<tok>\"[^\"]*\"|'[^']*'|[A-Za-z_][\w.]*"  # strings, names
    r"|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[{}\[\]=;,])",  # numbers, punctuation
    re.S,
)
_SCALARS = ("double", "float", "int64", "uint64", "int32", "uint32", "bool", "string", "bytes")


def _tokens(text: str) -> list[tuple[str, int]]:
    """(token, line) pairs without whitespace and comments."""
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise ValueError(f"caffe.proto line {line}: cannot read {text[pos : pos + 20]!r}")
        if m.group("tok"):
            out.append((m.group("tok"), text.count("\n", 0, pos) + 1))
        pos = m.end()
    return out


class _Reader:
    """Tokens of a .proto file, read one at a time, with errors that name the line."""

    def __init__(self, text: str, name: str) -> None:
        self.toks, self.name, self.pos = _tokens(text), name, 0

    def peek(self) -> str | None:
        return self.toks[self.pos][0] if self.pos < len(self.toks) else None

    def fail(self, message: str) -> ValueError:
        line = self.toks[min(self.pos, len(self.toks) - 1)][1] if self.toks else 1
        return ValueError(f"{self.name} line {line}: {message}")

    def take(self, *expected: str) -> str:
        tok = self.peek()
        if tok is None:
            raise self.fail("unexpected end of file")
        if expected and tok not in expected:
            raise self.fail(f"expected {' or '.join(map(repr, expected))}, found {tok!r}")
        self.pos += 1
        return tok


def parse_proto(text: str, name: str = "caffe.proto") -> Any:
    """A ``FileDescriptorProto`` for the proto2 subset described in the module docstring."""
    from google.protobuf import descriptor_pb2

    F = descriptor_pb2.FieldDescriptorProto
    r = _Reader(text, name)
    fdp = descriptor_pb2.FileDescriptorProto(name=name, syntax="proto2")
    for expected in (("syntax",), ("=",), ('"proto2"', "'proto2'"), (";",)):
        r.take(*expected)
    message_fields = []
    while r.peek() is not None:
        if r.take("package", "message") == "package":
            fdp.package = r.take()
            r.take(";")
            continue
        msg = fdp.message_type.add(name=r.take())
        r.take("{")
        while r.peek() != "}":
            label = r.take("optional", "repeated")
            ftype, fname = r.take(), r.take()
            r.take("=")
            field = msg.field.add(name=fname, number=int(r.take()))
            field.label = F.LABEL_REPEATED if label == "repeated" else F.LABEL_OPTIONAL
            if ftype in _SCALARS:
                field.type = getattr(F, f"TYPE_{ftype.upper()}")
            else:
                field.type = F.TYPE_MESSAGE
                message_fields.append((field, ftype))
            if r.peek() == "[":
                r.take("[")
                while True:
                    opt = r.take("default", "packed")
                    r.take("=")
                    value = r.take().strip("\"'")
                    if opt == "packed":
                        field.options.packed = value == "true"
                    elif field.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
                        field.default_value = repr(float(value))  # protoc's spelling: 1e-05
                    else:
                        field.default_value = value
                    if r.take(",", "]") == "]":
                        break
            r.take(";")
        r.take("}")
    for field, ftype in message_fields:
        field.type_name = f".{fdp.package}.{ftype}" if fdp.package else f".{ftype}"
    return fdp


@cache
def messages() -> dict[str, type]:
    """Message classes of ``caffe.proto`` by name (``"NetParameter"``, ``"BlobProto"``, ...)."""
    try:
        from google.protobuf import descriptor_pool, message_factory
    except ImportError as e:
        raise ValueError("reading Caffe models needs the protobuf package: pip install protobuf") from e
    fdp = parse_proto(PROTO_PATH.read_text(), "senet/caffe.proto")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is None:  # protobuf < 4.22
        get_class = message_factory.MessageFactory(pool).GetPrototype
    return {
        m.name: get_class(pool.FindMessageTypeByName(f"{fdp.package}.{m.name}")) for m in fdp.message_type
    }
