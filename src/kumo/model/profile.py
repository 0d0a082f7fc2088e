"""Install profiles (issue #12): how a VM is installed over the network instead of cloned.

A profile names the installer's kernel and initrd (an image in kumo's image store, or an
http(s) URL on the site's network), the kernel's extra arguments, the kind of answer file its
installer reads, the answer file's Jinja2 template and the variables it gives that template.
``/kumo/profiles/<name>``."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import Field, field_validator

from kumo.model.common import Frozen, Name, check_name

# printable ASCII (the same in Python's and JSON Schema's regexes, unlike \s): [!-~]
URL = re.compile(r"^https?://[!-.0-~]+(/[!-~]*)?$")
ARG = re.compile(r"^[!-~]{1,512}$")  # one kernel argument: printable ASCII, no space
VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  # a Jinja2 identifier
TEMPLATE_MAX = 256 * 1024


class InstallKind(StrEnum):
    KICKSTART = "kickstart"  # Anaconda (RHEL, Fedora, Rocky, Alma): inst.ks=URL
    PRESEED = "preseed"  # debian-installer: url=URL
    AUTOINSTALL = "autoinstall"  # Ubuntu's subiquity: autoinstall ds=nocloud-net;s=URL


def boot_source(value: str) -> str:
    """A kernel or initrd: an http(s) URL, or the name of an image in the image store."""
    if URL.fullmatch(value):
        return value
    try:
        return check_name(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither an http(s) URL nor an image name") from None


def is_url(value: str) -> bool:
    return URL.fullmatch(value) is not None


class InstallProfile(Frozen):
    name: Name
    kind: InstallKind
    kernel: str
    initrd: str
    answer_template: str = Field(min_length=1, max_length=TEMPLATE_MAX)
    args: tuple[str, ...] = ()  # the kernel's extra arguments
    variables: dict[str, str] = Field(default_factory=dict)  # given to the template
    created_at: float = 0.0

    @field_validator("kernel", "initrd")
    @classmethod
    def _source(cls, value: str) -> str:
        return boot_source(value)

    @field_validator("args")
    @classmethod
    def _args(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for a in value:
            if not ARG.fullmatch(a):
                raise ValueError(f"{a!r} is not one kernel argument (no spaces)")
        return value

    @field_validator("variables")
    @classmethod
    def _variables(cls, value: dict[str, str]) -> dict[str, str]:
        for k in value:
            if not VARIABLE.fullmatch(k):
                raise ValueError(f"{k!r} is not a template variable name (letters, digits, _)")
        return value
