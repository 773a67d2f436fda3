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
from collections.abc import Iterator
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
# Big bundles are read too: every form is matched at the positions of its keyword
# (found with str.find), never by a regex scanning the whole text per form, and a
# handler's definition is looked up only for the handler.

_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")


@dataclass
class Module:
    """What could be read from one module's text."""

    code: str  # stripped
    # name -> the text that defines it (a function, an expression, or a local name),
    # None when it cannot be followed (a re-export)
    exports: dict[str, str | None] = field(default_factory=dict)
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


def _words(code: str, word: str) -> Iterator[int]:
    """Where ``word`` stands as a whole word (not part of a longer name, not after a dot
    unless the dot belongs to ``module.``)."""
    n = len(word)
    i = code.find(word)
    while i >= 0:
        before = code[i - 1] if i else " "
        after = code[i + n] if i + n < len(code) else " "
        if before not in _WORD_CHARS and before != "." and after not in _WORD_CHARS:
            yield i
        i = code.find(word, i + 1)


_ESM_EXPORT = re.compile(r"export\s*[{*]|export\s+(?:default|const|let|var|function|async|class)\b")
_ESM_IMPORT = re.compile(r"import(?:\s+[\w$*{\"]|\s*[{*\"])|import\.meta\b")
_CJS_USE = {"module": re.compile(r"module\.exports\b"),
            "exports": re.compile(r"exports\s*[.\[]"),
            "require": re.compile(r"require\s*\(")}
_DECLARED_BEFORE = re.compile(r"(?:\b(?:const|let|var|function|class)\s+|[(,]\s*)$")


def _find_syntax(mod: Module) -> None:
    code = mod.code
    for word, rx in (("export", _ESM_EXPORT), ("import", _ESM_IMPORT)):
        for i in _words(code, word):
            m = rx.match(code, i)
            if m and (m.group(0).startswith("import.meta") or mod.depth_at(i) == 0):
                mod.esm.append(" ".join(m.group(0).split()))
    for word, rx in _CJS_USE.items():
        found = [i for i in _words(code, word) if rx.match(code, i) and mod.depth_at(i) == 0]
        if found and not _declared(code, word):
            mod.cjs.extend(" ".join(rx.match(code, i).group(0).split()) for i in found[:1])  # type: ignore[union-attr]


def _declared(code: str, name: str) -> bool:
    """Whether the module binds ``name`` itself (``const require = createRequire(...)``,
    a wrapper's ``(exports, module)`` parameters)."""
    return any(_DECLARED_BEFORE.search(code, max(0, i - 12), i) for i in _words(code, name))


_EXPORT_FN = re.compile(rf"export\s+((?:async\s+)?function\s*\*?\s*({_IDENT}))")
_EXPORT_CLASS = re.compile(rf"export\s+class\s+({_IDENT})")
_EXPORT_DECL = re.compile(r"export\s+(?:const|let|var)\s+")
_EXPORT_LIST = re.compile(r"export\s*\{([^}]*)\}(\s*from\b)?")
_EXPORT_STAR = re.compile(rf"export\s*\*\s*(?:as\s+({_IDENT})\s*)?from\b")
_EXPORT_DEFAULT = re.compile(r"export\s+default\s+")


def _find_esm_exports(mod: Module) -> None:
    code = mod.code
    for i in _words(code, "export"):
        if m := _EXPORT_FN.match(code, i):
            mod.exports[m.group(2)] = code[m.start(1):m.start(1) + 2000]
        elif m := _EXPORT_CLASS.match(code, i):
            mod.exports.setdefault(m.group(1), None)
        elif m := _EXPORT_DECL.match(code, i):
            _declarations(mod, m.end())
        elif m := _EXPORT_LIST.match(code, i):
            for part in _split_top(m.group(1)):
                words = part.split()
                if words:  # local [as exported]; a re-export is not followed
                    mod.exports.setdefault(words[-1].strip('"'), None if m.group(2) else words[0])
        elif m := _EXPORT_STAR.match(code, i):
            if m.group(1):
                mod.exports.setdefault(m.group(1), None)
            else:
                mod.unreadable.append("export * from")
        elif m := _EXPORT_DEFAULT.match(code, i):
            _default_export(mod, m.end())


def _declarations(mod: Module, start: int) -> None:
    """``export const a = ..., b = ...`` or ``export const { a, b } = ...``."""
    code = mod.code
    if code[start:start + 1] in ("{", "["):
        inner = _balanced(code, start) or ""
        for name in re.findall(rf"({_IDENT})\s*(?=[,}}\]]|$)", inner):
            mod.exports.setdefault(name, None)
        return
    for decl in _split_top(_statement(code, start)):
        name = _IDENT_RE.match(decl.strip())
        if name:
            mod.exports[name.group(0)] = decl.split("=", 1)[1] if "=" in decl else None


def _default_export(mod: Module, start: int) -> None:
    code = mod.code
    mod.exports.setdefault("default", None)
    if code.startswith("{", start):
        _object_keys(mod, start, "export default {...}")
        return
    ident = _IDENT_RE.match(code, start)
    if ident and ident.group(0) not in ("async", "function", "class"):
        obj = re.search(rf"\b(?:const|let|var)\s+{re.escape(ident.group(0))}\s*=\s*(?=\{{)",
                        code)
        if obj:
            _object_keys(mod, obj.end(), "export default {...}")
        else:
            mod.unreadable.append(f"export default {ident.group(0)}")


_CJS_ASSIGN = re.compile(rf"(?:module\.)?exports\.({_IDENT})\s*=(?![=>])")
_CJS_INDEX = re.compile(rf"(?:module\.)?exports\[\s*\"({_IDENT})\"\s*\]\s*=(?![=>])")
_CJS_WHOLE = re.compile(r"module\.exports\s*=(?![=>])\s*")
_DEFINE = re.compile(rf"Object\.defineProperty\(\s*(?:module\.)?exports\s*,\s*\"({_IDENT})\"")
_ESBUILD_EXPORT = re.compile(rf"__export\(\s*{_IDENT}\s*,\s*(?=\{{)")


def _find_cjs_exports(mod: Module) -> None:
    code = mod.code
    read_at = set()  # where exports / module.exports was understood
    for i in _words(code, "Object"):
        if m := _DEFINE.match(code, i):
            mod.exports.setdefault(m.group(1), None)
            read_at.add(code.find("exports", i))
    starts = sorted({*_words(code, "exports"), *_words(code, "module")})
    for i in starts:
        if m := _CJS_ASSIGN.match(code, i) or _CJS_INDEX.match(code, i):
            mod.exports[m.group(1)] = _statement(code, m.end())
        elif (m := _CJS_WHOLE.match(code, i)) and mod.depth_at(i) == 0:
            _whole_module(mod, m.end())
        elif code.startswith("exports", i) and i in read_at:
            continue
        elif code.startswith("exports", i) or code.startswith("module.exports", i):
            # passed on, aliased, set inside a block: more may be exported than is seen
            used = "module.exports" if code.startswith("module", i) else "exports"
            if mod.unreadable[-1:] != [f"{used} used another way"]:
                mod.unreadable.append(f"{used} used another way")
    # esbuild's CommonJS output: __export(target, { name: () => name, ... })
    for i in _words(code, "__export"):
        if m := _ESBUILD_EXPORT.match(code, i):
            _object_keys(mod, m.end(), "__export", getters=True)
    if "__exportStar" in code or "__reExport" in code or re.search(
            r"Object\.assign\(\s*(?:module\.)?exports\b", code):
        mod.unreadable.append("re-export")


def _whole_module(mod: Module, start: int) -> None:
    """``module.exports = <value>``."""
    code = mod.code
    if code.startswith("{", start):
        _object_keys(mod, start, "module.exports = {...}")
        return
    value = _statement(code, start).strip()
    if _IDENT_RE.fullmatch(value) and value not in ("require", "function", "async", "class"):
        obj = re.search(rf"\b(?:const|let|var)\s+{re.escape(value)}\s*=\s*(?=\{{)", code)
        if obj and (_balanced(code, obj.end()) or "").strip():
            _object_keys(mod, obj.end(), "module.exports = {...}")
            return
    if value.startswith("__toCommonJS("):
        return  # esbuild: the names come from its __export call
    shown = " ".join(value.split())[:40].replace('""', '"..."')  # strings were blanked
    mod.unreadable.append(f"module.exports = {shown}")


def _object_keys(mod: Module, start: int, form: str, *, getters: bool = False) -> None:
    inner = _balanced(mod.code, start)
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
            mod.exports.setdefault(keyed.group(1), value)
        elif method:
            mod.exports.setdefault(method.group(1), "function " + part[method.start(1):])
        elif _IDENT_RE.fullmatch(part):
            mod.exports.setdefault(part, part)


def _local(code: str, name: str) -> str | None:
    """The text of a top-level ``function name`` or ``const/let/var name =`` value,
    when ``name`` is a plain identifier."""
    if not _IDENT_RE.fullmatch(name):
        return None
    esc = re.escape(name)
    m = re.search(rf"\b(?:async\s+)?function\s*\*?\s*{esc}\s*(?=\()", code)
    if m:
        return code[m.start():m.start() + 2000]
    m = re.search(rf"\b(?:const|let|var)\s+{esc}\s*=(?![=>])", code)
    if m:
        return _statement(code, m.end())
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


def _statement(text: str, start: int = 0) -> str:
    """``text`` from ``start`` to the end of its statement (a ';' or a line end outside
    brackets, or a closing bracket that was opened before)."""
    depth = 0
    last = ""  # the last character that is not white space
    for j in range(start, len(text)):
        c = text[j]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return text[start:j]
        elif depth == 0 and (c == ";" or (c == "\n" and last and last not in "=,(+-*/&|?:")):
            return text[start:j]
        if not c.isspace():
            last = c
    return text[start:]


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
