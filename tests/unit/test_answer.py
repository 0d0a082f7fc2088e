"""Answer files: the shipped templates render to golden files that their installers accept
(the Kickstart through pykickstart's own parser), and bad templates or answer files fail
with an AnswerError naming the field, the problem and the line."""

from __future__ import annotations

import pytest
from pykickstart.parser import KickstartParser  # type: ignore[import-untyped]
from pykickstart.version import RHEL9, RHEL10, makeVersion  # type: ignore[import-untyped]

from kumo.provision.answer import AnswerContext, AnswerError, check, render, render_checked, shipped
from tests.unit.test_domain_xml import check_golden

CALLBACK = "http://10.0.0.1:8000/builds/web1/callback?token=9f2c1e7d"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKumoKumoKumoKumoKumoKumoKumoKumoKumoKumo01 ops@kumo"

CTX = AnswerContext(
    kind="kickstart",
    name="web1",
    address="10.0.0.5/24",  # type: ignore[arg-type]
    gateway="10.0.0.1",  # type: ignore[arg-type]
    nameservers=("10.0.0.2",),  # type: ignore[arg-type]
    disk="vda",
    ssh_keys=(KEY, "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0 second key"),
    root_password_hash="$6$kumo$Hq0S5vVdIdQ5mwlb5n1m2sK3Tn8qO5Q8YgC6tGq4kEcE1",
    callback_url=CALLBACK,
    variables={"timezone": "Europe/Paris"},
)

SHIPPED = {
    "kickstart-rhel.ks.j2": ("kickstart", "answer-kickstart-rhel.ks"),
    "preseed-debian.cfg.j2": ("preseed", "answer-preseed-debian.cfg"),
    "autoinstall-ubuntu.yaml.j2": ("autoinstall", "answer-autoinstall-ubuntu.yaml"),
}


def _ctx(kind: str, **update: object) -> AnswerContext:
    return CTX.model_copy(update={"kind": kind, **update})


def test_the_three_examples_are_shipped() -> None:
    assert set(shipped()) == set(SHIPPED)


@pytest.mark.parametrize("template", sorted(SHIPPED))
def test_each_shipped_template_renders_to_its_golden_file_and_passes_its_check(
    template: str,
) -> None:
    kind, golden = SHIPPED[template]
    text = render_checked(shipped()[template], _ctx(kind))
    assert "web1" in text and CALLBACK in text and KEY in text
    assert "Europe/Paris" in text  # a profile variable reaches the template
    check_golden(golden, text)


@pytest.mark.parametrize("template", sorted(SHIPPED))
def test_each_shipped_template_also_renders_for_dhcp_no_keys_and_a_locked_password(
    template: str,
) -> None:
    kind, _ = SHIPPED[template]
    ctx = AnswerContext(kind=kind, name="db2", disk="sda", callback_url="http://kumo/cb?token=x")
    text = render_checked(shipped()[template], ctx)
    assert "db2" in text and "sda" in text and "vda" not in text


@pytest.mark.parametrize("version", [RHEL9, RHEL10])
def test_the_shipped_kickstart_is_valid_rhel_9_and_10_syntax(version: int) -> None:
    text = render(shipped()["kickstart-rhel.ks.j2"], _ctx("kickstart"))
    handler = makeVersion(version)
    KickstartParser(handler).readKickstartFromString(text)
    assert handler.network.network[0].hostname == "web1"
    assert handler.rootpw.isCrypted and handler.rootpw.password == CTX.root_password_hash
    assert [k.key for k in handler.sshkey.sshUserList] == [CTX.ssh_keys[0]]  # one per user
    assert any(CTX.ssh_keys[1] in s.script for s in handler.scripts)  # the others in a %post
    assert handler.clearpart.drives == ["vda"]


def test_the_kickstart_source_can_be_a_live_image() -> None:
    ctx = _ctx("kickstart", variables={"liveimg_url": "http://10.0.0.1:8000/images/root.img"})
    text = render_checked(shipped()["kickstart-rhel.ks.j2"], ctx)
    assert "liveimg --url=http://10.0.0.1:8000/images/root.img\n" in text
    assert "%packages" not in text


# --- render ------------------------------------------------------------------------------


def test_a_missing_variable_is_named_with_its_line() -> None:
    with pytest.raises(AnswerError) as e:
        render("text\nlang {{ language }}\n", _ctx("kickstart"))
    assert str(e.value) == "answer_template: line 2: undefined variable 'language'"
    assert e.value.field == "answer_template" and e.value.line == 2


def test_a_syntax_error_names_its_line() -> None:
    with pytest.raises(AnswerError) as e:
        render("text\n\nnetwork --hostname={{ name }\nreboot\n", _ctx("kickstart"))
    assert e.value.line == 3
    assert str(e.value).startswith("answer_template: line 3: syntax error: unexpected '}'")


@pytest.mark.parametrize(
    "escape",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ callback_url.__class__.__mro__[1].__subclasses__() }}",
        "{{ ssh_keys.__class__ }}",
        "{{ 'x' * 10**9 }}",
        "{{ 2 ** 100000 }}",
    ],
)
def test_the_sandbox_refuses_escapes_and_runaway_templates(escape: str) -> None:
    with pytest.raises(AnswerError, match=r"^answer_template: line 2: refused by the sandbox"):
        render("text\n" + escape, _ctx("kickstart"))


def test_a_profile_variable_may_not_shadow_what_kumo_sets() -> None:
    with pytest.raises(AnswerError, match=r"^variables: 'callback_url' is set by kumo"):
        render("{{ callback_url }}", _ctx("kickstart", variables={"callback_url": "http://evil/"}))


def test_a_template_may_default_a_variable_the_profile_does_not_set() -> None:
    assert (
        render("{{ tz | default('UTC') }} {{ timezone }}", _ctx("kickstart")) == "UTC Europe/Paris"
    )


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not an answer-file kind"):
        AnswerContext(kind="autoyast", name="web1", callback_url=CALLBACK)
    with pytest.raises(AnswerError, match=r"^kind: "):
        check("autoyast", "")


# --- Kickstart ---------------------------------------------------------------------------

GOOD_KS = f"text\nrootpw --lock\nautopart\n%post\ncurl -X POST {CALLBACK}\n%end\nreboot\n"


def test_a_minimal_kickstart_passes() -> None:
    check("kickstart", GOOD_KS, callback_url=CALLBACK)


def test_a_kickstart_with_an_unknown_command_fails_with_pykickstarts_message() -> None:
    with pytest.raises(AnswerError) as e:
        check("kickstart", "text\nfrobnicate --now\n" + GOOD_KS[5:])
    assert e.value.line == 2 and "Unknown command: frobnicate" in str(e.value)


def test_a_kickstart_with_a_bad_option_fails_with_pykickstarts_message() -> None:
    with pytest.raises(AnswerError) as e:
        check("kickstart", "text\nrootpw --lock\nautopart --frobnicate\n%post\nx\n%end\nreboot\n")
    assert e.value.line == 3 and "--frobnicate" in str(e.value)


def test_a_kickstart_without_reboot_fails() -> None:
    with pytest.raises(AnswerError, match="no 'reboot' command"):
        check("kickstart", GOOD_KS.replace("reboot\n", ""), callback_url=CALLBACK)


def test_a_kickstart_that_does_not_call_back_fails() -> None:
    without_post = GOOD_KS.replace(f"%post\ncurl -X POST {CALLBACK}\n%end\n", "")
    with pytest.raises(AnswerError, match="no %post section"):
        check("kickstart", without_post)
    other_url = GOOD_KS.replace("token=9f2c1e7d", "token=old")
    with pytest.raises(AnswerError, match="callback_url is missing"):
        check("kickstart", other_url, callback_url=CALLBACK)


# --- preseed -----------------------------------------------------------------------------


def _preseed() -> str:
    return render(shipped()["preseed-debian.cfg.j2"], _ctx("preseed"))


@pytest.mark.parametrize(
    "question",
    [
        "debian-installer/locale",
        "netcfg/get_hostname",
        "partman-auto/method",
        "passwd/root-password-crypted",
        "preseed/late_command",
        "finish-install/reboot_in_progress",
    ],
)
def test_a_preseed_missing_a_required_question_names_it(question: str) -> None:
    text = "\n".join(
        line
        for line in _preseed().splitlines()
        if f" {question} " not in line + " "
        and f" {question.replace('get_', '')} " not in line + " "
    )
    with pytest.raises(AnswerError, match=f"^answer_template: preseed: .*{question}.* is not set"):
        check("preseed", text, callback_url=CALLBACK)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("d-i partman-auto/method", "is not '<owner> <question> <type> <value>'"),
        ("d-i partman-auto/method strng regular", "type 'strng'"),
        ("d-i partman/confirm boolean yes", "boolean, not 'yes'"),
        ("d-i hostname string web1", "not a question name"),
    ],
)
def test_a_malformed_preseed_line_fails_with_its_line(line: str, reason: str) -> None:
    text = _preseed() + line + "\n"
    with pytest.raises(AnswerError) as e:
        check("preseed", text, callback_url=CALLBACK)
    assert reason in str(e.value) and e.value.line == len(text.splitlines())


def test_a_preseed_continuation_line_is_one_answer() -> None:
    text = _preseed().replace("string mkdir", "string \\\n  mkdir")
    check("preseed", text, callback_url=CALLBACK)
    with pytest.raises(AnswerError, match="callback_url is missing"):
        check("preseed", text.replace(CALLBACK, "http://other/"), callback_url=CALLBACK)


# --- autoinstall -------------------------------------------------------------------------


def _autoinstall() -> str:
    return render(shipped()["autoinstall-ubuntu.yaml.j2"], _ctx("autoinstall"))


def _without_block(text: str, key: str) -> str:
    """``text`` without the two-space-indented ``key:`` block of autoinstall."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith(f"  {key}:"):
            skipping = True
            continue
        if skipping and line.startswith("    "):
            continue
        skipping = False
        out.append(line)
    return "".join(out)


def test_autoinstall_without_storage_fails() -> None:
    with pytest.raises(AnswerError, match="storage is not set"):
        check("autoinstall", _without_block(_autoinstall(), "storage"), callback_url=CALLBACK)


def test_autoinstall_without_identity_or_user_data_fails() -> None:
    with pytest.raises(AnswerError, match="neither identity nor user-data"):
        check("autoinstall", _without_block(_autoinstall(), "identity"), callback_url=CALLBACK)


def test_autoinstall_without_the_callback_fails() -> None:
    with pytest.raises(AnswerError, match="late-commands is not set"):
        check("autoinstall", _without_block(_autoinstall(), "late-commands"))
    with pytest.raises(AnswerError, match="callback_url is missing"):
        check("autoinstall", _autoinstall(), callback_url=CALLBACK + "0")


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (("#cloud-config\n", ""), "first line must be '#cloud-config'"),
        (("version: 1", "version: 2"), "version must be 1"),
        (("late-commands:", "late_commands:"), "unknown key 'late_commands'"),
        (("shutdown: reboot", "shutdown: poweroff"), "shutdown must be 'reboot'"),
        (("  version: 1\n", "  version: 1\n   bad: [\n"), "not YAML"),
    ],
)
def test_a_broken_autoinstall_fails(edit: tuple[str, str], reason: str) -> None:
    text = _autoinstall()
    assert edit[0] in text
    with pytest.raises(AnswerError, match=reason):
        check("autoinstall", text.replace(*edit), callback_url=CALLBACK)


def test_a_kickstart_parse_warning_is_an_error_as_in_ksvalidator() -> None:
    twice = f'sshkey --username=root "{KEY}"\n'
    with pytest.raises(AnswerError, match="ssh user with the name root has already been defined"):
        check("kickstart", twice + twice + GOOD_KS, callback_url=CALLBACK)
