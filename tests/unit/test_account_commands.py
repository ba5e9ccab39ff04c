"""The account scripts: only the platform's own user names, keys reduced to plain key lines, every
value quoted so that nothing breaks out, and the account listing's parser."""

from __future__ import annotations

import base64
import shlex

import pytest

from domain.compute.accounts import AccountSpec, AccountState
from domain.fleet.nodes import ReasonCode
from domain.fleet.remote import NodeCommandFailed
from infra.nodes.account_commands import (
    FENCE_EXIT,
    MARKER,
    accounts_command,
    authorized_keys,
    checked_user,
    cuda_line,
    ensure_account_command,
    ensure_account_script,
    parse_accounts,
    remove_account_command,
    remove_account_script,
)
from infra.nodes.layout import NodeLayout
from infra.nodes.operations import SshNodeOperations
from infra.nodes.ssh import SshDialer

LAYOUT = NodeLayout()
HOSTILE = "x'; touch /tmp/pwned; echo '$(reboot)`id`\"\\"


def _key(kind: str = "ssh-ed25519", body: bytes = b"k" * 32) -> str:
    blob = len(kind).to_bytes(4, "big") + kind.encode() + len(body).to_bytes(4, "big") + body
    return f"{kind} {base64.b64encode(blob).decode()}"


KEY, OTHER = _key(), _key(body=b"o" * 32)


def _ensure(account: AccountSpec, layout: NodeLayout = LAYOUT) -> str:
    return ensure_account_script(account, 7, prefix="gc", platform_group="gpucloud", layout=layout)


def _line(script: str, start: str) -> list[str]:
    """The first line of `script` starting with `start`, split as sh would (a quoted value may
    hold newlines, so the line runs on until its quotes close)."""
    lines = script.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    for end in range(first + 1, len(lines) + 1):
        try:
            return shlex.split("".join(lines[first:end]))
        except ValueError:  # a quote still open
            continue
    raise AssertionError(f"unbalanced quotes after {start!r}")


def _home_part(script: str) -> str:
    """The part run as the user: the `sh -c` argument of the setpriv line (quotes span lines)."""
    words = shlex.split(script[script.index("setpriv ") :])
    return words[words.index("-c") + 1]


@pytest.mark.parametrize("name", ["root", "gc", "gc1x", "gc1;reboot", "GC1", "xy1", "gc 1",
                                  "gc-1", "gc1\n", "g" + "c" * 40 + "1"])  # fmt: skip
def test_names_that_are_not_ours_are_refused(name: str) -> None:
    with pytest.raises(NodeCommandFailed) as refused:
        checked_user("gc", name)
    assert refused.value.code is ReasonCode.COMMAND_FAILED
    with pytest.raises(NodeCommandFailed):
        _ensure(AccountSpec(name, [KEY], [0]))
    with pytest.raises(NodeCommandFailed):
        remove_account_script(name, 7, prefix="gc", keep_home=False, layout=LAYOUT)
    assert checked_user("gc", "gc42") == "gc42"


def test_keys_become_plain_key_lines() -> None:
    assert authorized_keys([f"  {KEY} alice@laptop ", KEY, f"{OTHER}\n"]) == f"{KEY}\n{OTHER}\n"
    assert authorized_keys([f"{KEY} {HOSTILE}"]) == f"{KEY}\n"  # the comment is dropped
    assert authorized_keys([]) == ""
    ecdsa = _key("ecdsa-sha2-nistp256")
    assert authorized_keys([ecdsa]) == f"{ecdsa}\n"


@pytest.mark.parametrize("key", [
    f'command="touch /tmp/pwned" {KEY}',  # options would bind the key to a command
    f'from="*" {KEY}',
    f"{KEY}\n{OTHER}",  # a second line
    f"{KEY} comment\ncommand=x {OTHER}",
    f"{KEY}\0",
    "ssh-ed25519 not*base64",
    f"ssh-rsa {KEY.split()[1]}",  # the blob says ed25519
    "ssh-ed25519",
    "",
    HOSTILE,
])  # fmt: skip
def test_a_line_that_is_not_one_plain_key_is_refused(key: str) -> None:
    with pytest.raises(NodeCommandFailed) as refused:
        authorized_keys([KEY, key])
    assert "not one OpenSSH public key line" in str(refused.value)


def test_the_ensure_script_creates_the_user_and_sets_exactly_its_gpu_groups() -> None:
    script = _ensure(AccountSpec("gc42", [KEY], [3, 1, 3]))
    assert _line(script, "u=") == ["u=gc42"]
    assert "useradd -m -b /home -s /bin/bash -p '*' -U \"$u\"" in script
    assert _line(script, "usermod") == ["usermod", "-p", "*", "-e", "", "-G",
                                        "gpucloud,gpucloud-gpu1,gpucloud-gpu3", "$u"]  # fmt: skip
    assert _line(script, "for g in")[:6] == ["for", "g", "in", "gpucloud", "gpucloud-gpu1",
                                             "gpucloud-gpu3;"]  # fmt: skip
    home = _home_part(script)
    assert _line(home, "printf '%s'")[:3] == ["printf", "%s", f"{KEY}\n"]
    words = _line(home, "{ printf")
    assert words[:4] == ["{", "printf", "%s\\n", f"{cuda_line([1, 3])};"]
    assert words[4:] == ["grep", "-vF", MARKER, ".bashrc", "2>/dev/null", "||", "true;", "}",
                         "|", "put", ".bashrc", "0644"]  # fmt: skip
    assert f"grep -vF {shlex.quote(MARKER)} .profile 2>/dev/null || true; }} | put .profile" in home
    assert cuda_line([1, 3]) == "export CUDA_VISIBLE_DEVICES=1,3  # managed by gpucloud"
    assert cuda_line([]) == f"export CUDA_VISIBLE_DEVICES=  {MARKER}"  # no GPU: CUDA sees none


def test_no_value_breaks_out_of_its_quotes() -> None:
    layout = NodeLayout(home_dir=f"/srv/{HOSTILE}", gpu_group_prefix="gpu")
    script = _ensure(AccountSpec("gc7", [f"{KEY} {HOSTILE}"], [0]), layout)
    assert _line(script, "  mkdir -p") == ["mkdir", "-p", f"/srv/{HOSTILE}"]
    assert HOSTILE not in _home_part(script)  # the key's comment is not written at all
    command = ensure_account_command(AccountSpec("gc7", [KEY], [0]), 7, prefix="gc",
                                     platform_group="gpucloud", layout=layout, sudo=True)  # fmt: skip
    assert shlex.split(command) == ["sudo", "-n", "sh", "-e", "-c", _ensure(
        AccountSpec("gc7", [KEY], [0]), layout)]  # fmt: skip


def test_bad_groups_and_gpu_indices_are_refused() -> None:
    with pytest.raises(NodeCommandFailed):
        ensure_account_script(AccountSpec("gc1", [], [0]), 7, prefix="gc",
                              platform_group="bad group;", layout=LAYOUT)  # fmt: skip
    with pytest.raises(NodeCommandFailed):
        _ensure(AccountSpec("gc1", [], [10**6]))


def test_the_remove_script() -> None:
    removed = remove_account_script("gc42", 7, prefix="gc", keep_home=False, layout=LAYOUT)
    assert _line(removed, "u=") == ["u=gc42"]
    assert 'getent passwd "$u" >/dev/null || exit 0' in removed  # gone already: success
    assert "usermod -e 1 -G '' \"$u\"" in removed  # no logins, no GPU groups, first
    assert removed.index("usermod -e 1") < removed.index("pkill") < removed.index("userdel")
    assert 'userdel -r "$u" || [ "$?" -eq 6 ]' in removed
    kept = remove_account_script("gc42", 7, prefix="gc", keep_home=True, layout=LAYOUT)
    assert 'userdel "$u"' in kept and "userdel -r" not in kept
    assert 'chown 0:0 "$home" && chmod 0700 "$home"' in kept
    assert shlex.split(remove_account_command("gc42", 7, prefix="gc", keep_home=False, layout=LAYOUT,
                                             sudo=False)
                       ) == ["sh", "-e", "-c", removed]  # fmt: skip


def test_both_scripts_lock_the_account_and_check_its_fence_before_anything_else() -> None:
    ensure = _ensure(AccountSpec("gc42", [KEY], [0]))
    removed = remove_account_script("gc42", 9, prefix="gc", keep_home=False, layout=LAYOUT)
    for script, fence in ((ensure, "7"), (removed, "9")):
        assert _line(script, "fence=") == [f"fence={fence}"]
        assert _line(script, "d=") == ["d=/home/.gpucloud-accounts"]
        assert 'exec 9>>"$d/$u.lock"' in script
        lock = script.index("flock -w")
        check = script.index('[ "$fence" -ge "$seen" ] || refuse')
        raised = script.index('mv -f "$d/$u.fence.new" "$d/$u.fence"')
        assert lock < check < raised < script.index("getent passwd")  # before any change
        assert f"exit {FENCE_EXIT}" in script
    # The teardown leaves its tombstone before it deletes anything; an ensure refuses one.
    assert removed.index(': >>"$d/$u.gone"') < removed.index("usermod -e 1")
    assert ensure.index('[ ! -e "$d/$u.gone" ] || refuse') < ensure.index("useradd")
    assert ".gone" not in ensure.replace('[ ! -e "$d/$u.gone" ]', "")
    assert ensure.rstrip().endswith('sh "$home" 9>&-')  # the user's shell holds no lock


@pytest.mark.parametrize("fence", [-1, True, "7", 1.5])
def test_a_fence_that_is_not_a_generation_is_refused(fence: object) -> None:
    with pytest.raises(NodeCommandFailed):
        ensure_account_script(
            AccountSpec("gc1", [], [0]),
            fence,
            prefix="gc",  # type: ignore[arg-type]
            platform_group="gpucloud",
            layout=LAYOUT,
        )
    with pytest.raises(NodeCommandFailed):
        remove_account_script(
            "gc1",
            fence,
            prefix="gc",
            keep_home=False,  # type: ignore[arg-type]
            layout=LAYOUT,
        )


def test_the_account_listing() -> None:
    assert accounts_command("gc", LAYOUT) == (
        "getent passwd | grep -E '^gc[0-9]+:' || true; echo --groups--; "
        "getent group | grep -E '^gpucloud-gpu[0-9]+:' || true"
    )  # fmt: skip
    output = """\
gc42:x:1001:1001::/home/gc42:/bin/bash
gc7:x:1002:1002::/home/gc7:/bin/bash
gc9:x:1003:1003::/home/gc9:/bin/bash
--groups--
gpucloud-gpu0:x:990:gc42
gpucloud-gpu1:x:991:gc42,gc7,alice
gpucloud-gpu2:x:992:
gpucloud-gpu3:x:993:gc77
gpucloud-gpux:x:994:gc9
"""
    assert parse_accounts(output, "gc", LAYOUT) == [
        AccountState("gc42", (0, 1)), AccountState("gc7", (1,)), AccountState("gc9", ()),
    ]  # fmt: skip
    assert parse_accounts("--groups--\n", "gc", LAYOUT) == []
    with pytest.raises(NodeCommandFailed):
        parse_accounts("gc1:x:1:1::/h:/bin/sh\n", "gc", LAYOUT)


@pytest.mark.parametrize("options", [
    {"user_prefix": "Bad"}, {"user_prefix": "1gc"}, {"platform_group": "no such;group"},
    {"per_node_limit": 0}, {"per_node_limit": 11},
])  # fmt: skip
def test_operations_refuse_settings_that_cannot_work(options: dict[str, object]) -> None:
    settings: dict[str, object] = {"platform_group": "gpucloud", "user_prefix": "gc"} | options
    with pytest.raises(ValueError):
        SshNodeOperations(SshDialer(None), LAYOUT, **settings)  # type: ignore[arg-type]
