"""Which files go into a zip: default secret/junk excludes, ``.lambdaignore``,
``exclude=``/``include=`` patterns (gitignore syntax via pathspec) and the
symlink policy.

A package is built from one or more *roots*: the item's source folder and the
staged ``node_modules``, each mapped to a prefix inside the zip.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from .errors import DodoLambdaError

# Never packed from the item's own files (the source folder, a layer's nodejs/)
# unless an include= pattern names them: credentials, keys, state that holds
# secrets, OS junk. Matched in any case (.ENV, Server.PEM). Not applied to npm's
# staged tree, whose packages read the .pem and .env.defaults files they ship.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".git",  # the folder, and a submodule's .git file
    ".env*",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".ssh/",
    ".aws/",
    ".docker/",
    ".npmrc",
    ".yarnrc.yml",
    ".netrc",
    ".git-credentials",
    ".pypirc",
    "*.p12",
    "*.pfx",
    "*.tfvars",
    "*.tfvars.json",
    "*.tfstate*",
    ".DS_Store",
    "/.lambdaignore",
    ".doit.db*",  # doit's state, when dodo.py sits in the function's folder
)
# pathspec's regex for DEFAULT_EXCLUDES, one alternative per pattern: a build with no
# patterns of its own then never imports pathspec (30-40 ms of CPU, most of a cold
# build's fixed cost). tests/test_shape.py checks that it matches as pathspec does.
_DEFAULT_SOURCE = "|".join((
    r"(?:^(?:.+/)?\.git(?:(?:/)|$))",
    r"(?:^(?:.+/)?\.env[^/]*(?:(?:/)|$))",
    r"(?:^(?:.+/)?[^/]*\.pem(?:(?:/)|$))",
    r"(?:^(?:.+/)?[^/]*\.key(?:(?:/)|$))",
    r"(?:^(?:.+/)?id_rsa[^/]*(?:(?:/)|$))",
    r"(?:^(?:.+/)?id_dsa[^/]*(?:(?:/)|$))",
    r"(?:^(?:.+/)?id_ecdsa[^/]*(?:(?:/)|$))",
    r"(?:^(?:.+/)?id_ed25519[^/]*(?:(?:/)|$))",
    r"(?:^(?:.+/)?\.ssh(?:/))",
    r"(?:^(?:.+/)?\.aws(?:/))",
    r"(?:^(?:.+/)?\.docker(?:/))",
    r"(?:^(?:.+/)?\.npmrc(?:(?:/)|$))",
    r"(?:^(?:.+/)?\.yarnrc\.yml(?:(?:/)|$))",
    r"(?:^(?:.+/)?\.netrc(?:(?:/)|$))",
    r"(?:^(?:.+/)?\.git\-credentials(?:(?:/)|$))",
    r"(?:^(?:.+/)?\.pypirc(?:(?:/)|$))",
    r"(?:^(?:.+/)?[^/]*\.p12(?:(?:/)|$))",
    r"(?:^(?:.+/)?[^/]*\.pfx(?:(?:/)|$))",
    r"(?:^(?:.+/)?[^/]*\.tfvars(?:(?:/)|$))",
    r"(?:^(?:.+/)?[^/]*\.tfvars\.json(?:(?:/)|$))",
    r"(?:^(?:.+/)?[^/]*\.tfstate[^/]*(?:(?:/)|$))",
    r"(?:^(?:.+/)?\.DS_Store(?:(?:/)|$))",
    r"(?:^\.lambdaignore(?:(?:/)|$))",
    r"(?:^(?:.+/)?\.doit\.db[^/]*(?:(?:/)|$))",
))
# A default-excluded file with one of these endings may be code someone meant to
# ship (.env.example.js): it is named in a warning, not only in the manifest.
CODE_SUFFIXES = (".js", ".mjs", ".cjs", ".json", ".ts", ".mts", ".cts")
IGNORE_FILE = ".lambdaignore"
# npm's own bookkeeping in node_modules: machine-specific and not needed to run.
_STAGED_JUNK = frozenset({".bin", ".package-lock.json", ".cache"})


@dataclass(frozen=True)
class Root:
    """A folder on disk packed under ``prefix`` inside the zip."""

    path: Path
    prefix: str = ""
    prune: frozenset[str] = frozenset()  # relative folder paths never walked
    staged: bool = False  # npm's node_modules: drop .bin and npm's own files


class Entry(NamedTuple):
    """One file as it will be packed (a tuple: thousands are made per walk)."""

    arcname: str
    path: str  # the file to read (a link's target for symlinks)
    size: int
    mtime_ns: int
    mode: int  # 0o644 or 0o755
    # the inode change time: an edit that keeps size and mtime (cp -p, tar x, rsync -t)
    # still moves it, as git's index knows
    ctime_ns: int = 0
    problem: str | None = None


def zip_mode(st_mode: int) -> int:
    """The mode a file gets in the zip: 0755 with any execute bit, else 0644."""
    return 0o755 if st_mode & 0o111 else 0o644


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def walk(root: Root, who: str = "", stats: bool = True) -> Iterator[Entry]:
    """Every file under ``root`` (pruned folders skipped), symlinks resolved, in
    zip-path order: a tree can be packed as it is walked, never held whole.
    Without ``stats`` a file's size is -1 and its mode and times 0 (the zip writer
    learns them from the open file, off the walking thread).

    A link that is broken, leaves the root or loops is yielded with a
    ``problem``; selection decides whether that matters (an excluded broken
    link does not).
    """
    top = os.path.realpath(root.path)
    if os.path.isdir(top):
        yield from _walk_dir(root, top, top, "", who, (), stats)


def _order(e: os.DirEntry[str]) -> str:
    """A folder sorts as ``name/``: depth first in this order gives the paths sorted
    as strings (``a-b`` before ``a/x``, as '-' < '/')."""
    try:
        folder = e.is_dir() if e.is_symlink() else e.is_dir(follow_symlinks=False)
    except OSError:
        folder = False
    return e.name + "/" if folder else e.name


def _listing(folder: str, who: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            found = list(it)
    except OSError as exc:
        raise DodoLambdaError(f"{who}: cannot read {folder}: {exc.strerror}") from exc
    found.sort(key=_order)
    return iter(found)


def _walk_dir(root: Root, top: str, start: str, start_rel: str, who: str,
              chain: tuple[str, ...], stats: bool = True) -> Iterator[Entry]:
    """Walk ``start`` depth first in zip-path order; ``chain`` holds the real folders
    whose symlinks led here, so that a link back to any of them is reported as a
    loop instead of followed."""
    prune, staged, prefix = root.prune, root.staged, root.prefix
    stack: list[tuple[Iterator[os.DirEntry[str]], str, str]] = [
        (_listing(start, who), start_rel, start)]
    while stack:
        entries, rel, folder = stack[-1]
        for e in entries:
            name = e.name
            relname = rel + name
            if staged and name in _STAGED_JUNK and (rel == "" or rel.endswith("node_modules/")):
                continue
            if not relname.isascii() and not _utf8(relname):
                yield _not_utf8(root, e.path, relname)
            elif e.is_symlink():
                yield from _link(root, top, folder, e.path, relname, who, chain)
            elif e.is_dir(follow_symlinks=False):
                if relname not in prune:
                    stack.append((_listing(e.path, who), relname + "/", e.path))
                    break  # its files come next; this folder's iterator resumes after
            elif not e.is_file(follow_symlinks=False):
                continue
            elif stats:
                st = e.stat(follow_symlinks=False)
                yield Entry(prefix + relname, e.path, st.st_size, st.st_mtime_ns,
                            zip_mode(st.st_mode), st.st_ctime_ns)
            else:
                yield Entry(prefix + relname, e.path, -1, 0, 0)
        else:
            stack.pop()


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir gave undecodable bytes as surrogates
        return False
    return True


def _not_utf8(root: Root, path: str, relname: str) -> Entry:
    shown = os.fsencode(os.path.join(str(root.path), relname))
    # the zip path shown to patterns: the bad bytes as U+FFFD ('?' in a pattern matches)
    readable = relname.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return Entry(root.prefix + readable, path, 0, 0, 0o644, problem=(
        f"file name {shown!r} is not valid UTF-8, which zip paths in Lambda must be;"
        " rename it, or add a pattern for it to .lambdaignore"))


def _link(root: Root, top: str, folder: str, path: str, relname: str,
          who: str, chain: tuple[str, ...]) -> Iterator[Entry]:
    arcname = root.prefix + relname
    target = os.path.realpath(path)
    shown = os.path.join(str(root.path), relname)

    def bad(problem: str) -> Entry:
        return Entry(arcname, path, 0, 0, 0o644, problem=f"symlink {shown} {problem}")

    try:
        st = os.stat(target)
    except OSError:
        yield bad(f"is broken (points to {os.readlink(path)}); remove it or add it to"
                  " .lambdaignore")
        return
    if not _inside(target, top):
        yield bad(f"points outside {root.path} (to {target}); replace it with a copy or"
                  " add it to .lambdaignore")
    elif stat.S_ISDIR(st.st_mode):
        here = os.path.realpath(folder)
        if any(_inside(f, target) for f in (here, *chain)):
            yield bad(f"makes a loop (points to {target}); remove it or add it to"
                      " .lambdaignore")
        else:
            yield from _walk_dir(root, top, target, relname + "/", who, (*chain, here))
    elif stat.S_ISREG(st.st_mode):
        yield Entry(arcname, target, st.st_size, st.st_mtime_ns, zip_mode(st.st_mode),
                    st.st_ctime_ns)


@dataclass(frozen=True)
class Patterns:
    """The selection rules, as plain data (part of the package's inputs)."""

    excludes: tuple[str, ...]  # .lambdaignore and exclude=: every file, case as written
    includes: tuple[str, ...]  # include=: wins over every exclude
    defaults: tuple[str, ...] = DEFAULT_EXCLUDES  # the item's own files only, any case
    staged: tuple[str, ...] = ()  # zip path prefixes of npm's tree (no defaults there)
    # where each line of excludes, then includes, comes from: for error messages
    origins: tuple[str, ...] = field(default=(), compare=False, repr=False)
    # the regexes of excludes, includes and defaults (``Matcher.sources``), when a
    # previous build compiled the same patterns: an edit then never imports pathspec
    sources: Sources | None = field(default=None, compare=False, repr=False)

    def matcher(self, who: str = "") -> Matcher:
        return Matcher(self, who)


# a combined regex per pattern list: "" matches nothing, None needs pathspec itself
Sources = tuple[str | None, str | None, str | None]


class Matcher:
    """Decides per zip path: include= wins over every exclude; the default
    excludes apply outside npm's staged tree only."""

    def __init__(self, patterns: Patterns, who: str = "") -> None:
        known = patterns.sources
        try:
            excludes = known[0] if known else _source(patterns.excludes)
            includes = known[1] if known else _source(patterns.includes)
            self.ignore = _matcher(excludes, patterns.excludes)
            self.keep = _matcher(includes, patterns.includes) if patterns.includes else None
        except (ValueError, re.error) as exc:
            raise DodoLambdaError(_bad_pattern(patterns, who)) from exc
        defaults = known[2] if known else _source(patterns.defaults, ignore_case=True)
        self.default = _matcher(defaults, patterns.defaults, ignore_case=True)
        self.staged = patterns.staged
        self.sources: Sources = (excludes, includes, defaults)

    def own(self, arcname: str) -> bool:
        """True for the item's own files (not npm's staged tree)."""
        return not arcname.startswith(self.staged)

    def by_default(self, arcname: str) -> bool:
        """True when the default excludes leave this path out."""
        return self.own(arcname) and self.default(arcname)

    def selected(self, arcname: str) -> bool:
        if self.keep is not None and self.keep(arcname):
            return True
        return not self.ignore(arcname) and not self.by_default(arcname)


def _source(lines: Iterable[str], ignore_case: bool = False) -> str | None:
    """One regex for gitignore lines, or None when they need pathspec's own
    matching. Without negations ("!") any match decides, so one combined regex does
    the work of one search per pattern: half the time of pathspec's match_file over
    the benchmark's 7,300 paths (26 vs 53 ms). It relies on pathspec's regexes (hence
    its upper bound in pyproject.toml); tests/test_shape.py checks it matches exactly
    as pathspec does."""
    lines = tuple(lines)
    if not lines:
        return ""
    if ignore_case and lines == DEFAULT_EXCLUDES:
        return _DEFAULT_SOURCE
    import pathspec  # imported late: a no-op or an edit rebuild never needs it

    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    regexes = [p.regex for p in spec.patterns if p.include is not None]
    compiled = [r for r in regexes if isinstance(r, re.Pattern)]
    if any(p.include is False for p in spec.patterns) or len(compiled) != len(regexes):
        if ignore_case:  # only our own list is matched in any case, and it has no "!"
            raise ValueError("case-insensitive patterns cannot be negated")
        return None
    # pathspec names a group in every pattern; names must be unique in one regex
    return "|".join(f"(?:{r.pattern.replace('(?P<ps_d>', '(?:')})" for r in compiled)


def _matcher(source: str | None, lines: Iterable[str], ignore_case: bool = False
             ) -> Callable[[str], bool]:
    if source is None:
        import pathspec

        return pathspec.GitIgnoreSpec.from_lines(lines).match_file
    if not source:
        return lambda _path: False
    combined = re.compile(source, re.IGNORECASE if ignore_case else 0)
    return lambda path: combined.search(path) is not None


def _compile(lines: Iterable[str], ignore_case: bool = False) -> Callable[[str], bool]:
    """A matcher for gitignore lines (``ignore_case``: the default excludes, matched
    in any case)."""
    lines = tuple(lines)
    return _matcher(_source(lines, ignore_case), lines, ignore_case)


def with_sources(patterns: Patterns, who: str = "") -> Patterns:
    """``patterns`` with their regexes compiled (see ``Patterns.sources``)."""
    if patterns.sources is not None:
        return patterns
    return replace(patterns, sources=patterns.matcher(who).sources)


def default_pattern(arcname: str) -> str | None:
    """The first default exclude that matches ``arcname`` (any case), for messages."""
    return next((line for line in DEFAULT_EXCLUDES
                 if _compile([line], ignore_case=True)(arcname)), None)


def _bad_pattern(patterns: Patterns, who: str) -> str:
    """Which line does not compile, where it comes from, and what to do."""
    import pathspec

    lines = (*patterns.excludes, *patterns.includes)
    for i, line in enumerate(lines):
        try:
            pathspec.GitIgnoreSpec.from_lines([line])
        except (ValueError, re.error) as exc:
            origin = patterns.origins[i] if i < len(patterns.origins) else "a pattern"
            return (f"{who}: {origin}: {line!r} is not a valid gitignore pattern ({exc});"
                    " fix or remove it (escape a literal '!' or '[' with '\\')")
    return f"{who}: the file patterns do not compile; check .lambdaignore, exclude= and include="


def read_ignore_file(source: Path, who: str = "") -> tuple[str, ...]:
    """The lines of ``<source>/.lambdaignore`` (none when there is no such file).

    A FIFO, a folder or a device there is refused before it is read (reading a
    FIFO would wait forever); so is text that is not UTF-8."""
    path = source / IGNORE_FILE
    pre = f"{who}: " if who else ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise DodoLambdaError(f"{pre}cannot read {path} ({exc.strerror}); fix or remove it"
                              ) from exc
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DodoLambdaError(f"{pre}{path} is not a regular file; make it a text file of"
                                  " patterns or remove it")
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DodoLambdaError(f"{pre}{path} line {line} is not valid UTF-8; save the file as"
                              " UTF-8") from exc
    return tuple(line.rstrip("\r") for line in text.split("\n"))


def patterns_for(source: Path, exclude: Iterable[str], include: Iterable[str],
                 extra_excludes: Iterable[str] = (), staged: Iterable[str] = (),
                 who: str = "") -> Patterns:
    """.lambdaignore, then exclude=; include= re-includes; the default excludes
    apply to every path not under a ``staged`` prefix (npm's tree)."""
    extra, ignore = tuple(extra_excludes), read_ignore_file(source, who)
    exclude, include = tuple(exclude), tuple(include)
    lines = (*extra, *ignore, *exclude)
    origins = (*["dodo_lambda's own excludes"] * len(extra),
               *[f"{source / IGNORE_FILE} line {i}" for i in range(1, len(ignore) + 1)],
               *["exclude="] * len(exclude), *["include="] * len(include))
    return Patterns(lines, include, DEFAULT_EXCLUDES, tuple(staged), origins)


def walk_roots(roots: Iterable[Root], who: str) -> list[Entry]:
    """Every file under the roots."""
    return [e for root in roots for e in walk(root, who)]


class Selection(NamedTuple):
    """What goes in the zip, and what the default excludes changed."""

    entries: list[Entry]  # to pack, sorted by zip path
    dropped: list[str]  # own files the defaults left out (a folder as "dir/"), sorted
    restored: list[str]  # default-excluded files that include= brought back, sorted


def select(entries: Iterable[Entry], patterns: Patterns, who: str,
           roots: Iterable[Root] = ()) -> list[Entry]:
    """The walked files to pack, sorted by zip path (see ``choose``)."""
    return choose(entries, patterns, who, roots).entries


def choose(entries: Iterable[Entry], patterns: Patterns, who: str,
           roots: Iterable[Root] = ()) -> Selection:
    """The walked files to pack, sorted by zip path, and the files the default
    excludes left out or include= brought back. Raises for a selected bad symlink
    or two files landing on the same zip path.

    ``roots`` (those the entries were walked from) let a symlink among the item's
    own files be judged by its target too: ``config.txt -> .env`` stays out.
    """
    matcher = patterns.matcher(who)
    keep, ignore, by_default = matcher.keep, matcher.ignore, matcher.by_default
    own_roots = [(r.prefix, os.path.realpath(r.path)) for r in roots if not r.staged]
    chosen: dict[str, Entry] = {}
    dropped: list[str] = []
    restored: list[str] = []
    for entry in entries:
        name = entry.arcname
        kept = keep is not None and keep(name)
        if not kept and ignore(name):
            continue
        if matcher.own(name) and (by_default(name) or _links_to_default(entry, own_roots,
                                                                        by_default)):
            if kept:
                restored.append(name)
            else:
                dropped.append(name)
                continue
        if entry.problem:
            raise DodoLambdaError(f"{who}: {entry.problem}")
        if name in chosen:
            raise DodoLambdaError(
                f"{who}: {name} comes from both {chosen[name].path} and"
                f" {entry.path}; exclude one of them"
            )
        chosen[name] = entry
    return Selection([chosen[name] for name in sorted(chosen)],
                     _folders(dropped, by_default), sorted(restored))


def _links_to_default(entry: Entry, own_roots: list[tuple[str, str]],
                      by_default: Callable[[str], bool]) -> bool:
    """True when ``entry`` was reached through a symlink whose target (a file, or
    a folder on the way) is one the default excludes leave out."""
    for prefix, top in own_roots:
        if not entry.arcname.startswith(prefix):
            continue
        rel = entry.arcname[len(prefix):]
        if entry.problem or entry.path == os.path.join(top, rel):
            return False  # not through a link (or a bad link, reported as such)
        target = os.path.relpath(entry.path, top)
        return not target.startswith("..") and by_default(prefix + target.replace(os.sep, "/"))
    return False


def _folders(dropped: list[str], by_default: Callable[[str], bool]) -> list[str]:
    """Dropped paths, a file inside an excluded folder shown as that folder
    (``.git/``, ``keys/.ssh/``) rather than file by file."""
    out = set()
    for name in dropped:
        parts = name.split("/")
        shown = name
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i]) + "/"
            if by_default(folder):
                shown = folder
                break
        out.add(shown)
    return sorted(out)


def folder_clash(entries: list[Entry], prefixes: Iterable[str],
                 occupied: Iterable[str] = ()) -> str | None:
    """A file whose zip path is also a folder that other entries go into (a file
    named ``node_modules`` beside the staged dependencies): such a zip cannot be
    extracted. ``prefixes`` are the roots' zip prefixes; ``occupied`` those of the
    entries not in ``entries`` (a staged tree packed as one block)."""
    folders: set[str] = set()
    for prefix in prefixes:
        parts = prefix.strip("/").split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts) + 1) if parts[0])
    occupied = tuple(occupied)
    for e in entries:
        if e.arcname in folders and (
                any(p.startswith(e.arcname + "/") for p in occupied)
                or any(x.arcname.startswith(e.arcname + "/") for x in entries)):
            return (f"{e.path} is a file, but {e.arcname}/ is a folder in the package (it holds"
                    f" the installed dependencies); rename or exclude the file {e.arcname}")
    return None


def stream_staged(root: Root, patterns: Patterns, who: str) -> Iterator[Entry]:
    """The files of npm's staged tree to pack, in zip order, as the walk finds them:
    ``choose`` for a tree where the default excludes do not apply and no two files
    share a zip path, without holding the tree."""
    matcher = patterns.matcher(who)
    keep, ignore = matcher.keep, matcher.ignore
    picks = bool(patterns.excludes)  # else every file of the tree goes in
    for entry in walk(root, who, stats=False):
        if picks and not (keep is not None and keep(entry.arcname)) and ignore(entry.arcname):
            continue
        if entry.problem:
            raise DodoLambdaError(f"{who}: {entry.problem}")
        yield entry
