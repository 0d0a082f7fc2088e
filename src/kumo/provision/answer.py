"""Install answer files (Kickstart, preseed, autoinstall): rendered from a profile's Jinja2
template for one build, then checked the way the installer would read them. Pure: no I/O
except reading the shipped examples from the package (tests/unit/test_answer.py).

Templates come from users, so they run in Jinja2's immutable sandbox with undefined names
refused (a typo must fail the profile, not install ``hostname ``), and every failure -- a
syntax error, an undefined name, a sandbox refusal, an answer file its installer would
reject -- is one ``AnswerError`` naming the field (``answer_template`` or ``variables``)
and, where there is one, the line."""

from __future__ import annotations

import json
import re
import shlex
import warnings
from collections.abc import Callable
from importlib import resources
from ipaddress import IPv4Address, IPv4Interface
from types import TracebackType
from typing import Any

import jinja2
import yaml
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import Field, field_validator
from pykickstart.constants import (  # type: ignore[import-untyped]
    KS_REBOOT,
    KS_SCRIPT_POST,
)
from pykickstart.errors import (  # type: ignore[import-untyped]
    KickstartError,
    KickstartParseWarning,
)
from pykickstart.parser import KickstartParser  # type: ignore[import-untyped]
from pykickstart.version import DEVEL, makeVersion  # type: ignore[import-untyped]

from kumo.model.common import Frozen
from kumo.model.profile import InstallKind

KINDS = tuple(k.value for k in InstallKind)  # the profile's kinds: one list, in the model
TEMPLATE_FIELD = "answer_template"
MAX_ANSWER = 1024 * 1024  # a rendered answer file larger than this is a runaway template


class AnswerError(ValueError):
    """A template that does not render, or an answer file its installer would reject.
    ``field`` is the request field to blame, ``line`` the line in the template (render) or
    in the rendered answer file (check), when known."""

    def __init__(self, reason: str, *, field: str = TEMPLATE_FIELD, line: int | None = None):
        self.field = field
        self.line = line
        self.reason = reason
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{field}: {where}{reason}")


class AnswerContext(Frozen):
    """What a template receives. Every field is a template variable of the same name, and
    the profile's ``variables`` are template variables too (they may not shadow these)."""

    kind: str
    name: str  # the VM's name, its hostname
    address: IPv4Interface | None = None  # None: DHCP
    gateway: IPv4Address | None = None
    nameservers: tuple[IPv4Address, ...] = ()
    disk: str = "vda"  # the device the installer installs to, without /dev/
    ssh_keys: tuple[str, ...] = ()
    root_password_hash: str | None = None  # a crypt(3) string; None: root's password locked
    callback_url: str  # carries the build's one-time token
    variables: dict[str, str] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in KINDS:
            raise ValueError(f"{value!r} is not an answer-file kind: one of {', '.join(KINDS)}")
        return str(value)  # a StrEnum member becomes its plain value

    @field_validator("disk")
    @classmethod
    def _disk(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9]{1,15}", value):
            raise ValueError(f"{value!r} is not a disk device name such as vda")
        return value

    def names(self) -> dict[str, Any]:
        """The template's variables."""
        own = {k: getattr(self, k) for k in type(self).model_fields if k != "variables"}
        for key in self.variables:
            if key in own:
                raise AnswerError(f"{key!r} is set by kumo; choose another name", field="variables")
        return {**own, **self.variables}


def sample_context(kind: str, variables: dict[str, str]) -> AnswerContext:
    """What a profile's template is checked with when the profile is created: a VM as kumo
    would describe one (DHCP, one SSH key, root locked) and the profile's own variables."""
    return AnswerContext(
        kind=kind,
        name="example",
        ssh_keys=("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKumoSampleKeyOnlyForChecking example",),
        callback_url="http://kumo.invalid/api/v1/builds/example/callback?token=sample",
        variables=dict(variables),
    )


def _shquote(value: object) -> str:
    return shlex.quote(str(value))


def _yamlstr(value: object) -> str:
    # A JSON string is a YAML double-quoted scalar: a key with ': ' or '#' stays one string.
    return json.dumps(str(value), ensure_ascii=False)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, plus a bound on ``*`` and ``**``: a template such as
    ``{{ 'x' * 10**10 }}`` would otherwise exhaust kumo's memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError(f"exponent {right} is too large (at most 64)")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
                if sized and len(seq) * count > MAX_ANSWER:
                    raise SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


def _environment() -> _Sandbox:
    env = _Sandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    filters: dict[str, Callable[[object], str]] = {"shquote": _shquote, "yamlstr": _yamlstr}
    env.filters.update(filters)
    return env


_ENV = _environment()


def _template_line(tb: TracebackType | None) -> int | None:
    """The template line of a render error: Jinja2 rewrites its frames to the template's."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render(template_text: str, context: AnswerContext) -> str:
    """The answer file of ``template_text`` for ``context``, or AnswerError."""
    try:
        template = _ENV.from_string(template_text)
    except jinja2.TemplateSyntaxError as e:
        raise AnswerError(f"syntax error: {e.message}", line=e.lineno) from None
    names = context.names()
    try:
        text = template.render(names)
    except jinja2.UndefinedError as e:
        line = _template_line(e.__traceback__)
        found = re.fullmatch(r"'(\w+)' is undefined", e.message or "")
        reason = f"undefined variable {found.group(1)!r}" if found else f"undefined: {e.message}"
        raise AnswerError(reason, line=line) from None
    except SecurityError as e:
        raise AnswerError(
            f"refused by the sandbox: {e}", line=_template_line(e.__traceback__)
        ) from None
    except Exception as e:  # the template's own expression failed (1/0, a bad filter argument)
        line = _template_line(e.__traceback__)
        raise AnswerError(f"{type(e).__name__}: {e}", line=line) from None
    if len(text) > MAX_ANSWER:
        raise AnswerError(f"the answer file is {len(text)} bytes, more than {MAX_ANSWER}")
    return text


def render_checked(template_text: str, context: AnswerContext) -> str:
    """Render, then check the answer file for its kind, including the callback to kumo."""
    text = render(template_text, context)
    check(context.kind, text, callback_url=context.callback_url)
    return text


def check(kind: str, text: str, *, callback_url: str | None = None) -> None:
    """Raise AnswerError if ``text`` is not an answer file that its installer accepts and
    that installs unattended, calls kumo back and boots the installed system. With
    ``callback_url``, the callback must name that URL; without it, one must exist."""
    if kind == "kickstart":
        _check_kickstart(text, callback_url)
    elif kind == "preseed":
        _check_preseed(text, callback_url)
    elif kind == "autoinstall":
        _check_autoinstall(text, callback_url)
    else:
        raise AnswerError(
            f"{kind!r} is not an answer-file kind: one of {', '.join(KINDS)}", field="kind"
        )


# --- Kickstart ---------------------------------------------------------------------------


def _check_kickstart(text: str, callback_url: str | None) -> None:
    # As pykickstart's ksvalidator does: the newest syntax, warnings (deprecated or
    # ignored options) are errors. %include is not followed: kumo has no such file.
    handler = makeVersion(DEVEL)
    parser = KickstartParser(handler, followIncludes=False, errorsAreFatal=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KickstartParseWarning)
        try:
            parser.readKickstartFromString(text)
        except KickstartError as e:
            raise AnswerError(f"Kickstart: {_one_line(e.message)}", line=e.lineno) from None
        except KickstartParseWarning as e:
            raise AnswerError(f"Kickstart: {_one_line(str(e))}") from None
        except Exception as e:  # ksvalidator's "General error in input file"
            raise AnswerError(f"Kickstart: {type(e).__name__}: {e}") from None
    if handler.reboot.action != KS_REBOOT:
        raise AnswerError(
            "the Kickstart has no 'reboot' command: the installer would wait at its end "
            "instead of booting the installed system"
        )
    posts = [s.script for s in handler.scripts if s.type == KS_SCRIPT_POST]
    if not posts:
        raise AnswerError("the Kickstart has no %post section to call kumo back")
    if callback_url is not None and not any(callback_url in body for body in posts):
        raise AnswerError("no %post section calls kumo back (the callback_url is missing)")


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


# --- preseed -----------------------------------------------------------------------------

_DEBCONF_TYPES = frozenset(
    {"string", "boolean", "select", "multiselect", "note", "password", "text", "title", "error"}
)

# Each entry: (the questions any one of which answers it, why debian-installer needs it).
# Without these it stops and asks, so the install never calls back.
_PRESEED_REQUIRED: tuple[tuple[tuple[str, ...], str], ...] = (
    (("debian-installer/locale", "localechooser/"), "the installer's language and locale"),
    (("netcfg/get_hostname", "netcfg/hostname"), "the hostname"),
    (("partman-auto/method",), "how to partition the disk"),
    (("partman/confirm",), "the confirmation to write the partitions"),
    (("partman/confirm_nooverwrite",), "the confirmation to overwrite the disk"),
    (("partman/choose_partition",), "the end of partitioning"),
    (("passwd/root-password-crypted", "passwd/root-password", "passwd/username"), "an account"),
    (("preseed/late_command",), "the callback to kumo"),
    (("finish-install/reboot_in_progress",), "the reboot into the installed system"),
)


def _preseed_lines(text: str) -> list[tuple[int, str]]:
    """Logical lines with the number of their first line: a trailing backslash continues a
    line (debconf-set-selections)."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if pending is not None:
            start, head = pending
            pending = None
            line = head + raw.lstrip()
        else:
            start, line = number, raw
        if line.endswith("\\"):
            pending = (start, line[:-1])
            continue
        out.append((start, line))
    if pending is not None:
        out.append(pending)
    return out


def _check_preseed(text: str, callback_url: str | None) -> None:
    answers: dict[str, tuple[str, str]] = {}  # question -> (type, value)
    for number, line in _preseed_lines(text):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(None, 3)
        if len(fields) < 3:
            raise AnswerError(
                f"preseed: {line.strip()!r} is not '<owner> <question> <type> <value>'", line=number
            )
        _owner, question, qtype = fields[:3]
        value = fields[3].strip() if len(fields) == 4 else ""
        if "/" not in question:
            raise AnswerError(
                f"preseed: {question!r} is not a question name such as netcfg/get_hostname",
                line=number,
            )
        if qtype not in _DEBCONF_TYPES:
            allowed = ", ".join(sorted(_DEBCONF_TYPES))
            raise AnswerError(
                f"preseed: {question} has type {qtype!r}; types are {allowed}", line=number
            )
        if qtype == "boolean" and value not in ("true", "false"):
            raise AnswerError(f"preseed: {question} is boolean, not {value!r}", line=number)
        answers[question] = (qtype, value)
    for questions, purpose in _PRESEED_REQUIRED:
        if not any(
            q in answers or (q.endswith("/") and any(a.startswith(q) for a in answers))
            for q in questions
        ):
            raise AnswerError(f"preseed: {' or '.join(questions)} is not set ({purpose})")
    for confirm in ("partman/confirm", "partman/confirm_nooverwrite"):
        if answers[confirm][1] != "true":
            raise AnswerError(f"preseed: {confirm} must be true, or the installer stops to ask")
    late = answers["preseed/late_command"][1]
    if not late or (callback_url is not None and callback_url not in late):
        raise AnswerError(
            "preseed: preseed/late_command does not call kumo back (the callback_url is missing)"
        )


# --- autoinstall -------------------------------------------------------------------------

# The keys of autoinstall version 1 (Ubuntu's reference); since 24.04 any other key is a
# fatal validation error, so a typo such as 'late_commands' is caught here instead.
_AUTOINSTALL_KEYS = frozenset(
    {
        "version", "interactive-sections", "early-commands", "locale", "refresh-installer",
        "keyboard", "source", "network", "proxy", "apt", "storage", "identity",
        "active-directory", "ubuntu-pro", "ssh", "codecs", "drivers", "oem", "snaps",
        "debconf-selections", "packages", "kernel", "kernel-crash-dumps", "timezone",
        "updates", "shutdown", "late-commands", "error-commands", "reporting", "user-data",
        "zdevs",
    }
)  # fmt: skip


def _check_autoinstall(text: str, callback_url: str | None) -> None:
    if text.split("\n", 1)[0].rstrip() != "#cloud-config":
        raise AnswerError("autoinstall: the first line must be '#cloud-config'", line=1)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise AnswerError(
            f"autoinstall: not YAML: {_one_line(str(getattr(e, 'problem', e)))}", line=line
        ) from None
    config = doc.get("autoinstall") if isinstance(doc, dict) else None
    if not isinstance(config, dict):
        raise AnswerError("autoinstall: no 'autoinstall:' mapping at the top level")
    unknown = sorted(str(k) for k in config if k not in _AUTOINSTALL_KEYS)
    if unknown:
        raise AnswerError(
            f"autoinstall: unknown key {unknown[0]!r} (Ubuntu's installer refuses it)"
        )
    if config.get("version") != 1:
        raise AnswerError(f"autoinstall: version must be 1, not {config.get('version')!r}")
    identity = config.get("identity")
    if identity is None and "user-data" not in config:
        raise AnswerError(
            "autoinstall: neither identity nor user-data is set (no account to log in with)"
        )
    if identity is not None:
        missing = [
            k
            for k in ("hostname", "username", "password")
            if not isinstance(identity, dict) or not identity.get(k)
        ]
        if missing:
            raise AnswerError(f"autoinstall: identity.{missing[0]} is not set")
    if not isinstance(config.get("storage"), dict) or not config["storage"]:
        raise AnswerError(
            "autoinstall: storage is not set (the installer would stop to ask for a disk layout)"
        )
    if config.get("shutdown", "reboot") != "reboot":
        raise AnswerError("autoinstall: shutdown must be 'reboot' so the installed system boots")
    commands = config.get("late-commands")
    if not isinstance(commands, list) or not commands:
        raise AnswerError("autoinstall: late-commands is not set (the callback to kumo)")
    joined = [
        c if isinstance(c, str) else " ".join(map(str, c)) if isinstance(c, list) else None
        for c in commands
    ]
    if None in joined:
        raise AnswerError("autoinstall: each late-command is a string or a list of strings")
    if callback_url is not None and not any(callback_url in c for c in joined if c is not None):
        raise AnswerError(
            "autoinstall: no late-command calls kumo back (the callback_url is missing)"
        )


# --- shipped examples --------------------------------------------------------------------


def shipped() -> dict[str, str]:
    """The example templates shipped with kumo, by file name (``kickstart-rhel.ks.j2``…)."""
    folder = resources.files("kumo.provision") / "templates"
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".j2")
    }
