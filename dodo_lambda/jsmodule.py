"""Read a JavaScript module without running it: which names it exports, whether
it uses ES module or CommonJS syntax at its top level, and how many parameters
an exported function declares.

Comments, strings, template literals and regular expressions are blanked first
(a string whose text is a plain identifier is kept, for ``exports["name"]``), so
that matching the usual export forms is not fooled by text. This is a reader
of common forms, not a parser: what it cannot read it reports as unreadable and
the caller warns instead of refusing.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate

_IDENT = r"[A-Za-z_$][\w$]*"
_IDENT_RE = re.compile(_IDENT)
# after one of these, '/' starts a regular expression rather than a division
_REGEX_AFTER = set("(,=:[!&|?{};+-*%<>~^") | {""}
_REGEX_KEYWORDS = ("return", "typeof", "case", "do", "else", "in", "of", "new", "delete",
                   "void", "throw", "yield", "await", "instanceof")


def strip(text: str) -> str:
    """``text`` with comments removed and strings, templates and regexes blanked
    (``"name"`` kept when the string is a plain identifier)."""
    out: list[str] = []
    end = _code(text, 0, out, nested=False)
    out.append(text[end:])
    return "".join(out)


_NEXT = re.compile(r"[/'\"`{}]")


def _code(text: str, i: int, out: list[str], *, nested: bool) -> int:
    """Copy code from ``i`` to ``out``; inside a template's ``${`` (``nested``) stop
    at its closing brace and return the index after it."""
    if not nested and text.startswith("#!"):
        i = text.find("\n")
        i = len(text) if i < 0 else i
    depth = 0
    n = len(text)
    while i < n:
        m = _NEXT.search(text, i)
        if m is None:
            out.append(text[i:])
            return n
        j = m.start()
        out.append(text[i:j])
        c = text[j]
        if c == "{":
            depth += 1
            out.append(c)
            i = j + 1
        elif c == "}":
            if nested and depth == 0:
                return j + 1
            depth -= 1
            out.append(c)
            i = j + 1
        elif c in "'\"":
            i = _string(text, j, out)
        elif c == "`":
            i = _template(text, j)
            out.append('""')
        elif text.startswith("//", j):
            k = text.find("\n", j)
            i = n if k < 0 else k
        elif text.startswith("/*", j):
            k = text.find("*/", j + 2)
            out.append(" ")
            i = n if k < 0 else k + 2
        elif _regex_may_start(out):
            i = _regex(text, j)
            out.append("0")
        else:
            out.append("/")
            i = j + 1
    return n


def _regex_may_start(out: list[str]) -> bool:
    tail = ""
    for chunk in reversed(out):
        tail = chunk.rstrip() + tail if not tail else chunk + tail
        if tail.strip():
            break
    tail = tail.rstrip()
    if tail.endswith(_REGEX_KEYWORDS):
        word = re.search(r"[\w$]+$", tail)
        return word is not None and word.group(0) in _REGEX_KEYWORDS
    return tail[-1:] in _REGEX_AFTER or tail.endswith("}")


def _string(text: str, i: int, out: list[str]) -> int:
    quote = text[i]
    j = i + 1
    n = len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == quote or c == "\n":
            break
        j += 1
    body = text[i + 1:j]
    out.append(f'"{body}"' if _IDENT_RE.fullmatch(body) else '""')
    return j + 1


def _template(text: str, i: int) -> int:
    j = i + 1
    n = len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
        elif c == "`":
            return j + 1
        elif c == "$" and text.startswith("${", j):
            j = _code(text, j + 2, [], nested=True)
        else:
            j += 1
    return n


def _regex(text: str, i: int) -> int:
    j = i + 1
    n = len(text)
    in_class = False
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "\n":
            return j  # not a regex after all; give up on this line
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "/":
            j += 1
            while j < n and (text[j].isalnum() or text[j] == "$"):
                j += 1
            return j
        j += 1
    return n


# -- what a stripped module says ------------------------------------------------------


@dataclass
class Module:
    """What could be read from one module's text."""

    code: str  # stripped
    exports: dict[str, str | None] = field(default_factory=dict)  # name -> definition text
    unreadable: list[str] = field(default_factory=list)  # forms that may export more
    esm: list[str] = field(default_factory=list)  # top-level ESM syntax seen
    cjs: list[str] = field(default_factory=list)  # top-level CommonJS use seen
    _braces: list[int] = field(default_factory=list, repr=False)
    _depths: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._braces = [m.start() for m in re.finditer(r"[{}]", self.code)]
        # the brace depth just after each brace
        self._depths = list(accumulate(1 if self.code[p] == "{" else -1 for p in self._braces))

    def depth_at(self, pos: int) -> int:
        """How many braces are open at ``pos`` (0: the module's top level)."""
        before = bisect_right(self._braces, pos - 1)
        return self._depths[before - 1] if before else 0


def read(text: str) -> Module:
    """Read a module's text (see the module docstring for what is understood)."""
    mod = Module(strip(text))
    _find_syntax(mod)
    _find_esm_exports(mod)
    _find_cjs_exports(mod)
    return mod


_ESM_SYNTAX = re.compile(
    r"(?<![\w$.])(?:export\s*[{*]|export\s+(?:default|const|let|var|function|async|class)\b"
    r"|import(?:\s+[\w$*{\"]|\s*[{*\"])|import\.meta\b)")
_CJS_SYNTAX = re.compile(
    r"(?<![\w$.])(?:module\.exports\b|exports\s*(?:\.|\[)|require\s*\()")


def _find_syntax(mod: Module) -> None:
    code = mod.code
    for m in _ESM_SYNTAX.finditer(code):
        if m.group(0).startswith("import.meta") or mod.depth_at(m.start()) == 0:
            mod.esm.append(" ".join(m.group(0).split()))
    declared = {name for name in ("require", "module", "exports") if re.search(
        rf"(?:\b(?:const|let|var|function|class)\s+{name}\b|[(,]\s*{name}\s*[,)])", code)}
    for m in _CJS_SYNTAX.finditer(code):
        word = re.match(r"[a-z]+", m.group(0))
        if word and word.group(0) not in declared and mod.depth_at(m.start()) == 0:
            mod.cjs.append(" ".join(m.group(0).split()))


def _find_esm_exports(mod: Module) -> None:
    code = mod.code
    for m in re.finditer(rf"\bexport\s+((?:async\s+)?function\s*\*?\s*({_IDENT}))", code):
        mod.exports[m.group(2)] = code[m.start(1):]
    for m in re.finditer(rf"\bexport\s+class\s+({_IDENT})", code):
        mod.exports.setdefault(m.group(1), None)
    for m in re.finditer(r"\bexport\s+(?:const|let|var)\s+", code):
        rest = code[m.end():]
        if rest[:1] in "{[":  # export const { a, b } = ...
            inner = _balanced(rest, 0)
            for name in re.findall(rf"({_IDENT})\s*(?=[,}}\]]|$)", inner or ""):
                mod.exports.setdefault(name, None)
            continue
        for decl in _split_top(_statement(rest)):
            name = _IDENT_RE.match(decl.strip())
            if name:
                value = decl.split("=", 1)[1] if "=" in decl else None
                mod.exports[name.group(0)] = value
    for m in re.finditer(r"\bexport\s*\{([^}]*)\}(\s*from\b)?", code):
        for part in _split_top(m.group(1)):
            words = part.split()
            if not words:
                continue
            local, exported = words[0], words[-1].strip('"')
            if m.group(2):
                mod.exports.setdefault(exported, None)  # re-exported: not read further
            else:
                mod.exports.setdefault(exported, _local(code, local))
    for m in re.finditer(rf"\bexport\s*\*\s*(?:as\s+({_IDENT})\s*)?from\b", code):
        if m.group(1):
            mod.exports.setdefault(m.group(1), None)
        else:
            mod.unreadable.append("export * from")
    for m in re.finditer(r"\bexport\s+default\s+", code):
        rest = code[m.end():]
        if rest.startswith("{"):
            _object_keys(mod, rest, "export default {...}")
        elif _IDENT_RE.match(rest) and not re.match(r"(?:async|function|class)\b", rest):
            ident = _IDENT_RE.match(rest).group(0)  # type: ignore[union-attr]
            obj = re.search(rf"\b(?:const|let|var)\s+{re.escape(ident)}\s*=\s*(?=\{{)", code)
            if obj:
                _object_keys(mod, code[obj.end():], "export default {...}")
            else:
                mod.unreadable.append(f"export default {ident}")


_CJS_ASSIGN = re.compile(rf"(?<![\w$.])(?:module\.)?exports\.({_IDENT})\s*=(?![=>])")
_CJS_INDEX = re.compile(rf"(?<![\w$.])(?:module\.)?exports\[\s*\"({_IDENT})\"\s*\]\s*=(?![=>])")


def _find_cjs_exports(mod: Module) -> None:
    code = mod.code
    for rx in (_CJS_ASSIGN, _CJS_INDEX):
        for m in rx.finditer(code):
            value = _statement(code[m.end():])
            mod.exports[m.group(1)] = _local(code, value.strip()) or value
    for m in re.finditer(rf"\bObject\.defineProperty\(\s*(?:module\.)?exports\s*,\s*\"({_IDENT})\"",
                         code):
        mod.exports.setdefault(m.group(1), None)
    # esbuild's CommonJS output: __export(target, { name: () => name, ... })
    for m in re.finditer(rf"\b__export\(\s*{_IDENT}\s*,\s*(?=\{{)", code):
        _object_keys(mod, code[m.end():], "__export", getters=True)
    for m in re.finditer(r"(?<![\w$.])module\.exports\s*=(?![=>])\s*", code):
        rest = code[m.end():]
        if rest.startswith("{"):
            _object_keys(mod, rest, "module.exports = {...}")
            continue
        if mod.depth_at(m.start()) > 0:
            continue  # inside a bundle's module wrapper: not this module's exports
        ident = _statement(rest).strip()
        if _IDENT_RE.fullmatch(ident) and ident not in ("require", "function", "async", "class"):
            obj = re.search(rf"\b(?:const|let|var)\s+{re.escape(ident)}\s*=\s*(?=\{{)", code)
            if obj and (_balanced(code, obj.end()) or "").strip():
                _object_keys(mod, code[obj.end():], "module.exports = {...}")
                continue
        if re.match(r"__toCommonJS\(", rest):
            continue  # esbuild: the names come from its __export call
        mod.unreadable.append("module.exports = " + " ".join(_statement(rest).split())[:40])
    if re.search(r"\b(?:Object\.assign\(\s*(?:module\.)?exports|__exportStar|__reExport)\b",
                 code):
        mod.unreadable.append("re-export")


def _object_keys(mod: Module, text: str, form: str, *, getters: bool = False) -> None:
    inner = _balanced(text, 0)
    if inner is None:
        mod.unreadable.append(form)
        return
    for part in _split_top(inner):
        part = part.strip()
        if not part:
            continue
        if part.startswith("...") or part.startswith("["):
            mod.unreadable.append(f"{form} with a spread or computed key")
            continue
        method = re.match(rf"(?:async\s+)?(?:[gs]et\s+)?\*?\s*\"?({_IDENT})\"?\s*(?=\()", part)
        keyed = re.match(rf"\"?({_IDENT})\"?\s*:\s*", part)
        if keyed:
            value = part[keyed.end():]
            if getters:  # name: () => local
                arrow = re.match(rf"\(\s*\)\s*=>\s*({_IDENT})\s*$", value)
                value = arrow.group(1) if arrow else value
            mod.exports.setdefault(keyed.group(1), _local(mod.code, value.strip()) or value)
        elif method:
            mod.exports.setdefault(method.group(1), "function " + part[method.start(1):])
        elif _IDENT_RE.fullmatch(part):
            mod.exports.setdefault(part, _local(mod.code, part))


def _local(code: str, name: str) -> str | None:
    """The text of a top-level ``function name`` or ``const/let/var name =`` value,
    when ``name`` is a plain identifier."""
    if not _IDENT_RE.fullmatch(name):
        return None
    esc = re.escape(name)
    m = re.search(rf"\b(?:async\s+)?function\s*\*?\s*{esc}\s*(?=\()", code)
    if m:
        return code[m.start():]
    m = re.search(rf"\b(?:const|let|var)\s+{esc}\s*=(?![=>])", code)
    if m:
        return _statement(code[m.end():])
    return None


def _balanced(text: str, i: int) -> str | None:
    """The text inside the bracket at ``text[i]`` up to its match, or None."""
    pairs = {"{": "}", "(": ")", "[": "]"}
    stack = []
    for j in range(i, len(text)):
        c = text[j]
        if c in pairs:
            stack.append(pairs[c])
        elif c in ")]}":
            if not stack or stack.pop() != c:
                return None
            if not stack:
                return text[i + 1:j]
    return None


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets."""
    parts, depth, start = [], 0, 0
    for j, c in enumerate(text):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:j])
            start = j + 1
    parts.append(text[start:])
    return parts


def _statement(text: str) -> str:
    """``text`` up to the end of its statement (a ';' or a line end outside brackets)."""
    depth = 0
    for j, c in enumerate(text):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return text[:j]
        elif depth == 0 and (c == ";" or (c == "\n" and text[:j].strip()
                                            and text[:j].rstrip()[-1] not in "=,(+-*/&|?:")):
            return text[:j]
    return text


# -- parameters of a function definition ----------------------------------------------


def parameter_count(definition: str | None, code: str = "", _hops: int = 0) -> int | None:
    """``function.length`` of the function that ``definition`` starts with: a
    ``function`` declaration or expression, an arrow function, or a name bound to
    one. None when it is something else (a call such as ``middy(handler)``)."""
    if definition is None:
        return None
    text = definition.lstrip()
    text = re.sub(r"^async\b\s*", "", text)
    m = re.match(rf"function\b\s*\*?\s*(?:{_IDENT})?\s*(?=\()", text)
    if m:
        params = _balanced(text, m.end())
        return None if params is None else _length(params)
    if text.startswith("("):
        params = _balanced(text, 0)
        if params is None or not text[len(params) + 2:].lstrip().startswith("=>"):
            return None
        return _length(params)
    m = re.match(rf"({_IDENT})\s*(=>)?", text)
    if m and m.group(2):
        return 1
    if m and _hops < 3 and text[m.end():].strip() in ("", ";"):
        return parameter_count(_local(code, m.group(1)), code, _hops + 1)
    return None


def _length(params: str) -> int:
    """How JavaScript counts a parameter list: up to the first default or rest."""
    count = 0
    for part in _split_top(params):
        part = part.strip()
        if not part:
            continue
        if part.startswith("...") or re.search(r"(?<![=!<>])=(?![=>])", _outer(part)):
            break
        count += 1
    return count


def _outer(text: str) -> str:
    """``text`` without what is inside its brackets (a default inside a destructuring
    pattern does not end the count)."""
    out, depth = [], 0
    for c in text:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            out.append(c)
    return "".join(out)
