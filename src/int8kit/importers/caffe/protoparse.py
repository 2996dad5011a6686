"""A small proto2 parser: turns the text of a ``.proto`` file into a ``FileDescriptorProto``.

Building the descriptor at import time from our own ``caffe.proto`` avoids generated ``_pb2``
modules, which are tied to the protobuf major version that generated them (and to grpcio-tools).
It understands the subset that file uses: ``syntax``, ``package``, ``message`` and ``enum``
(nested too), ``optional``/``required``/``repeated`` fields of scalar, message or enum type with
``[default = ...]`` and ``[packed = true]`` options, and ``//`` and ``/* */`` comments.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

_F = descriptor_pb2.FieldDescriptorProto

_SCALARS = {
    "double": _F.TYPE_DOUBLE, "float": _F.TYPE_FLOAT, "int64": _F.TYPE_INT64,
    "uint64": _F.TYPE_UINT64, "int32": _F.TYPE_INT32, "fixed64": _F.TYPE_FIXED64,
    "fixed32": _F.TYPE_FIXED32, "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES, "uint32": _F.TYPE_UINT32, "sfixed32": _F.TYPE_SFIXED32,
    "sfixed64": _F.TYPE_SFIXED64, "sint32": _F.TYPE_SINT32, "sint64": _F.TYPE_SINT64,
}
_LABELS = {"optional": _F.LABEL_OPTIONAL, "required": _F.LABEL_REQUIRED,
           "repeated": _F.LABEL_REPEATED}
_TOKEN = re.compile(r'\s+|//[^\n]*|/\*.*?\*/|"(?:[^"\\]|\\.)*"|[A-Za-z_][\w.]*|[-+]?[\d.][\w.+-]*|.',
                    re.S)


class ProtoSyntaxError(ValueError):
    """The ``.proto`` text is outside the subset this parser understands."""


def _tokens(text: str) -> Iterator[tuple[str, int]]:
    line = 1
    for m in _TOKEN.finditer(text):
        tok = m.group(0)
        if not (tok.isspace() or tok.startswith("//") or tok.startswith("/*")):
            yield tok, line
        line += tok.count("\n")


class _Parser:
    def __init__(self, text: str, name: str):
        self.toks = list(_tokens(text))
        self.i = 0
        self.name = name
        # (descriptor field, scope of its declaration, type name as written), resolved at the end
        self.pending: list[tuple[descriptor_pb2.FieldDescriptorProto, str, str]] = []
        self.kinds: dict[str, int] = {}  # fully qualified type name -> TYPE_MESSAGE / TYPE_ENUM

    def peek(self) -> str:
        return self.toks[self.i][0] if self.i < len(self.toks) else ""

    def next(self) -> str:
        if self.i >= len(self.toks):
            raise ProtoSyntaxError(f"{self.name}: unexpected end of file")
        self.i += 1
        return self.toks[self.i - 1][0]

    def expect(self, tok: str) -> None:
        line = self.toks[min(self.i, len(self.toks) - 1)][1]
        got = self.next()
        if got != tok:
            raise ProtoSyntaxError(f"{self.name}:{line}: expected {tok!r}, found {got!r}")

    def parse(self) -> descriptor_pb2.FileDescriptorProto:
        fdp = descriptor_pb2.FileDescriptorProto(name=self.name, syntax="proto2")
        while self.peek():
            tok = self.next()
            if tok == "syntax":
                self.expect("=")
                if self.next().strip('"') != "proto2":
                    raise ProtoSyntaxError(f"{self.name}: only proto2 is supported")
                self.expect(";")
            elif tok == "package":
                fdp.package = self.next()
                self.expect(";")
            elif tok == "message":
                self._message(fdp.message_type.add(), "." + fdp.package)
            elif tok == "enum":
                self._enum(fdp.enum_type.add(), "." + fdp.package)
            else:
                raise ProtoSyntaxError(f"{self.name}: unexpected {tok!r} at top level")
        self._resolve()
        return fdp

    def _enum(self, edp: descriptor_pb2.EnumDescriptorProto, scope: str) -> None:
        edp.name = self.next()
        self.kinds[f"{scope}.{edp.name}"] = _F.TYPE_ENUM
        self.expect("{")
        while self.peek() != "}":
            value = edp.value.add(name=self.next())
            self.expect("=")
            value.number = int(self.next())
            self.expect(";")
        self.expect("}")

    def _message(self, mdp: descriptor_pb2.DescriptorProto, scope: str) -> None:
        mdp.name = self.next()
        full = f"{scope}.{mdp.name}"
        self.kinds[full] = _F.TYPE_MESSAGE
        self.expect("{")
        while self.peek() != "}":
            tok = self.next()
            if tok == "message":
                self._message(mdp.nested_type.add(), full)
            elif tok == "enum":
                self._enum(mdp.enum_type.add(), full)
            elif tok in _LABELS:
                self._field(mdp.field.add(label=_LABELS[tok]), full)
            else:
                raise ProtoSyntaxError(f"{self.name}: unexpected {tok!r} in message {mdp.name}")
        self.expect("}")

    def _field(self, fd: descriptor_pb2.FieldDescriptorProto, scope: str) -> None:
        type_name = self.next()
        fd.name = self.next()
        fd.json_name = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), fd.name)
        self.expect("=")
        fd.number = int(self.next())
        if self.peek() == "[":
            self.next()
            while True:
                key = self.next()
                self.expect("=")
                value = self.next()
                if key == "default":
                    fd.default_value = value[1:-1] if value.startswith('"') else value
                elif key == "packed":
                    fd.options.packed = value == "true"
                else:
                    raise ProtoSyntaxError(f"{self.name}: unsupported field option {key!r}")
                if self.next() == "]":
                    break
        self.expect(";")
        if type_name in _SCALARS:
            fd.type = _SCALARS[type_name]
        else:
            self.pending.append((fd, scope, type_name))

    def _resolve(self) -> None:
        """Resolve message/enum type names the way protoc does: innermost scope outwards."""
        for fd, scope, written in self.pending:
            parts = scope.split(".")
            for n in range(len(parts), 0, -1):
                candidate = ".".join(parts[:n] + [written])
                if candidate in self.kinds:
                    fd.type_name = candidate
                    fd.type = self.kinds[candidate]
                    break
            else:
                raise ProtoSyntaxError(f"{self.name}: unknown type {written!r} in {scope[1:]}")


def parse_proto(text: str, name: str) -> descriptor_pb2.FileDescriptorProto:
    """Parse proto2 ``text`` (file ``name``) into a ``FileDescriptorProto``."""
    return _Parser(text, name).parse()


class ProtoFile:
    """The message and enum types of one ``.proto`` file, built in a private descriptor pool (so two
    files may use the same message names without clashing with each other or with generated code)."""

    def __init__(self, path: Path, name: str) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        self.file = parse_proto(path.read_text(encoding="utf-8"), name)
        self.pool.AddSerializedFile(self.file.SerializeToString())

    def message(self, name: str) -> type[Message]:
        """The message class for ``name`` (e.g. ``"LayerParameter"``)."""
        desc = self.pool.FindMessageTypeByName(f"{self.file.package}.{name}")
        if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
            return message_factory.GetMessageClass(desc)
        return message_factory.MessageFactory(self.pool).GetPrototype(desc)  # pragma: no cover

    def enum_value(self, enum: str, value: str) -> int:
        """The number of ``value`` in enum type ``enum``."""
        return self.pool.FindEnumTypeByName(f"{self.file.package}.{enum}").values_by_name[value].number
