"""The node commands and their parsers: realistic output, quoting that no value escapes, and the
prepare script's "ensure" steps."""

from __future__ import annotations

import shlex

import pytest

from domain.fleet.nodes import NodeFacts, ReasonCode
from domain.fleet.remote import NodeCommandFailed, NodePrep, OsInfo
from infra.nodes.commands import (
    DRIVER_RELOAD_NEEDED,
    facts_command,
    parse_facts,
    parse_os,
    prepare_command,
    prepare_script,
    shell,
    udev_rules,
)
from infra.nodes.isolation import isolation_problems, isolation_script
from infra.nodes.layout import NodeLayout
from infra.nodes.ssh import Output, clip

UBUNTU = """\
Linux
5.15.0-119-generic
PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
UBUNTU_CODENAME=jammy
"""
OS = OsInfo("Linux", "5.15.0-119-generic", "ubuntu", "22.04")

FACTS = """\
192
MemTotal:       2113656784 kB
Filesystem         1024-blocks       Used  Available Capacity Mounted on
/dev/md0            7499645952 1203465216 5914122240      17% /home
"""

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJYV7k6u1oZ1b6+rGZ0mB8yq3y4cVtGQ8s0L7q0F8xXv"
HOSTILE = "x'; touch /tmp/pwned; echo '$(reboot)`id`\"\\"
PREP = NodePrep("gpucloud", [0, 1], [KEY])


def _tokens(line: str) -> list[str]:
    """How sh splits a simple line into words and operators."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def test_ubuntu_os_release_is_read() -> None:
    assert parse_os(UBUNTU) == OS


def test_os_release_defaults_follow_the_spec() -> None:
    rolling = "Linux\n6.9.7-arch1-1\n# a comment\nNAME='Arch Linux'\nID=arch\nBUILD_ID=rolling\n"
    assert parse_os(rolling) == OsInfo("Linux", "6.9.7-arch1-1", "arch", "")
    assert parse_os("Linux\n6.1.0\n") == OsInfo("Linux", "6.1.0", "linux", "")
    assert parse_os("Darwin\n23.5.0\n").system == "Darwin"  # the service decides what runs


@pytest.mark.parametrize("output", ["", "Linux\n", "\n\n", "Linux\n   \nID=ubuntu\n"])
def test_an_os_probe_without_uname_fails(output: str) -> None:
    with pytest.raises(NodeCommandFailed) as failed:
        parse_os(output)
    assert failed.value.code is ReasonCode.COMMAND_FAILED


def test_facts_are_read_in_mib() -> None:
    assert parse_facts(FACTS, OS) == NodeFacts(
        os_id="ubuntu", os_version="22.04", kernel="5.15.0-119-generic", cpus=192,
        ram_mib=2113656784 // 1024, disk_total_mib=7499645952 // 1024,
        disk_free_mib=5914122240 // 1024,
    )  # fmt: skip


def test_df_lines_with_spaces_and_translated_headers_are_read() -> None:
    output = ("8\nMemTotal: 16384000 kB\nDateisystem 1024-Blöcke Benutzt Verfügbar Kapazität "
              "Eingehängt auf\nmy pool/home 2048000 1024000 1024000 50% /srv/my data\n")  # fmt: skip
    facts = parse_facts(output, OS)
    assert (facts.cpus, facts.ram_mib, facts.disk_total_mib, facts.disk_free_mib) == (
        8, 16000, 2000, 1000)  # fmt: skip


@pytest.mark.parametrize("output", [
    "", "many\nMemTotal: 1 kB\nFilesystem\n/dev/x 1 1 1 1% /\n",
    "8\nMemFree: 1 kB\nFilesystem\n/dev/x 1 1 1 1% /\n",
    "8\nMemTotal: 1 kB\nFilesystem 1024-blocks Used Available Capacity Mounted on\n",
    "0\nMemTotal: 1 kB\nFilesystem\n/dev/x 1 1 1 1% /\n",
    "8\nMemTotal: 1 kB\nFilesystem\n/dev/x lots 1 1 1% /\n",
])  # fmt: skip
def test_unreadable_facts_fail(output: str) -> None:
    with pytest.raises(NodeCommandFailed) as failed:
        parse_facts(output, OS)
    assert failed.value.code is ReasonCode.COMMAND_FAILED


def test_the_data_dir_is_one_word_and_never_an_option() -> None:
    command = facts_command(NodeLayout(data_dir="/" + HOSTILE))
    words = _tokens(command)
    assert words[-3:] == ["-Pk", "--", "/" + HOSTILE]
    assert "touch" not in words and ";" not in words[words.index("df") :]


def test_shell_wraps_the_script_as_one_argument() -> None:
    script = f"echo {shlex.quote(HOSTILE)}\n"
    assert shlex.split(shell(script, sudo=False)) == ["sh", "-e", "-c", script]
    assert shlex.split(shell(script, sudo=True)) == ["sudo", "-n", "sh", "-e", "-c", script]


def test_the_prepare_script_ensures_groups_devices_and_ca_trust() -> None:
    script = prepare_script(PREP, NodeLayout())
    lines = script.splitlines()
    for group in ("gpucloud", "gpucloud-gpu0", "gpucloud-gpu1"):
        assert f"getent group {group} >/dev/null || groupadd -f -r {group}" in lines
    assert "chgrp gpucloud-gpu1 /dev/nvidia1 && chmod 0660 /dev/nvidia1" in lines
    missing = next(line for line in lines if line.startswith("[ -e /dev/nvidia0 ]"))
    assert "'GPU device /dev/nvidia0 is missing'" in missing and missing.endswith("exit 1; }")
    assert "/dev/nvidia2" not in script

    ensured = {
        _tokens(line)[1]: _tokens(line)[3] for line in _logical_lines(script)
        if line.startswith("ensure_file ")
    }  # fmt: skip
    assert ensured["/etc/ssh/gpucloud_user_ca.pub"] == KEY + "\n"
    assert ensured["/etc/udev/rules.d/70-gpucloud-gpu.rules"] == udev_rules([0, 1], NodeLayout())
    assert 'KERNEL=="nvidia1", GROUP="gpucloud-gpu1", MODE="0660"' in udev_rules([1], NodeLayout())
    dropin = ensured["/etc/ssh/sshd_config.d/60-gpucloud.conf"]
    assert "TrustedUserCAKeys /etc/ssh/gpucloud_user_ca.pub\n" in dropin
    # A changed drop-in leaves a marker that only a reload that worked removes, so a failed
    # reload is tried again by the next run; the config is checked (sshd -T) before it.
    marker = "/etc/ssh/sshd_config.d/60-gpucloud.conf.reload-pending"
    assert f'if [ "$changed" = 1 ]; then : >{marker}; fi' in lines
    reload = f"if [ -e {marker} ]; then step='reloading sshd'; reload_sshd; rm -f {marker}; fi"
    assert lines.index(reload) > next(i for i, ln in enumerate(lines) if "sshd -T -f" in ln)
    # Also due when the drop-in is newer than sshd's pid file: written, but never loaded.
    newer = next(line for line in lines if " -nt " in line)
    assert '/etc/ssh/sshd_config.d/60-gpucloud.conf -nt "$pidfile"' in newer
    assert lines.index(newer) < lines.index(reload)
    assert ensured["/etc/modprobe.d/gpucloud-nvidia.conf"].endswith(
        "options nvidia NVreg_ModifyDeviceFiles=0\n"
    )


def _logical_lines(script: str) -> list[str]:
    """The script's lines as sh reads them: a newline inside quotes (file contents) stays."""
    lines, current, quote, escaped = [], "", "", False
    for ch in script:
        if escaped:
            escaped = False
        elif quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "\\":
            escaped = True
        elif ch == "\n":
            lines.append(current)
            current = ""
            continue
        current += ch
    return [*lines, current] if current else lines


def test_a_test_layout_leaves_sshd_and_udev_alone() -> None:
    layout = NodeLayout(trusted_ca_file="/srv/node/ca.pub", sshd_dropin=None,
                        device_dir="/srv/node/dev", udev_rules=None, data_dir="/srv")  # fmt: skip
    script = prepare_script(NodePrep("gpucloud", [3], []), layout)
    assert "chgrp gpucloud-gpu3 /srv/node/dev/nvidia3" in script
    assert "systemctl" not in script and "udev" not in script and "sshd" not in script
    assert "ensure_file /srv/node/ca.pub 0644 ''" in script  # no CA yet: trust none


def test_prepare_is_written_as_repeatable_steps() -> None:
    script = prepare_script(PREP, NodeLayout())
    assert script == prepare_script(NodePrep("gpucloud", [1, 0, 1], [KEY]), NodeLayout())
    # Files are replaced atomically and only when their content differs.
    assert 'tmp=$(mktemp "$1.XXXXXX")' in script and 'mv -f "$tmp" "$1"' in script
    assert 'if cmp -s "$tmp" "$1"' in script


def test_a_hostile_key_or_path_stays_one_word() -> None:
    layout = NodeLayout(trusted_ca_file="/etc/" + HOSTILE, sshd_dropin=None,
                        device_dir="/dev/" + HOSTILE, udev_rules="/r/" + HOSTILE)  # fmt: skip
    script = prepare_script(NodePrep("gpucloud", [0], [KEY + " " + HOSTILE]), layout)
    for line in _logical_lines(script):
        if HOSTILE in line and not line.startswith("ensure_file "):
            assert any(HOSTILE in word for word in _tokens(line))
            assert "touch" not in _tokens(line) and "reboot" not in _tokens(line)
    ensured = [_tokens(ln) for ln in _logical_lines(script) if ln.startswith("ensure_file ")]
    assert ["ensure_file", "/etc/" + HOSTILE, "0644", f"{KEY} {HOSTILE}\n"] in ensured
    wrapped = prepare_command(NodePrep("gpucloud", [0], [KEY + HOSTILE]), layout, sudo=True)
    assert shlex.split(wrapped)[:5] == ["sudo", "-n", "sh", "-e", "-c"]
    assert len(shlex.split(wrapped)) == 6


@pytest.mark.parametrize("prep", [
    NodePrep("Bad;rm -rf /", [0], []),
    NodePrep("gpucloud", [0], [KEY + "\nssh-ed25519 AAAAinjected"]),
    NodePrep("gpucloud", [0], ["   "]),
    NodePrep("gpucloud", [-1], []),
])  # fmt: skip
def test_prepare_refuses_what_it_cannot_write_safely(prep: NodePrep) -> None:
    with pytest.raises(NodeCommandFailed) as failed:
        prepare_script(prep, NodeLayout())
    assert failed.value.code is ReasonCode.PREPARE_FAILED


@pytest.mark.parametrize("changes", [
    {"gpu_group_prefix": "GPU"}, {"gpu_group_prefix": "a" * 29}, {"gpu_group_prefix": "x;y"},
    {"device_dir": "dev"}, {"data_dir": "/home\n/etc"}, {"sshd_dropin": "relative.conf"},
])  # fmt: skip
def test_a_layout_refuses_unsafe_names(changes: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        NodeLayout(**changes)  # type: ignore[arg-type]


def test_a_trusted_ca_file_with_spaces_cannot_go_into_sshd_config() -> None:
    with pytest.raises(NodeCommandFailed):
        prepare_script(PREP, NodeLayout(trusted_ca_file="/etc/ssh/my keys.pub"))
    assert "my keys" in prepare_script(PREP, NodeLayout(trusted_ca_file="/etc/ssh/my keys.pub",
                                                         sshd_dropin=None))  # fmt: skip


def test_without_systemd_running_sshd_is_reloaded_by_the_hosts_init_or_its_pid() -> None:
    script = prepare_script(PREP, NodeLayout())
    # systemd only when it is PID 1's init: an installed but idle systemctl falls through.
    assert "if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then" in script
    assert "rc-service sshd reload" in script and "service ssh reload" in script
    assert "else sshd_hup; fi" in script
    # The pid comes from the PidFile sshd -T names, and must be a running sshd.
    assert 'sshd -T -f /etc/ssh/sshd_config | awk \'$1 == "pidfile"' in script
    assert 'kill -HUP "$pid"' in script and '"/proc/$pid/comm"' in script


def test_an_sshd_no_init_manages_is_only_signalled() -> None:
    layout = NodeLayout(sshd_config="/srv/node/sshd_config", sshd_reload="signal")
    script = prepare_script(PREP, layout)
    assert "reload_sshd() { sshd_hup; }" in script
    assert "systemctl" not in script and "rc-service" not in script
    assert "sshd -T -f /srv/node/sshd_config" in script
    with pytest.raises(ValueError):
        NodeLayout(sshd_reload="systemd")


def test_the_driver_option_is_reported_while_it_is_not_in_effect() -> None:
    lines = prepare_script(PREP, NodeLayout()).splitlines()
    report = next(line for line in lines if DRIVER_RELOAD_NEEDED in line)
    assert report.startswith('if [ "$changed" = 1 ] || grep -qsx ')
    assert "/proc/driver/nvidia/params" in report
    without = prepare_script(PREP, NodeLayout(nvidia_modprobe=None))
    assert "NVreg_ModifyDeviceFiles" not in without and DRIVER_RELOAD_NEEDED not in without


def test_a_failing_step_is_named_last_on_stderr() -> None:
    script = prepare_script(PREP, NodeLayout())
    assert 'echo "gpucloud: failed while $step (exit $rc)" >&2' in script
    assert "step='reloading sshd'" in script and "step='writing the sshd drop-in'" in script


def test_a_long_error_keeps_its_head_and_its_tail() -> None:
    said = "systemctl: System has not been booted with systemd as init system " + "x" * 900
    clipped = clip(said + " failed while reloading sshd")
    assert len(clipped) == 300
    assert clipped.startswith("systemctl: System has not been booted with systemd")
    assert clipped.endswith("failed while reloading sshd") and " ... " in clipped
    assert clip("short\nand\tflat") == "short and flat"
    failure = Output(1, "", said + "\ngpucloud: failed while reloading sshd (exit 1)", False)
    message = failure.failure()
    assert message.startswith("exit 1: systemctl: System has not been booted")
    assert message.endswith("gpucloud: failed while reloading sshd (exit 1)")


LAYOUT = NodeLayout(device_dir="/srv/dev", gpu_group_prefix="gpu")


def test_isolation_holds_when_each_group_opens_only_its_own_gpu() -> None:
    script = isolation_script([1, 0], LAYOUT)
    assert 'setpriv --reuid="$uid" --regid="$gid"' in script
    assert "sh /srv/dev/nvidia0 /srv/dev/nvidia1" in script  # positions follow the index order
    assert 'printf "none:"; try_as --clear-groups' in script
    assert isolation_problems("gpu 0: 0\ngpu 1: 1\nnone:\n", [0, 1], LAYOUT) == []


def test_isolation_problems_name_the_devices() -> None:
    problems = isolation_problems("gpu 0: 0 1\ngpu 1:\nnone:\n", [0, 1], LAYOUT)
    assert problems == [
        "/srv/dev/nvidia1 opens for the group of GPU 0",
        "/srv/dev/nvidia1 does not open for its own group",
    ]
    anyone = isolation_problems("gpu 0: 0 1\ngpu 1: 1\nnone: 1\n", [0, 1], LAYOUT)
    assert anyone == ["/srv/dev/nvidia1 opens for any user"]
    with pytest.raises(NodeCommandFailed):
        isolation_problems("gpu 0: 0\n", [0, 1], LAYOUT)  # GPU 1 and "none" never reported
    with pytest.raises(NodeCommandFailed):
        isolation_problems("gpu 0: 7\ngpu 1: 1\nnone:\n", [0, 1], LAYOUT)


def test_prepare_takes_the_node_lock_and_checks_its_fence_before_anything_else() -> None:
    script = prepare_script(NodePrep("gpucloud", [0], [KEY], fence=12, node_id=5), NodeLayout())
    lock = script.index("flock -w 90 8")
    assert "fence=12" in script
    assert lock < script.index("exit 75") < script.index("groupadd")
    assert "n=node-5" in script and 'exec 8>>"$d/$n.lock"' in script
    with pytest.raises(NodeCommandFailed):
        prepare_script(NodePrep("gpucloud", [0], [KEY], fence=-1), NodeLayout())
