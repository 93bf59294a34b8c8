"""The SOQL subset stagemap sends: parser, type checks against the schema, and evaluation."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from salesforce_emulator.clock import fmt_datetime, parse_datetime
from salesforce_emulator.ids import normalize
from salesforce_emulator.schema import ID_TYPES, NUMBER_TYPES, STRING_TYPES, SObjectDef

Record = dict[str, Any]
Predicate = Callable[[Record], bool]

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>'(?:\\.|[^'\\])*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})(?![\dT])
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<op>!=|<=|>=|=|<|>)
  | (?P<punct>[(),])
""", re.VERBOSE)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "'": "'", '"': '"',
            "\\": "\\", "_": "\\_", "%": "\\%"}
KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC",
            "DESC", "NULLS", "FIRST", "LAST", "LIMIT", "OFFSET", "TRUE", "FALSE", "NULL",
            "COUNT"}
MAX_OFFSET = 2000


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Token:
    kind: str
    text: str
    pos: int

    @property
    def keyword(self) -> str | None:
        upper = self.text.upper()
        return upper if self.kind == "ident" and upper in KEYWORDS else None


@dataclass
class Literal:
    kind: str  # string, number, boolean, null, datetime, date
    value: Any
    pos: int = 0


@dataclass
class Query:
    text: str
    sobject: str
    fields: list[tuple[str, int]] = field(default_factory=list)
    count: bool = False
    where: tuple | None = None
    order: list[tuple[str, bool, bool, int]] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0


def _unescape(body: str, pos: int, text: str) -> str:
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if nxt not in _ESCAPES:
                raise SoqlError("MALFORMED_QUERY", _where(text, pos, "Invalid string literal "
                                                          f"'{body}'. Illegal character "
                                                          "sequence '\\" + nxt + "' in string "
                                                          "literal."))
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _where(text: str, pos: int, message: str) -> str:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"\n{text}\n{' ' * (column - 1)}^\nERROR at Row:{line}:Column:{column}\n{message}"


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            snippet = text[pos:pos + 1]
            if snippet == "'":
                raise SoqlError("MALFORMED_QUERY", _where(text, pos, "unterminated string "
                                                          "literal"))
            raise SoqlError("MALFORMED_QUERY", _where(text, pos, f"unexpected token: "
                                                      f"'{snippet}'"))
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(Token("eof", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def error(self, token: Token | None = None) -> SoqlError:
        token = token or self.tok
        shown = token.text if token.kind != "eof" else "<EOF>"
        return SoqlError("MALFORMED_QUERY", _where(self.text, token.pos,
                                                   f"unexpected token: '{shown}'"))

    def next(self) -> Token:
        token = self.tok
        self.i += 1
        return token

    def accept(self, keyword: str) -> bool:
        if self.tok.keyword == keyword:
            self.i += 1
            return True
        return False

    def expect(self, keyword: str) -> None:
        if not self.accept(keyword):
            raise self.error()

    def punct(self, ch: str) -> bool:
        if self.tok.kind == "punct" and self.tok.text == ch:
            self.i += 1
            return True
        return False

    def field_name(self) -> tuple[str, int]:
        token = self.tok
        if token.kind != "ident" or token.keyword:
            raise self.error()
        self.i += 1
        return token.text, token.pos

    def integer(self) -> int:
        token = self.next()
        if token.kind != "number" or not token.text.isdigit():
            raise self.error(token)
        return int(token.text)

    def parse(self) -> Query:
        self.expect("SELECT")
        query = Query(text=self.text, sobject="")
        if self.tok.keyword == "COUNT":
            self.i += 1
            if not (self.punct("(") and self.punct(")")):
                raise self.error()
            query.count = True
        else:
            query.fields.append(self.field_name())
            while self.punct(","):
                query.fields.append(self.field_name())
        self.expect("FROM")
        query.sobject = self.field_name()[0]
        if self.accept("WHERE"):
            query.where = self.condition()
        if self.accept("ORDER"):
            self.expect("BY")
            while True:
                name, pos = self.field_name()
                desc = self.accept("DESC")
                if not desc:
                    self.accept("ASC")
                nulls_first = not desc
                if self.accept("NULLS"):
                    if self.accept("FIRST"):
                        nulls_first = True
                    else:
                        self.expect("LAST")
                        nulls_first = False
                query.order.append((name, desc, nulls_first, pos))
                if not self.punct(","):
                    break
        if self.accept("LIMIT"):
            query.limit = self.integer()
        if self.accept("OFFSET"):
            query.offset = self.integer()
            if query.offset > MAX_OFFSET:
                raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE",
                                f"Maximum SOQL offset allowed is {MAX_OFFSET}")
        if self.tok.kind != "eof":
            raise self.error()
        return query

    def condition(self) -> tuple:
        # SOQL refuses AND and OR mixed at one level without parentheses.
        first = self.unary()
        parts, joiner = [first], None
        while self.tok.keyword in ("AND", "OR"):
            token = self.next()
            if joiner and token.keyword != joiner:
                raise self.error(token)
            joiner = token.keyword
            parts.append(self.unary())
        if joiner is None:
            return first
        return (joiner.lower(), parts)

    def unary(self) -> tuple:
        if self.accept("NOT"):
            return ("not", self.unary())
        if self.punct("("):
            inner = self.condition()
            if not self.punct(")"):
                raise self.error()
            return inner
        name, pos = self.field_name()
        token = self.tok
        if token.kind == "op":
            self.i += 1
            return ("cmp", name, pos, token.text, self.literal())
        negate = self.accept("NOT")
        if self.accept("IN"):
            if not self.punct("("):
                raise self.error()
            values = [self.literal()]
            while self.punct(","):
                values.append(self.literal())
            if not self.punct(")"):
                raise self.error()
            return ("in", name, pos, negate, values)
        if not negate and self.accept("LIKE"):
            return ("like", name, pos, self.literal())
        raise self.error()

    def literal(self) -> Literal:
        token = self.next()
        if token.kind == "string":
            return Literal("string", _unescape(token.text[1:-1], token.pos, self.text), token.pos)
        if token.kind == "number":
            number = float(token.text) if "." in token.text else int(token.text)
            return Literal("number", number, token.pos)
        if token.kind == "datetime":
            try:
                return Literal("datetime", fmt_datetime(parse_datetime(token.text)), token.pos)
            except ValueError:
                raise self.error(token) from None
        if token.kind == "date":
            return Literal("date", token.text, token.pos)
        if token.keyword in ("TRUE", "FALSE"):
            return Literal("boolean", token.keyword == "TRUE", token.pos)
        if token.keyword == "NULL":
            return Literal("null", None, token.pos)
        raise self.error(token)


def parse(text: str) -> Query:
    return _Parser(text).parse()


def _no_such_column(query: Query, obj: SObjectDef, name: str, pos: int) -> SoqlError:
    if "." in name:
        message = f"Didn't understand relationship '{name.split('.')[0]}' in field path."
    else:
        message = (f"No such column '{name}' on entity '{obj.name}'. If you are attempting "
                   "to use a custom field, be sure to append the '__c' after the custom field "
                   "name. Please reference your WSDL or the describe call for the appropriate "
                   "names.")
    return SoqlError("INVALID_FIELD", _where(query.text, pos, message))


def _type_class(type_: str) -> str:
    if type_ in STRING_TYPES:
        return "string"
    if type_ in ID_TYPES:
        return "id"
    if type_ in NUMBER_TYPES:
        return "number"
    return type_  # boolean, datetime, date


_EXPECTED = {"string": ("string", "string and should be enclosed in quotes"),
             "id": ("string", "id and should be enclosed in quotes"),
             "number": ("number", "number and should not be enclosed in quotes"),
             "boolean": ("boolean", "boolean and should not be enclosed in quotes"),
             "datetime": ("datetime", "dateTime and should not be enclosed in quotes"),
             "date": ("date", "date and should not be enclosed in quotes")}


class Compiler:
    def __init__(self, query: Query, obj: SObjectDef) -> None:
        self.query = query
        self.obj = obj

    def resolve(self, name: str, pos: int) -> tuple[str, str]:
        fdef = self.obj.field(name)
        if fdef is None:
            raise _no_such_column(self.query, self.obj, name, pos)
        return fdef.name, _type_class(fdef.type)

    def value(self, cls: str, fname: str, lit: Literal) -> Any:
        if lit.kind == "null":
            return None
        wanted, phrase = _EXPECTED[cls]
        if lit.kind != wanted:
            raise SoqlError("INVALID_FIELD", _where(
                self.query.text, lit.pos,
                f"value of filter criterion for field '{fname}' must be of type {phrase}"))
        if cls == "string":
            return lit.value.lower()
        if cls == "id":
            return normalize(lit.value)
        return lit.value

    def compile(self, node: tuple) -> Predicate:
        kind = node[0]
        if kind in ("and", "or"):
            parts = [self.compile(n) for n in node[1]]
            if kind == "and":
                return lambda r: all(p(r) for p in parts)
            return lambda r: any(p(r) for p in parts)
        if kind == "not":
            inner = self.compile(node[1])
            return lambda r: not inner(r)
        name, cls = self.resolve(node[1], node[2])
        lower = cls == "string"
        if kind == "like":
            if cls != "string":
                raise SoqlError("INVALID_FIELD", _where(
                    self.query.text, node[2],
                    f"invalid operator on {cls} field: LIKE on field '{name}'"))
            pattern = self.value(cls, name, node[3])
            rx = re.compile(_like_regex(pattern or ""), re.DOTALL)
            return lambda r: (v := r.get(name)) is not None and rx.fullmatch(v.lower()) is not None
        if kind == "in":
            values = {self.value(cls, name, lit) for lit in node[4]}
            if lower:
                hit: Predicate = lambda r: _lower(r.get(name)) in values  # noqa: E731
            else:
                hit = lambda r: r.get(name) in values  # noqa: E731
            if node[3]:
                return lambda r: not hit(r)
            return hit
        op, value = node[3], self.value(cls, name, node[4])
        if cls == "boolean" and op not in ("=", "!="):
            raise SoqlError("INVALID_FIELD", _where(self.query.text, node[2],
                                                    f"invalid operator on boolean field: {op}"))
        if value is None:
            if op == "=":
                return lambda r: r.get(name) is None
            if op == "!=":
                return lambda r: r.get(name) is not None
            return lambda r: False
        get: Callable[[Record], Any]
        if lower:
            get = lambda r: _lower(r.get(name))  # noqa: E731
        else:
            get = lambda r: r.get(name)  # noqa: E731
        if op == "=":
            return lambda r: get(r) == value
        if op == "!=":
            return lambda r: get(r) != value
        cmp = {"<": lambda a: a < value, "<=": lambda a: a <= value,
               ">": lambda a: a > value, ">=": lambda a: a >= value}[op]
        return lambda r: (v := get(r)) is not None and cmp(v)

    def fields(self) -> list[str]:
        names, seen = [], set()
        for raw, pos in self.query.fields:
            name, _ = self.resolve(raw, pos)
            if name in seen:
                raise SoqlError("MALFORMED_QUERY", _where(self.query.text, pos,
                                                          f"duplicate field selected: {name}"))
            seen.add(name)
            names.append(name)
        return names

    def sort(self, rows: list[Record]) -> list[Record]:
        keys = [(*self.resolve(name, pos), desc, nulls_first)
                for name, desc, nulls_first, pos in self.query.order]
        # Stable sorts from the last key to the first give a multi-key order with
        # per-key direction and null placement.
        for name, cls, desc, nulls_first in reversed(keys):
            nulls = [r for r in rows if r.get(name) is None]
            values = [r for r in rows if r.get(name) is not None]
            if cls == "string":
                values.sort(key=lambda r: r[name].lower(), reverse=desc)
            else:
                values.sort(key=lambda r: r[name], reverse=desc)
            rows = nulls + values if nulls_first else values + nulls
        return rows


def _lower(value: str | None) -> str | None:
    return None if value is None else value.lower()


def _like_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return "".join(out)


@dataclass
class Result:
    sobject: str
    fields: list[str]
    rows: list[Record]
    count_only: bool


def execute(query: Query, obj: SObjectDef, rows: list[Record]) -> Result:
    """Filter, order and slice rows; `rows` must already exclude what the caller hides."""
    compiler = Compiler(query, obj)
    fields = [] if query.count else compiler.fields()
    if query.where is not None:
        predicate = compiler.compile(query.where)
        rows = [r for r in rows if predicate(r)]
    elif query.order:
        rows = list(rows)
    if query.order:
        rows = compiler.sort(rows)
    if query.offset:
        rows = rows[query.offset:]
    if query.limit is not None:
        rows = rows[:query.limit]
    return Result(obj.name, fields, rows, query.count)
