"""Template and generated projects, driven through the Project API (TVM's ``tvm.micro.project``).

A :class:`TemplateProject` is a folder whose server says ``is_template: true``; its
:meth:`~TemplateProject.generate_project` makes a :class:`GeneratedProject`, whose server (a new
process started in the new folder, as TVM does) builds, flashes and opens a byte transport.

Options are checked against what the server declares *before* any call, so a typo fails fast with
a suggestion instead of being silently ignored by the server:

* unknown names are errors (with the closest declared name);
* values given as strings (the CLI's ``-o K=V``) are converted to the declared type: bool accepts
  true/false, 1/0, yes/no, on/off; int and float parse as Python does. A bad value is an
  :class:`~microtvm_registry.errors.OptionError`. (TVM's tvmc sent "false" as a string, which
  servers read as true; we send a real ``false``.) Types TVM declared wrongly are corrected, see
  :data:`TYPE_FIXES`;
* values must be among ``choices`` when the option has them;
* options ``required`` for the method being called must be given (or have a default);
* like TVM v0.12+, every declared option that was not given is sent with its ``default``, so
  servers written for v0.12+ (which index ``options[...]`` directly) get every key. Servers that
  declare v0.8-style options (no ``default`` key) get only what the user gave, as before v0.12.
  Only declared names are ever sent.

``standalone_crt_dir``: generate_project must name one, but today's TVM ships none. Pass the
folder of a TVM <= 0.18 ``standalone_crt`` if a template needs it (TVM's own CRT, Zephyr and
Arduino templates copy from it); otherwise an empty placeholder folder is passed and removed
afterwards, which is enough for templates that carry their own runtime (our ``host`` template).
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import os
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .errors import BuildError, OptionError, ProjectError, first_line
from .project_api import client as _client_mod
from .project_api.client import DEFAULT_TIMEOUT_SEC, MalformedReplyError, ProjectAPIClient

_LOG = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

METHODS = ("generate_project", "build", "flash", "open_transport")

#: Option types TVM's templates declare wrongly (shared/spec/project-api.md section 6), keyed by
#: (platform_name, option name): Arduino's ``port`` is a device path, Zephyr's ``gdbserver_port``
#: goes into an environment variable, and Zephyr iterates ``compile_definitions`` as a list (a
#: string given for it is split like a shell command line).
TYPE_FIXES: Dict[Tuple[str, str], str] = {
    ("arduino", "port"): "str",
    ("zephyr", "gdbserver_port"): "str",
    ("zephyr", "compile_definitions"): "list",
}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class TemplateProjectError(ProjectError):
    """A generated project was expected, but the folder's server says it is a template."""


class NotATemplateProjectError(ProjectError):
    """A template was expected, but the folder's server says it is a generated project."""


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One declared project option (either schema: v0.8 ``name/choices/help`` or v0.9+)."""

    name: str
    type: Optional[str] = None
    choices: Optional[Tuple[Any, ...]] = None
    default: Any = None
    has_default: bool = False
    required: Tuple[str, ...] = ()
    optional: Tuple[str, ...] = ()
    help: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any], platform: str = "") -> "OptionSpec":
        if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
            raise MalformedReplyError(f"server declared a project option that has no name: {data!r:.80}")
        name = data["name"]
        declared = data.get("type")
        choices = data.get("choices")
        return cls(
            name=name,
            type=TYPE_FIXES.get((platform, name), declared if isinstance(declared, str) else None),
            choices=tuple(choices) if isinstance(choices, (list, tuple)) else None,
            default=data.get("default"),
            has_default="default" in data,
            required=tuple(data.get("required") or ()),
            optional=tuple(data.get("optional") or ()),
            help=str(data.get("help") or ""),
        )

    @property
    def effective_type(self) -> Optional[str]:
        """The declared type, or for v0.8 options one inferred from uniform choices."""
        if self.type:
            return self.type
        if self.choices:
            if all(isinstance(c, bool) for c in self.choices):
                return "bool"
            if all(isinstance(c, int) and not isinstance(c, bool) for c in self.choices):
                return "int"
        return None


def parse_option_specs(info: Mapping[str, Any]) -> List[OptionSpec]:
    """The server's ``project_options`` as OptionSpecs, with TYPE_FIXES applied."""
    platform = str(info.get("platform_name") or "")
    raw = info.get("project_options") or []
    if not isinstance(raw, list):
        raise MalformedReplyError("server info project_options is not a list")
    return [OptionSpec.from_json(o, platform) for o in raw]


def fills_defaults(info: Mapping[str, Any]) -> bool:
    """Whether to send every declared option (TVM v0.12+ behaviour) or only the given ones.

    Only for the v0.9+ schema: a v0.8 server's options have no ``default``. TVM's v0.8 templates
    running on our server.py (through the tvm shim) are re-emitted in the seven-key form with
    ``required`` null and ``optional`` = all four methods, which no real v0.9+ template declares
    for every option; those are treated as v0.8 too, so their ``options.get(k, fallback)`` calls
    keep seeing missing keys rather than nulls.
    """
    raw = [o for o in (info.get("project_options") or []) if isinstance(o, Mapping)]
    if not raw or any("default" not in o for o in raw):
        return False
    every = set(METHODS)
    return not all(o.get("required") is None and set(o.get("optional") or ()) == every for o in raw)


def convert_option(spec: OptionSpec, value: Any, where: str = "") -> Any:
    """``value`` converted to the option's type; OptionError naming option, value and type."""
    kind = spec.effective_type
    if value is None or kind is None:
        return value

    def bad(hint: str = "") -> OptionError:
        return OptionError(f"option {spec.name}={value!r}{where} is not a valid {kind}{hint}")

    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            text = value.strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
        raise bad(" (use true/false, 1/0 or yes/no)")
    if kind == "int":
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            for base in (10, 0):
                try:
                    return int(value.strip(), base)
                except ValueError:
                    pass
        raise bad(" (use a whole number, e.g. 2097152 or 0x200000)")
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise bad(" (use a number, e.g. 1.5)")
    if kind == "list":
        if isinstance(value, str):
            return shlex.split(value)
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        raise bad()
    # "str" (or a type we do not know): strings as given; paths and numbers as text; Zephyr's
    # list-valued options pass through untouched.
    if isinstance(value, (str, list)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise bad()


def _matches_choice(value: Any, choice: Any) -> bool:
    if value == choice and isinstance(value, bool) == isinstance(choice, bool):
        return True

    def norm(x: Any) -> str:
        return str(x).lower() if isinstance(x, bool) else str(x)

    return norm(value) == norm(choice)


def prepare_options(
    info: Mapping[str, Any],
    given: Optional[Mapping[str, Any]],
    method: Optional[str],
    where: str = "",
) -> Dict[str, Any]:
    """Validate and convert ``given`` for ``method`` against the server's declared options.

    ``method`` None checks names, types and choices only (no required check, no filling). See the
    module docstring for the rules. ``where`` is appended to messages (e.g. " for the zephyr
    template in /path").
    """
    specs = {s.name: s for s in parse_option_specs(info)}
    given = dict(given or {})
    unknown = [k for k in given if k not in specs]
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, list(specs), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        declared = ", ".join(sorted(specs)) or "none"
        raise OptionError(f"unknown option {name!r}{where}{hint} (declared: {declared})")
    result: Dict[str, Any] = {}
    for name, value in given.items():
        spec = specs[name]
        value = convert_option(spec, value, where)
        if spec.choices is not None and value is not None and not isinstance(value, list):
            match = next((c for c in spec.choices if _matches_choice(value, c)), _MISSING)
            if match is _MISSING:
                allowed = ", ".join(str(c) for c in spec.choices)
                raise OptionError(f"option {name}={value!r}{where} is not one of its choices: {allowed}")
            if not isinstance(value, bool):
                value = match  # send the server's own spelling
        result[name] = value
    if method is None:
        return result
    for spec in specs.values():
        if method in spec.required and result.get(spec.name) is None and spec.default is None:
            raise OptionError(
                f"option {spec.name} is required for {method}{where}; give it with -o {spec.name}=VALUE"
            )
    if fills_defaults(info):
        for spec in specs.values():
            result.setdefault(spec.name, spec.default)
    return result


_MISSING = object()


def _describe(path: Path, info: Optional[Mapping[str, Any]] = None) -> str:
    platform = (info or {}).get("platform_name")
    return f" for the {platform} project in {path}" if platform else f" for the project in {path}"


class _Project:
    """A folder and a connection to its server, restarted on demand if it died."""

    _want_template: bool = True

    def __init__(self, path: Path, client: ProjectAPIClient, info: Dict[str, Any], timeout: Optional[float]):
        self.path = path
        self.timeout = timeout
        self._client: Optional[ProjectAPIClient] = client
        self._info = info

    @classmethod
    def _connect(cls, path: PathLike, timeout: Optional[float], debug: bool = False) -> Tuple[Path, ProjectAPIClient, Dict[str, Any]]:
        folder = Path(path).absolute()
        client = _client_mod.instantiate_from_dir(folder, debug=debug, timeout=timeout)
        try:
            info = client.server_info_query()
            cls._check_kind(folder, info)
            parse_option_specs(info)  # a malformed option list fails here, not mid-build
        except BaseException:
            client.close()
            raise
        return folder, client, info

    @classmethod
    def _check_kind(cls, folder: Path, info: Mapping[str, Any]) -> None:
        is_template = bool(info.get("is_template"))
        if cls._want_template and not is_template:
            raise NotATemplateProjectError(
                f"{folder} is a generated project, not a template (its server says is_template=false); "
                "build or flash it instead of generating from it"
            )
        if not cls._want_template and is_template:
            raise TemplateProjectError(
                f"{folder} is a template, not a generated project (its server says is_template=true); "
                "generate a project from it first (microtvm create-project)"
            )

    def _ensure_client(self) -> ProjectAPIClient:
        if self._client is None or self._client.is_shutdown:
            _, self._client, self._info = self._connect(self.path, self.timeout)
        return self._client

    def info(self) -> Dict[str, Any]:
        """The server's ServerInfo as JSON (a copy)."""
        return dict(self._info)

    @property
    def platform(self) -> str:
        return str(self._info.get("platform_name"))

    @property
    def options(self) -> List[OptionSpec]:
        return parse_option_specs(self._info)

    def _prepare(self, method: Optional[str], options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        return prepare_options(self._info, options, method, _describe(self.path, self._info))

    def close(self) -> None:
        """Shut the server down (it is restarted if the object is used again)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TemplateProject(_Project):
    """A template folder; its server stays up until close()."""

    _want_template = True

    @classmethod
    def from_directory(
        cls, path: PathLike, timeout: Optional[float] = DEFAULT_TIMEOUT_SEC, *, debug: bool = False
    ) -> "TemplateProject":
        """Start the template's server; NotATemplateProjectError if it says it is not a template."""
        folder, client, info = cls._connect(path, timeout, debug)
        return cls(folder, client, info, timeout)

    def generate_project(
        self,
        mlf_path: PathLike,
        project_dir: PathLike,
        options: Optional[Mapping[str, Any]] = None,
        *,
        standalone_crt_dir: Optional[PathLike] = None,
    ) -> "GeneratedProject":
        """Generate a project from a Model Library Format tar into the new folder ``project_dir``.

        Paths are sent absolute (the server's cwd is the template folder). On any failure the
        folder, and any parent folders this call created, are removed again.
        """
        mlf = Path(mlf_path).absolute()
        if not mlf.is_file():
            raise ProjectError(f"model library format file {mlf} does not exist; export the model first")
        target = Path(project_dir).absolute()
        if target.exists() or target.is_symlink():
            raise ProjectError(f"project folder {target} already exists; remove it or choose a new path")
        crt: Optional[Path] = None
        if standalone_crt_dir is not None:
            crt = Path(standalone_crt_dir).absolute()
            if not crt.is_dir():
                raise ProjectError(f"standalone_crt folder {crt} does not exist")
        converted = self._prepare(None, options)
        sent = self._prepare("generate_project", converted)
        client = self._ensure_client()
        created = _make_parents(target.parent)
        placeholder = None
        # The server generates into a folder of this call's own beside the target, renamed into
        # place when it is done: two commands generating into one folder never see, or remove,
        # each other's work (the loser's rename fails; it removes only its own folder).
        holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".generating", dir=str(target.parent)))
        staged = holder / target.name
        placed = False
        try:
            if crt is None:
                crt = placeholder = Path(tempfile.mkdtemp(prefix="microtvm-empty-standalone-crt-"))
            try:
                client.generate_project(mlf, crt, staged, sent)
            except Exception as err:
                if placeholder is not None and str(placeholder) in str(getattr(err, "data", "") or ""):
                    raise ProjectError(
                        f"the template in {self.path} needs TVM's standalone CRT, which today's "
                        "apache-tvm no longer ships: give the standalone_crt folder of a TVM <= 0.18 "
                        "build with --standalone-crt DIR (Python: standalone_crt_dir=)"
                    ) from err
                raise
            if not staged.is_dir():
                raise ProjectError(f"the template in {self.path} reported success but generated no folder")
            try:
                os.rename(staged, target)
            except OSError:
                raise ProjectError(f"project folder {target} already exists (another command made it meanwhile); choose a new path") from None
            placed = True
            try:
                return GeneratedProject.from_directory(target, options=converted, timeout=self.timeout)
            except (ProjectError, _client_mod.ProjectAPIErrorBase) as err:
                raise ProjectError(
                    f"the template generated {target}, but it cannot be used as a project "
                    f"({first_line(err)}); removed it"
                ) from err
        except BaseException:
            shutil.rmtree(holder, ignore_errors=True)  # before the parents it sits in
            _remove_created(target if placed else None, created)
            raise
        finally:
            shutil.rmtree(holder, ignore_errors=True)
            if placeholder is not None:
                shutil.rmtree(placeholder, ignore_errors=True)

    # TVM's name for the same thing.
    def generate_project_from_mlf(self, model_library_format_path: PathLike, project_dir: PathLike, options: Optional[Mapping[str, Any]] = None) -> "GeneratedProject":
        return self.generate_project(model_library_format_path, project_dir, options)


class GeneratedProject(_Project):
    """A generated project folder. ``options`` given here are used for every later call (merged
    under the per-call ones), as TVM does."""

    _want_template = False

    def __init__(self, path: Path, client: ProjectAPIClient, info: Dict[str, Any], timeout: Optional[float], options: Optional[Mapping[str, Any]] = None):
        super().__init__(path, client, info, timeout)
        try:
            self._options = self._prepare(None, options)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_directory(
        cls,
        path: PathLike,
        options: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT_SEC,
        *,
        debug: bool = False,
    ) -> "GeneratedProject":
        """Start the project's server; TemplateProjectError if it says it is a template."""
        folder, client, info = cls._connect(path, timeout, debug)
        return cls(folder, client, info, timeout, options)

    @property
    def model_library_format_path(self) -> Optional[str]:
        return self._info.get("model_library_format_path")

    def _merged(self, method: str, options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        merged = dict(self._options)
        merged.update(options or {})
        return self._prepare(method, merged)

    def build(self, options: Optional[Mapping[str, Any]] = None) -> Any:
        """Build the project; a failure the server reports becomes a BuildError with its text
        (for the host template: the telling compiler line first, then the compiler's last lines)."""
        from .project_api.server import ServerError
        from .template_paths import check_project_tools

        check_project_tools(self.path, "build")
        opts = self._merged("build", options)
        try:
            return self._ensure_client().build(opts)
        except ServerError as err:
            if type(err) is not ServerError:  # transport/version errors keep their own type
                raise
            raise BuildError(err.message) from err

    def flash(self, options: Optional[Mapping[str, Any]] = None) -> Any:
        from .template_paths import check_project_tools

        check_project_tools(self.path, "flash")
        opts = self._merged("flash", options)
        return self._ensure_client().flash(opts)

    def transport(self, options: Optional[Mapping[str, Any]] = None) -> "ProjectTransport":
        """A byte transport to the device: ``with project.transport() as t: t.write(...)``."""
        return ProjectTransport(self, self._merged("open_transport", options))

    def _take_client(self) -> ProjectAPIClient:
        """Hand the server over to a transport session; the project starts a new one if used again."""
        client = self._ensure_client()
        self._client = None
        return client


class ProjectTransport:
    """One transport session, on its own server process (closed with the session, like TVM).

    ``open()`` returns the TransportTimeouts (TVM's signature); as a context manager it yields
    itself, with ``.timeouts``, ``.read(n, timeout_sec)`` and ``.write(data, timeout_sec)``.
    """

    def __init__(self, project: GeneratedProject, options: Dict[str, Any]) -> None:
        self._project = project
        self._options = options
        self._client: Optional[ProjectAPIClient] = None
        self.timeouts: Any = None

    def open(self) -> Any:
        from .project_api import server

        if self._client is not None:
            raise ProjectError(f"the transport to {self._project.path} is already open")
        client = self._project._take_client()
        try:
            reply = client.open_transport(self._options)
            try:
                fields = reply["timeouts"]
                self.timeouts = server.TransportTimeouts(**{k: fields[k] for k in server.TransportTimeouts._fields})
            except (TypeError, KeyError) as err:
                raise MalformedReplyError(
                    f"the server in {self._project.path} answered open_transport without valid timeouts: {reply!r:.80}"
                ) from err
        except BaseException:
            client.close()
            raise
        self._client = client
        return self.timeouts

    def _live(self) -> ProjectAPIClient:
        if self._client is None:
            raise ProjectError(f"the transport to {self._project.path} is not open")
        return self._client

    def read(self, n: int, timeout_sec: Optional[float] = None) -> bytes:
        """1..n bytes; server.IoTimeoutError when none came in time."""
        return self._live().read_transport(n, timeout_sec)["data"]

    def write(self, data: bytes, timeout_sec: Optional[float] = None) -> None:
        self._live().write_transport(data, timeout_sec)

    def close(self) -> None:
        """close_transport, then shut the session's server down (even if close_transport fails)."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if not client.is_shutdown:
                client.close_transport()
        finally:
            client.close()

    def __enter__(self) -> "ProjectTransport":
        self.open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # the body's error is the one to report
            self.close()
        except Exception as close_err:  # noqa: BLE001
            _LOG.debug("closing the transport after an error also failed: %s", close_err)


def generate_project(
    template_dir: PathLike,
    mlf_path: PathLike,
    project_dir: PathLike,
    options: Optional[Mapping[str, Any]] = None,
    *,
    timeout: Optional[float] = DEFAULT_TIMEOUT_SEC,
    standalone_crt_dir: Optional[PathLike] = None,
) -> GeneratedProject:
    """Generate ``project_dir`` from the template in ``template_dir`` (its server is closed after)."""
    with TemplateProject.from_directory(template_dir, timeout=timeout) as template:
        return template.generate_project(mlf_path, project_dir, options, standalone_crt_dir=standalone_crt_dir)


def _make_parents(folder: Path) -> List[Path]:
    """mkdir -p ``folder``; return the folders created, deepest last."""
    missing: List[Path] = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    created: List[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            _remove_created(None, created)
            raise ProjectError(f"cannot create folder {path}: {err.strerror or err}") from None
        created.append(path)
    return created


def _remove_created(target: Optional[Path], created_parents: List[Path]) -> None:
    if target is not None:
        if target.is_symlink() or target.is_file():
            with contextlib.suppress(OSError):
                target.unlink()
        elif target.exists():
            shutil.rmtree(target, ignore_errors=True)
    for path in reversed(created_parents):
        with contextlib.suppress(OSError):
            path.rmdir()


__all__ = [
    "DEFAULT_TIMEOUT_SEC",
    "GeneratedProject",
    "NotATemplateProjectError",
    "OptionSpec",
    "ProjectTransport",
    "TemplateProject",
    "TemplateProjectError",
    "convert_option",
    "generate_project",
    "parse_option_specs",
    "prepare_options",
]
