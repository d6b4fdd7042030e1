"""The server side of the microTVM Project API, wire-compatible with Apache TVM v0.8.0 to v0.18.0.

A template project's ``microtvm_api_server.py`` subclasses :class:`ProjectAPIHandler` and calls
``main(Handler())``. The client starts that script with ``--read-fd N --write-fd M`` and speaks
JSON-RPC 2.0 over the two pipes: one JSON document per line, replies formatted exactly as
Python's ``json.dumps`` does by default. The public names are TVM's
(``tvm.micro.project_api.server``), so a template written for TVM runs unchanged on this file.

This file depends on the Python standard library only and on nothing else in this package,
because a template may carry a copy of it and run under another interpreter (3.9+). It imports
only what ``python -c "import json"`` already loads, so a server starts almost as fast as a bare
interpreter; everything else (pathlib, traceback, logging, subprocess, select) is imported at
the point of use.

Wire behaviour kept on purpose (a peer may depend on it)
--------------------------------------------------------
- Request validation failures (not an object, ``jsonrpc`` not "2.0", bad method name, params not
  an object, id not a string/integer/null) get a -32600 reply with ``"id": null`` and the server
  then exits with status 0. A float id is rejected; ``true``/``false`` ids pass (Python's bool is
  an int). A line that is not JSON (or not UTF-8) gets no reply and the server exits with 0, as on
  EOF. JSON is read with Python's ``json`` module, so ``NaN``/``Infinity`` are accepted on input.
  The -32600 messages follow the one the spec quotes, ``request: want dict; got <repr>``:
  ``request["jsonrpc"]: want "2.0"; got ...``, ``request["method"]: want str; got ...``,
  ``request["method"]: should match regex ^[a-zA-Z0-9_]+$; got ...``,
  ``request["params"]: want dict; got <class '...'>`` (the type, not the value), and
  ``request["id"]: want str, number, null; got ...``: TVM's exact texts, checked against its
  server library.
- ``write_transport`` always replies ``"result": null``, whatever the handler returns (TVM's
  server discards the value; the spec's table says Arduino's integer byte count goes out, but
  TVM's own library never sends it).
- ``default_project_options()`` gives ``cmsis_path`` the default ``$CMSIS_PATH`` (read when it
  is called), as TVM's does; help texts are our own wording.
- The method-name check is ``re.match(r"^[a-zA-Z0-9_]+$")``, so a name followed by one trailing
  newline passes it and is then answered with -32601, the server staying alive.
- Missing parameters, extra parameters, and a non-object ``options`` for ``build``/``flash`` get
  -32602 with TVM's messages; only ``build`` and ``flash`` are type-checked.
- A request without ``"id"`` is executed and then answered with ``"id": null``, -32000,
  ``"calling method <m>"``: notifications were never supported, and the client sees an error.
- Typed errors cross the wire as -32000 with the class name as the message and
  ``{"traceback": ...}`` as data; any other exception is -32000 ``"calling method <m>"``.
- ``server_info_query`` replies with keys in ServerInfo order plus ``"protocol_version": 1`` when
  the handler gave none; ``model_library_format_path`` is passed through ("" stays "", null stays
  null, a Path becomes its string). ``open_transport`` replies ``{"timeouts": {...}}``;
  ``read_transport`` replies ``{"data": <base85>}``; ``write_transport`` returns whatever the
  handler returns (null, or a byte count).

Where we differ from TVM's server, and why
------------------------------------------
1. Method lookup: only the eight interface methods exist on the wire. TVM looked names up as
   attributes of the handler base class, so ``__init__`` answered null and ``register`` or
   ``__subclasshook__`` answered -32000; here every other name gets -32601
   ``"<method>: no such method"``.
2. ``main(handler, argv)`` honours ``argv`` (TVM ignored it and always parsed ``sys.argv``).
3. ``write_with_timeout``: writing zero bytes returns 0 (TVM hit a NameError); a broken pipe, or a
   write that makes no progress, raises TransportClosedError; a blocking fd is written in PIPE_BUF
   pieces so that one ``os.write`` cannot block past the deadline.
4. ``read_with_timeout`` does not close the fd at EOF (TVM did, which makes the owner's later close
   hit a stranger's fd); the owner closes it. It always waits in select(), so a non-blocking fd
   works without a deadline too; ``n < 1`` is a ValueError instead of a fake EOF.
5. A bare CR ends a request at once. TVM's text wrapper waits for the next byte to learn whether
   an LF follows, so a CR-terminated request with nothing behind it hung. CR LF is still one line
   end. UTF-8 is decoded per line instead of per read chunk (visible only if a client pipelined).
6. Replies are encoded with ``allow_nan=False``: a NaN or infinity in a handler's result becomes a
   -32000 ``"calling method <m>"`` error reply instead of a line that is not valid JSON.
7. If an error reply itself cannot be encoded (a handler put something that is not JSON in a
   ServerError's data), the server sends -32000 ``"calling method <m>"`` with the traceback of that
   failure; TVM crashed. A ServerError whose data is not an object keeps that data unchanged
   (TVM crashed adding the traceback to it). An unexpected failure inside validation itself is
   -32000 ``"validating request"`` with ``"id": null`` (TVM could echo an invalid id), then exit.
8. A JSONRPCError raised by a handler with a code outside :class:`ErrorCode` is sent as -32000 with
   the same message: TVM sent the code as given, and TVM's own client then failed with an
   AssertionError instead of raising the error.
9. ``JSONRPCError.from_json`` turns an unknown code into a plain JSONRPCError (TVM: AssertionError),
   and maps -32000 messages to any ServerError subclass, not only direct ones.
10. If the client has gone when a reply is written (broken pipe), the server exits quietly with
    status 0, as on EOF, instead of dying with a traceback.
11. ``ProjectOption`` accepts TVM v0.8's form (``name, choices, help``) as well as the v0.9+
    form, and always emits the seven keys ``name, choices, default, type, required, optional,
    help`` in that order: a v0.12+ TVM client indexes ``option["default"]`` and fails on a
    v0.8-shaped option, so the seven-key form is what keeps old templates usable.
    - ``type``, when not given, is inferred from ``default`` if set, else from ``choices``: all
      bools or "true"/"false" -> "bool", all ints -> "int", all numbers -> "float"; otherwise
      "str", which is what tvmc sends for every value anyway.
    - When neither ``required`` nor ``optional`` is given (every v0.8 option) the option is
      optional for all four methods that take options. That is what v0.8 meant: options went to
      every method and none was enforced.
    - Bad fields raise ValueError instead of failing an ``assert`` (asserts vanish under -O).
12. ``server_info_query`` may also return a mapping; options given as mappings or as another
    library's namedtuples are normalised through ProjectOption; ``project_options=None`` is sent
    as ``[]``. ``open_transport`` may also return a mapping with the three timeout keys; anything
    else is an error, as in TVM.
13. ServerError subclasses given a message other than their class name raise TypeError instead
    of failing an ``assert``. Errors and options survive copy and pickle.
14. ``main`` configures logging (stderr, INFO, or DEBUG with ``--debug``) when ``logging`` is
    already imported by then, which every real template does at the top; otherwise it leaves
    logging alone, saving ~4 ms of start-up. ``--debug`` always configures it, and then every
    request and reply is logged.
15. Ctrl-C (SIGINT, which reaches the client's whole process group) ends ``main`` with status
    130 and no traceback: the client reports the interrupt once, on its own.

Additions
---------
- :func:`b85encode` / :func:`b85decode`: byte-identical to ``base64.b85encode`` /
  ``b85decode`` (errors included) and 3-7x faster on large data, in pure Python: Python's big
  integers serve as wide SIMD registers (see the comment above the codec).
- :class:`ChildProcessTransport`: a child process's stdin/stdout as the transport (what a host
  template does): read 1..n bytes with a deadline, write everything with a deadline, EOF or a
  dead child -> TransportClosedError.
"""
from __future__ import annotations

import abc
import collections
import enum
import io
import json
import os
import re
import sys
import time

__all__ = [
    "ProjectAPIHandler",
    "ServerInfo",
    "ProjectOption",
    "TransportTimeouts",
    "ProjectAPIServer",
    "main",
    "JSONRPCError",
    "ServerError",
    "TransportClosedError",
    "IoTimeoutError",
    "UnsupportedTVMVersionError",
    "ErrorCode",
    "read_with_timeout",
    "write_with_timeout",
    "default_project_options",
    "ChildProcessTransport",
    "b85encode",
    "b85decode",
]

_PROTOCOL_VERSION = 1
# The four methods that take an ``options`` object, in the order TVM's templates list them.
_OPTION_METHODS = ("generate_project", "build", "flash", "open_transport")
_OPTION_TYPES = ("bool", "str", "int", "float")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
class ErrorCode(enum.IntEnum):
    """JSON-RPC error codes the Project API uses (PARSE_ERROR and INTERNAL_ERROR are never sent)."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    SERVER_ERROR = -32000


def _restore_error(cls, state):
    """Unpickle an error without calling its constructor (whose signature varies by class)."""
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message"))
    err.__dict__.update(state)
    return err


class JSONRPCError(Exception):
    """An error reply: ``code``, ``message`` and ``data`` exactly as they travel on the wire."""

    def __init__(self, code, message, data, client_context=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.client_context = client_context

    def to_json(self) -> dict:
        """The ``error`` member of a reply (key order code, message, data, as TVM sends it)."""
        return {"code": int(self.code), "message": self.message, "data": self.data}

    def __str__(self) -> str:
        context = f"{self.client_context}: " if self.client_context is not None else ""
        text = f"{context}JSON-RPC error # {int(self.code)}: {self.message}"
        if self.data:
            if isinstance(self.data, dict) and self.data.get("traceback"):
                text += "\n" + str(self.data["traceback"])
            else:
                text += "\n" + repr(self.data)
        return text

    def __reduce__(self):
        return (_restore_error, (type(self), dict(self.__dict__)))

    @classmethod
    def from_json(cls, client_context, json_error) -> "JSONRPCError":
        """Rebuild the error a reply's ``error`` member describes (returned, not raised).

        -32000 becomes ServerError or the subclass its message names, so the handler's exception
        type survives the trip; any other code becomes a JSONRPCError with that code.
        """
        code = json_error.get("code")
        if code == ErrorCode.SERVER_ERROR:
            return ServerError.from_json(client_context, json_error)
        try:
            code = ErrorCode(code)
        except ValueError:
            pass
        return JSONRPCError(
            code, json_error.get("message"), json_error.get("data"), client_context=client_context
        )


_TRACEBACK_MARKER = "  # <--- Outermost server-side stack frame"


class ServerError(JSONRPCError):
    """An exception raised while the server executed a valid request (code -32000).

    Subclasses carry no free-form message: their class name *is* the message, which is how the
    client knows which subclass to raise.
    """

    def __init__(self, message=None, data=None, client_context=None):
        if type(self) is ServerError:
            if message is None:
                raise TypeError("ServerError needs message=; subclasses supply their own")
        else:
            name = type(self).__name__
            if message is not None and message != name:
                raise TypeError(f"{name} takes no message; its message is its class name")
            message = name
        super().__init__(ErrorCode.SERVER_ERROR, message, data, client_context=client_context)

    @classmethod
    def from_exception(cls, exc: BaseException, **kw) -> "ServerError":
        """A ServerError carrying ``exc``'s formatted traceback as data."""
        err = cls(**kw)
        err.set_traceback(_format_exception(exc))
        return err

    def set_traceback(self, traceback_lines) -> None:
        """Store a formatted traceback in ``data["traceback"]``, marking the first server frame.

        TVM's FFI layer reshuffles Python tracebacks, so the marker tells a reader where the
        server side begins. Data that is not an object is left alone.
        """
        if self.data is None:
            self.data = {}
        if not isinstance(self.data, dict) or "traceback" in self.data:
            return
        lines = list(traceback_lines)
        for i, chunk in enumerate(lines):
            if chunk.startswith("  File "):
                first, sep, rest = chunk.partition("\n")
                lines[i] = first + _TRACEBACK_MARKER + sep + rest
                break
        self.data = dict(self.data, traceback="".join(lines))

    @classmethod
    def from_json(cls, client_context, json_error) -> "ServerError":
        message = json_error.get("message")
        data = json_error.get("data")
        if isinstance(message, str):
            pending = list(ServerError.__subclasses__())
            while pending:
                sub = pending.pop(0)
                if sub.__name__ == message:
                    return sub(data=data, client_context=client_context)
                pending.extend(sub.__subclasses__())
        return ServerError(
            message if isinstance(message, str) else repr(message),
            data=data,
            client_context=client_context,
        )


class TransportClosedError(ServerError):
    """The transport's other end has gone (EOF, broken pipe, closed port)."""


class IoTimeoutError(ServerError):
    """No transport I/O happened before the deadline; TVM's session reads it as "no data yet"."""


class UnsupportedTVMVersionError(ServerError):
    """The handler cannot serve the TVM version the client reported in server_info_query."""


def _format_exception(exc: BaseException) -> list:
    import traceback

    return list(traceback.TracebackException.from_exception(exc).format())


# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------
ServerInfo = collections.namedtuple(
    "ServerInfo", ["platform_name", "is_template", "model_library_format_path", "project_options"]
)
ServerInfo.__doc__ = "What server_info_query returns; serialised with protocol_version 1 added."

TransportTimeouts = collections.namedtuple(
    "TransportTimeouts",
    [
        "session_start_retry_timeout_sec",
        "session_start_timeout_sec",
        "session_established_timeout_sec",
    ],
)
TransportTimeouts.__doc__ = (
    "Seconds for TVM's session layer: retry 0 = never retry, established 0 = no timeout."
)

_ProjectOptionBase = collections.namedtuple(  # type: ignore[name-match]  # its repr must read ProjectOption, as TVM's does
    "ProjectOption", ["name", "choices", "default", "type", "required", "optional", "help"]
)
_OPTION_FIELDS = _ProjectOptionBase._fields


def _infer_option_type(choices, default) -> str:
    """The JSON type of an option declared without one (TVM v0.8 had no ``type``)."""
    if default is not None:
        values = [default]
    elif choices:
        values = list(choices)
    else:
        return "str"
    if all(isinstance(v, bool) or str(v).lower() in ("true", "false") for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "float"
    return "str"


def _method_list(value, field: str, name: str):
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(m, str) for m in value):
        raise ValueError(f"project option {name!r}: {field} must be a list of method names")
    return list(value)


class ProjectOption(_ProjectOptionBase):
    """One option a template declares; always emitted as TVM v0.9+'s seven-key object.

    Accepts TVM v0.8's form ``ProjectOption("verbose", choices=(True, False), help="...")`` and
    the v0.9+ form ``ProjectOption("verbose", type="bool", optional=["build"], help="...")``.
    Everything but the name is keyword-only, as in TVM. See the module docstring (item 11) for
    what a v0.8-form option gets as ``type``, ``required`` and ``optional``.
    """

    __slots__ = ()

    def __new__(cls, name, *, choices=None, default=None, type=None, required=None, optional=None,
                help=""):
        if not isinstance(name, str) or not name:
            raise ValueError(f"project option name must be a non-empty string; got {name!r}")
        if type is None:
            type = _infer_option_type(choices, default)
        elif type not in _OPTION_TYPES:
            raise ValueError(
                f"project option {name!r}: type must be one of "
                f"{', '.join(_OPTION_TYPES)}; got {type!r}"
            )
        if choices is not None:
            if isinstance(choices, (str, bytes)):
                raise ValueError(f"project option {name!r}: choices must be a list, not a string")
            choices = list(choices)
        required = _method_list(required, "required", name)
        optional = _method_list(optional, "optional", name)
        if required is None and optional is None:
            optional = list(_OPTION_METHODS)
        return super().__new__(cls, name, choices, default, type, required, optional, help)

    def __getnewargs_ex__(self):
        # copy, deepcopy and pickle rebuild through __new__, whose fields are keyword-only.
        fields = self._asdict()
        return (fields.pop("name"),), fields

    def replace(self, attributes: dict) -> "ProjectOption":
        """A copy with some fields changed (TVM's name); unknown field names are a ValueError."""
        unknown = [k for k in attributes if k not in _OPTION_FIELDS]
        if unknown:
            raise ValueError(f"project option {self.name!r}: no field(s) {', '.join(unknown)}")
        fields = self._asdict()
        fields.update(attributes)
        return ProjectOption(fields.pop("name"), **fields)

    def to_json(self) -> dict:
        """The seven-key object, in TVM v0.9+'s key order."""
        return {
            "name": self.name,
            "choices": None if self.choices is None else list(self.choices),
            "default": self.default,
            "type": self.type,
            "required": None if self.required is None else list(self.required),
            "optional": None if self.optional is None else list(self.optional),
            "help": self.help,
        }


def default_project_options(**overrides) -> list:
    """The option set most templates share (TVM v0.11+), with fields replaced per option name.

    ``default_project_options(board={"choices": [...], "optional": ["flash"]})`` replaces those
    fields of ``board``; naming an option that is not in the set is a ValueError.
    """
    gp = ["generate_project"]
    options = [
        ProjectOption("verbose", optional=gp, type="bool", default=False,
                      help="Run build tools verbosely."),
        ProjectOption("project_type", required=gp, type="str",
                      help="Which kind of project to generate (the template lists its choices)."),
        ProjectOption("board", required=gp, type="str", help="The board to build for."),
        ProjectOption("cmsis_path", optional=gp, type="str", default=os.environ.get("CMSIS_PATH"),
                      help="Folder of a CMSIS checkout, for models that use CMSIS-NN (default: $CMSIS_PATH)."),
        ProjectOption("warning_as_error", optional=gp, type="bool", default=False,
                      help="Fail instead of warning (for example on a tool version mismatch)."),
        ProjectOption("compile_definitions", optional=gp, type="str",
                      help="Extra preprocessor definitions for the project's build."),
        ProjectOption("extra_files_tar", optional=gp, type="str",
                      help="A tar file whose contents are unpacked into the generated project."),
    ]
    index = {opt.name: i for i, opt in enumerate(options)}
    for name, fields in overrides.items():
        if name not in index:
            raise ValueError(f"default_project_options: no option named {name!r} to override")
        options[index[name]] = options[index[name]].replace(fields)
    return options


# --------------------------------------------------------------------------------------------
# The handler interface
# --------------------------------------------------------------------------------------------
class ProjectAPIHandler(abc.ABC):
    """What a template implements; one instance serves one client, one request at a time."""

    @abc.abstractmethod
    def server_info_query(self, tvm_version: str) -> ServerInfo:
        """Describe this project: platform, template or not, its MLF and its options."""

    @abc.abstractmethod
    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir,
                         options: dict):
        """Create ``project_dir`` (which must not exist) from this template and the MLF tar."""

    @abc.abstractmethod
    def build(self, options: dict):
        """Build the generated project."""

    @abc.abstractmethod
    def flash(self, options: dict):
        """Put the built firmware on the device (a no-op for hosts and emulators)."""

    @abc.abstractmethod
    def open_transport(self, options: dict) -> TransportTimeouts:
        """Open the byte channel to the running firmware and say how patient the session is."""

    @abc.abstractmethod
    def close_transport(self):
        """Close the channel; closing one that is not open does nothing."""

    @abc.abstractmethod
    def read_transport(self, n: int, timeout_sec) -> bytes:
        """Return 1..n bytes, raise IoTimeoutError at the deadline, TransportClosedError at EOF.

        ``timeout_sec`` None blocks, 0 polls, a positive number is a deadline in seconds.
        """

    @abc.abstractmethod
    def write_transport(self, data: bytes, timeout_sec):
        """Write all of ``data`` or raise IoTimeoutError / TransportClosedError."""


# Wire name -> (parameter names in declaration order, parameters type-checked as objects).
_METHODS = {
    "server_info_query": (("tvm_version",), ()),
    "generate_project": (
        ("model_library_format_path", "standalone_crt_dir", "project_dir", "options"),
        (),
    ),
    "build": (("options",), ("options",)),
    "flash": (("options",), ("options",)),
    "open_transport": (("options",), ()),
    "close_transport": ((), ()),
    "read_transport": (("n", "timeout_sec"), ()),
    "write_transport": (("data", "timeout_sec"), ()),
}

_METHOD_NAME_RE = re.compile(r"^[a-zA-Z0-9_]+$")


class _MissingIdError(Exception):
    """Raised (and reported) when a request that had no id has run: there is no one to answer."""


class _ClientGone(Exception):
    """Writing a reply failed because the client closed its end."""


def _log():
    import logging

    return logging.getLogger(__name__)


class ProjectAPIServer:
    """Serves one handler over a pair of file objects, one request line at a time.

    ``read_file`` and ``write_file`` are binary files (as ``main`` opens the fds, unbuffered);
    text files are accepted too.
    """

    _PROTOCOL_VERSION = _PROTOCOL_VERSION

    def __init__(self, read_file, write_file, handler: ProjectAPIHandler):
        self._read_file = read_file
        self._write_file = write_file
        self._handler = handler
        self._text_in = isinstance(read_file, io.TextIOBase)
        self._text_out = isinstance(write_file, io.TextIOBase)
        self._read_chunk = getattr(read_file, "read1", None) or read_file.read
        self._buf = bytearray()
        self._skip_lf = False
        self._debug = False

    # -- reading -------------------------------------------------------------------------------
    def _read_line(self):
        """The next request line without its line end, or None at EOF.

        Universal newlines, as TVM's reader: LF, CR LF and a bare CR each end a line.
        """
        if self._text_in:
            line = self._read_file.readline()
            if not line:
                return None
            return line.rstrip("\r\n").encode("utf-8", "surrogatepass")
        buf = self._buf
        pos = 0
        while True:
            if self._skip_lf and buf:
                if buf[0] == 10:
                    del buf[0]
                self._skip_lf = False
            lf = buf.find(b"\n", pos)
            cr = buf.find(b"\r", pos, lf if lf >= 0 else len(buf))
            end = cr if cr >= 0 else lf
            if end >= 0:
                line = bytes(buf[:end])
                if buf[end] == 13:
                    if end + 1 < len(buf):
                        del buf[: end + (2 if buf[end + 1] == 10 else 1)]
                    else:
                        del buf[: end + 1]
                        self._skip_lf = True
                else:
                    del buf[: end + 1]
                return line
            pos = len(buf)
            chunk = self._read_chunk(65536)
            if not chunk:
                if buf:
                    line = bytes(buf)
                    buf.clear()
                    return line
                return None
            buf += chunk

    # -- writing -------------------------------------------------------------------------------
    def _write_line(self, text: str) -> None:
        if self._debug:
            _log().debug("reply: %s", text)
        try:
            if self._text_out:
                self._write_file.write(text + "\n")
            else:
                view = memoryview((text + "\n").encode("ascii"))
                while view:
                    n = self._write_file.write(view)
                    if n is None:  # a non-blocking file that is full: wait for room
                        import select

                        select.select([], [self._write_file], [])
                        continue
                    view = view[n:]
            flush = getattr(self._write_file, "flush", None)
            if flush is not None:
                flush()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _ClientGone() from exc

    def _reply_result(self, request_id, result, method) -> None:
        try:
            reply = {"jsonrpc": "2.0", "id": request_id, "result": result}
            text = json.dumps(reply, allow_nan=False)
        except Exception as exc:  # not JSON: report it as a failure of the method
            error = ServerError.from_exception(exc, message=f"calling method {method}")
            self._reply_error(request_id, error, method)
            return
        self._write_line(text)

    def _reply_error(self, request_id, error: JSONRPCError, method=None) -> None:
        body = error.to_json()
        try:
            text = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": body}, allow_nan=False)
        except Exception as exc:
            fallback = ServerError.from_exception(
                exc, message=f"calling method {method}" if method else "validating request"
            )
            text = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": fallback.to_json()})
        self._write_line(text)

    # -- serving -------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Serve requests until EOF, an unparseable line or an invalid request."""
        while self.serve_one_request():
            pass

    def serve_one_request(self) -> bool:
        """Read, execute and answer one request; False when the server should exit."""
        try:
            return self._serve_one()
        except _ClientGone:
            _log().info("client closed the reply pipe; exiting")
            return False

    def _serve_one(self) -> bool:
        try:
            line = self._read_line()
        except OSError as exc:
            _log().error("cannot read the request pipe (%s); exiting", exc)
            return False
        if line is None:
            if self._debug:
                _log().debug("EOF on the request pipe; exiting")
            return False
        try:
            request = json.loads(line.decode("utf-8"))
        except Exception as exc:
            _log().error("request line is not JSON (%s: %s); exiting", type(exc).__name__, exc)
            return False
        if self._debug:
            _log().debug("request: %s", line.decode("utf-8"))

        try:
            self._validate(request)
        except JSONRPCError as err:
            self._reply_error(None, err)
            return False
        except Exception as exc:  # defensive: validation itself failed
            self._reply_error(None, ServerError.from_exception(exc, message="validating request"))
            return False

        method = request["method"]
        request_id = request.get("id")
        try:
            result = self._dispatch(method, request["params"])
            if "id" not in request:
                raise _MissingIdError(
                    f'request for {method} had no "id"; this server does not take JSON-RPC '
                    "notifications, so its result cannot be returned"
                )
        except ServerError as err:
            err.set_traceback(_format_exception(err))
            self._reply_error(request_id, err, method)
        except JSONRPCError as err:
            try:
                ErrorCode(err.code)
            except ValueError:  # a code TVM's client cannot decode: send it as a server error
                err = ServerError.from_exception(err, message=str(err.message), data=err.data)
            self._reply_error(request_id, err, method)
        except Exception as exc:
            error = ServerError.from_exception(exc, message=f"calling method {method}")
            self._reply_error(request_id, error, method)
        else:
            self._reply_result(request_id, result, method)
        return True

    @staticmethod
    def _validate(request) -> None:
        if not isinstance(request, dict):
            raise JSONRPCError(
                ErrorCode.INVALID_REQUEST, f"request: want dict; got {request!r}", None
            )
        jsonrpc = request.get("jsonrpc")
        if jsonrpc != "2.0":
            raise JSONRPCError(
                ErrorCode.INVALID_REQUEST, f'request["jsonrpc"]: want "2.0"; got {jsonrpc!r}', None
            )
        method = request.get("method")
        if not isinstance(method, str):
            raise JSONRPCError(
                ErrorCode.INVALID_REQUEST, f'request["method"]: want str; got {method!r}', None
            )
        if not _METHOD_NAME_RE.match(method):
            raise JSONRPCError(
                ErrorCode.INVALID_REQUEST,
                f'request["method"]: should match regex {_METHOD_NAME_RE.pattern}; got {method!r}',
                None,
            )
        params = request.get("params")
        if not isinstance(params, dict):
            raise JSONRPCError(
                ErrorCode.INVALID_REQUEST, f'request["params"]: want dict; got {type(params)}', None
            )
        request_id = request.get("id")
        if request_id is not None and not isinstance(request_id, (str, int)):
            raise JSONRPCError(
                ErrorCode.INVALID_REQUEST,
                f'request["id"]: want str, number, null; got {request_id!r}',
                None,
            )

    def _dispatch(self, method: str, params: dict):
        spec = _METHODS.get(method)
        if spec is None:
            raise JSONRPCError(ErrorCode.METHOD_NOT_FOUND, f"{method}: no such method", None)
        names, checked = spec
        for name in names:
            if name not in params:
                raise JSONRPCError(
                    ErrorCode.INVALID_PARAMS, f"method {method}: parameter {name} not given", None
                )
            if name in checked and not isinstance(params[name], dict):
                raise JSONRPCError(
                    ErrorCode.INVALID_PARAMS,
                    f"method {method}: parameter {name}: want {dict!r}, got {type(params[name])!r}",
                    None,
                )
        extra = [p for p in params if p not in names]
        if extra:
            raise JSONRPCError(
                ErrorCode.INVALID_PARAMS, f"{method}: extra parameters: {', '.join(extra)}", None
            )
        return getattr(self, "_call_" + method)(**params)

    # -- per-method conversions between JSON and the handler's Python types -------------------
    def _call_server_info_query(self, tvm_version):
        info = self._handler.server_info_query(tvm_version)
        if hasattr(info, "_asdict"):
            fields = dict(info._asdict())
        elif isinstance(info, dict):
            fields = dict(info)
        else:
            raise TypeError(
                f"server_info_query must return a ServerInfo; got {type(info).__name__}"
            )
        reply = {}
        for key in ServerInfo._fields:
            if key not in fields:
                raise TypeError(f"server_info_query result has no {key!r}")
            reply[key] = fields.pop(key)
        path = reply["model_library_format_path"]
        if path is not None and not isinstance(path, str):
            reply["model_library_format_path"] = os.fspath(path)
        reply["project_options"] = [
            _option_json(opt) for opt in (reply["project_options"] or ())
        ]
        reply["protocol_version"] = fields.pop("protocol_version", _PROTOCOL_VERSION)
        reply.update(fields)
        return reply

    def _call_generate_project(self, model_library_format_path, standalone_crt_dir, project_dir,
                               options):
        from pathlib import Path

        return self._handler.generate_project(
            Path(model_library_format_path), Path(standalone_crt_dir), Path(project_dir), options
        )

    def _call_build(self, options):
        return self._handler.build(options)

    def _call_flash(self, options):
        return self._handler.flash(options)

    def _call_open_transport(self, options):
        timeouts = self._handler.open_transport(options)
        if isinstance(timeouts, TransportTimeouts):
            values = timeouts._asdict()
        elif isinstance(timeouts, dict) and set(timeouts) == set(TransportTimeouts._fields):
            values = timeouts
        else:
            raise TypeError(
                f"open_transport must return TransportTimeouts; got {type(timeouts).__name__}"
            )
        return {"timeouts": {key: values[key] for key in TransportTimeouts._fields}}

    def _call_close_transport(self):
        return self._handler.close_transport()

    def _call_read_transport(self, n, timeout_sec):
        data = self._handler.read_transport(n, timeout_sec)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"read_transport must return bytes; got {type(data).__name__}")
        return {"data": b85encode(data)}

    def _call_write_transport(self, data, timeout_sec):
        if not isinstance(data, str):
            raise TypeError(
                f"write_transport: data must be a base85 string; got {type(data).__name__}"
            )
        # TVM's server drops the handler's return value (Arduino's handler returns pyserial's
        # byte count), so the reply is always ``"result": null``; so is ours.
        self._handler.write_transport(b85decode(data), timeout_sec)
        return None


def _option_json(opt) -> dict:
    if isinstance(opt, ProjectOption):
        return opt.to_json()
    if isinstance(opt, dict):
        fields = dict(opt)
        return ProjectOption(fields.pop("name"), **fields).to_json()
    if hasattr(opt, "_asdict"):  # a foreign namedtuple, e.g. TVM's own ProjectOption
        fields = dict(opt._asdict())
        return ProjectOption(fields.pop("name"), **fields).to_json()
    raise TypeError(f"project_options entries must be ProjectOption; got {type(opt).__name__}")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def _parse_args(argv):
    """--read-fd INT --write-fd INT [--debug]; anything unusual goes to argparse for its errors."""
    read_fd = write_fd = None
    debug = False
    it = iter(argv)
    try:
        for arg in it:
            if arg == "--debug":
                debug = True
            elif arg in ("--read-fd", "--write-fd"):
                value = int(next(it))
                if arg == "--read-fd":
                    read_fd = value
                else:
                    write_fd = value
            else:
                raise ValueError(arg)
        if read_fd is None or write_fd is None:
            raise ValueError("missing")
        return read_fd, write_fd, debug
    except (ValueError, StopIteration):
        import argparse

        parser = argparse.ArgumentParser(description="microTVM Project API server")
        parser.add_argument("--read-fd", type=int, required=True, help="fd to read requests from")
        parser.add_argument("--write-fd", type=int, required=True, help="fd to write replies to")
        parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
        args = parser.parse_args(list(argv))
        return args.read_fd, args.write_fd, args.debug


def main(handler: ProjectAPIHandler, argv=None) -> None:
    """Serve ``handler`` on the fds named by ``argv`` (default ``sys.argv[1:]``) until EOF."""
    read_fd, write_fd, debug = _parse_args(sys.argv[1:] if argv is None else argv)
    if debug or "logging" in sys.modules:
        import logging

        logging.basicConfig(level=logging.DEBUG if debug else logging.INFO)
    read_file = open(read_fd, "rb", buffering=0)
    write_file = open(write_fd, "wb", buffering=0)
    server = ProjectAPIServer(read_file, write_file, handler)
    server._debug = debug
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        # Ctrl-C reaches the client's whole process group, this server included: the client
        # says "interrupted" once, and a traceback from here would only bury that line.
        sys.exit(130)


# --------------------------------------------------------------------------------------------
# Transport helpers
# --------------------------------------------------------------------------------------------
def _fileno(fd) -> int:
    return fd if isinstance(fd, int) else fd.fileno()


def _deadline(timeout_sec):
    if timeout_sec is None:
        return None
    return time.monotonic() + max(0.0, float(timeout_sec))


def _remaining(deadline):
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def read_with_timeout(fd, n: int, timeout_sec) -> bytes:
    """Read 1..n bytes from ``fd`` (an int or anything with fileno()).

    ``timeout_sec`` None blocks, 0 polls, a positive number is a deadline. Raises IoTimeoutError
    when nothing arrived in time and TransportClosedError at EOF; the fd stays open either way.
    """
    import select

    if n < 1:
        raise ValueError(f"read_with_timeout: n must be at least 1; got {n!r}")
    fd = _fileno(fd)
    deadline = _deadline(timeout_sec)
    while True:
        ready, _, _ = select.select([fd], [], [], _remaining(deadline))
        if not ready:
            raise IoTimeoutError()
        try:
            data = os.read(fd, n)
        except BlockingIOError:  # readiness was spurious; wait again
            if deadline is not None and time.monotonic() >= deadline:
                raise IoTimeoutError() from None
            continue
        except (ConnectionResetError, BrokenPipeError):
            raise TransportClosedError() from None
        if not data:
            raise TransportClosedError()
        return data


def write_with_timeout(fd, data, timeout_sec) -> int:
    """Write ``data`` to ``fd`` before the deadline; return how many bytes were written.

    Returns len(data) on success, or the count written so far if the deadline passed after a
    partial write. Raises IoTimeoutError if nothing could be written in time and
    TransportClosedError if the reader has gone.
    """
    import select

    fd = _fileno(fd)
    view = memoryview(data).cast("B")
    if not view:
        return 0
    # A blocking fd that select() calls writable takes PIPE_BUF bytes without blocking; a bigger
    # write could block past the deadline. Non-blocking fds take what they can.
    deadline = _deadline(timeout_sec)
    piece = len(view)
    if deadline is not None and os.get_blocking(fd):
        piece = getattr(select, "PIPE_BUF", 512)
    written = 0
    while written < len(view):
        _, ready, _ = select.select([], [fd], [], _remaining(deadline))
        if not ready:
            if written:
                return written
            raise IoTimeoutError()
        try:
            count = os.write(fd, view[written:written + piece])
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            raise TransportClosedError() from None
        if count == 0:
            raise TransportClosedError()
        written += count
    return written


class ChildProcessTransport:
    """A child process whose stdin/stdout are the transport (what the CRT host template does).

    ``read`` returns 1..n bytes or raises IoTimeoutError / TransportClosedError; ``write`` sends
    everything or raises. The child's stderr is inherited, so its diagnostics reach the user.
    """

    def __init__(self, argv, cwd=None, env=None):
        import subprocess

        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd, env=env, bufsize=0
        )
        self._to_child = self._proc.stdin
        self._from_child = self._proc.stdout
        os.set_blocking(self._to_child.fileno(), False)
        os.set_blocking(self._from_child.fileno(), False)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def read(self, n: int, timeout_sec) -> bytes:
        if self._from_child is None:
            raise TransportClosedError()
        return read_with_timeout(self._from_child.fileno(), n, timeout_sec)

    def write(self, data, timeout_sec) -> None:
        if self._to_child is None:
            raise TransportClosedError()
        deadline = _deadline(timeout_sec)
        view = memoryview(data).cast("B")
        while view:
            count = write_with_timeout(self._to_child.fileno(), view, _remaining(deadline))
            view = view[count:]
            if view and deadline is not None and time.monotonic() >= deadline:
                raise IoTimeoutError()

    def close(self, wait_sec: float = 5.0) -> None:
        """Close the pipes and stop the child (terminate, then kill if it lingers)."""
        if self._proc is None:
            return
        for f in (self._to_child, self._from_child):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._to_child = self._from_child = None
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(wait_sec)
            except Exception:
                proc.kill()
                proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# --------------------------------------------------------------------------------------------
# base85 (RFC 1924 alphabet, exactly base64.b85encode / b85decode)
# --------------------------------------------------------------------------------------------
# Python's big integers serve as wide SIMD registers: the words are laid out in 64-bit lanes of
# one integer, and each division by a power of 85 is one multiply by a fixed-point reciprocal,
# a shift and a mask over all lanes at once. The reciprocals are exact for every lane value
# (m = ceil(2**s / c) with (max value) * (m*c - 2**s) < 2**s), and no lane's product reaches the
# next lane. Each step is a linear-time C loop, so this beats the stdlib's per-word Python loop
# several times over with no numpy.
_B85_ALPHABET = (
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
)
_B85_ENCODE_TABLE = _B85_ALPHABET + bytes(256 - 85)
_B85_DECODE_TABLE = bytes(_B85_ALPHABET.index(c) if c in _B85_ALPHABET else 255 for c in range(256))
_B85_CHUNK_WORDS = 1 << 16  # bounds temporary memory; 256 KiB of input per pass
_M7225_W = (1 << 44) // 7225 + 1  # words < 2**32 divided by 85**2: s = 44
_M7225_Q = (1 << 33) // 7225 + 1  # quotients < 2**20 divided by 85**2: s = 33
_M85 = (1 << 20) // 85 + 1  # pairs < 2**13 divided by 85: s = 20


_b85_mask_cache: dict = {}


def _b85_masks(k: int) -> tuple:
    """Per-lane constants for ``k`` 64-bit lanes, cached: equal-sized chunks reuse them."""
    masks = _b85_mask_cache.get(k)
    if masks is None:
        ones = int.from_bytes(b"\0\0\0\0\0\0\0\x01" * k, "big")
        masks = (ones * 0xFFFFF, ones * 0x7F, ones * 0x7F0000007F,  # encoding
                 ones * 0xFF00FF, ones * 0xFFFF, ones * 0xFF)  # decoding
        if len(_b85_mask_cache) >= 4:
            _b85_mask_cache.clear()
        _b85_mask_cache[k] = masks
    return masks


def _b85encode_words(b, k: int, out, at: int) -> None:
    """Encode ``k`` 4-byte big-endian words (b has 4*k bytes) as digit values into out[at:]."""
    lanes = bytearray(8 * k)
    lanes[4::8] = b[0::4]
    lanes[5::8] = b[1::4]
    lanes[6::8] = b[2::4]
    lanes[7::8] = b[3::4]
    x = int.from_bytes(lanes, "big")
    m20, m7, m7x2 = _b85_masks(k)[:3]
    q = ((x * _M7225_W) >> 44) & m20  # w // 85**2
    low_pair = x - q * 7225  # d3*85 + d4
    d0 = ((q * _M7225_Q) >> 33) & m7  # w // 85**4
    high_pair = q - d0 * 7225  # d1*85 + d2
    pairs = low_pair | (high_pair << 32)
    tens = ((pairs * _M85) >> 20) & m7x2  # d3 at bit 0, d1 at bit 32
    units = pairs - tens * 85  # d4 at bit 0, d2 at bit 32
    z = units | (tens << 8) | (d0 << 48)  # lane bytes: _ d0 d1 d2 _ _ d3 d4
    zb = z.to_bytes(8 * k, "big")
    end = at + 5 * k
    out[at:end:5] = zb[1::8]
    out[at + 1:end:5] = zb[2::8]
    out[at + 2:end:5] = zb[3::8]
    out[at + 3:end:5] = zb[6::8]
    out[at + 4:end:5] = zb[7::8]


def b85encode(data) -> str:
    """base85-encode bytes exactly as ``base64.b85encode(data).decode()`` does (no padding)."""
    if not isinstance(data, (bytes, bytearray)):
        data = memoryview(data).tobytes()
    n = len(data)
    if n == 0:
        return ""
    pad = -n % 4
    if pad:
        data = bytes(data) + b"\0" * pad
    total = len(data) // 4
    out = bytearray(5 * total)
    view = memoryview(data)
    step = _B85_CHUNK_WORDS
    for start in range(0, total, step):
        k = min(step, total - start)
        _b85encode_words(view[4 * start:4 * (start + k)], k, out, 5 * start)
    if pad:
        del out[-pad:]
    return out.translate(_B85_ENCODE_TABLE).decode("ascii")


def _b85decode_groups(digits, k: int, offset: int, out, at: int) -> None:
    """Decode ``k`` groups of 5 digit values into out[at:]; ``offset`` is the input position."""
    lanes = bytearray(8 * k)  # lane bytes: _ _ _ d4 d2 d3 d0 d1
    lanes[6::8] = digits[0::5]
    lanes[7::8] = digits[1::5]
    lanes[4::8] = digits[2::5]
    lanes[5::8] = digits[3::5]
    lanes[3::8] = digits[4::5]
    x = int.from_bytes(lanes, "big")
    low_bytes, m16, m8 = _b85_masks(k)[3:]
    pairs = (x & low_bytes) + ((x >> 8) & low_bytes) * 85  # d0*85+d1 at bit 0, d2*85+d3 at 16
    words = (pairs & m16) * 614125 + ((pairs >> 16) & m16) * 85 + ((x >> 32) & m8)
    wb = words.to_bytes(8 * k, "big")
    over = wb[3::8]
    if over.strip(b"\0"):
        group = len(over) - len(over.lstrip(b"\0"))
        raise ValueError(f"base85 overflow in hunk starting at byte {offset + 5 * group}")
    end = at + 4 * k
    out[at:end:4] = wb[4::8]
    out[at + 1:end:4] = wb[5::8]
    out[at + 2:end:4] = wb[6::8]
    out[at + 3:end:4] = wb[7::8]


def b85decode(text) -> bytes:
    """Decode base85 text exactly as ``base64.b85decode`` does, errors included (ValueError)."""
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("string argument should contain only ASCII characters") from None
    elif isinstance(text, (bytes, bytearray)):
        raw = bytes(text)
    else:
        raw = memoryview(text).tobytes()
    if not raw:
        return b""
    pad = -len(raw) % 5
    if pad:
        raw += b"~" * pad
    digits = raw.translate(_B85_DECODE_TABLE)
    bad = digits.find(b"\xff")
    if bad >= 0:
        if bad >= 5:  # the stdlib reports an overflow in an earlier group first
            b85decode(raw[: 5 * (bad // 5)])
        raise ValueError(f"bad base85 character at position {bad}")
    total = len(digits) // 5
    out = bytearray(4 * total)
    view = memoryview(digits)
    step = _B85_CHUNK_WORDS
    for start in range(0, total, step):
        k = min(step, total - start)
        _b85decode_groups(view[5 * start:5 * (start + k)], k, 5 * start, out, 4 * start)
    if pad:
        del out[-pad:]
    return bytes(out)
