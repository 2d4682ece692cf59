"""``emit completion`` and the scripts in ``completions/``.

The scripts are Typer's: on each Tab the shell runs ``emit`` with
``_EMIT_COMPLETE`` set and shows what it answers.  The bash script is
installed in a real ``bash`` and asked to complete; zsh and fish are asked
the way their scripts ask.  What completion should offer is read from emit's
own command tree, so a new command or option needs no change here.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from emitcli.cli import Shell, app

ROOT = Path(__file__).resolve().parents[1]
COMPLETIONS = ROOT / "completions"
SCRIPTS = {"bash": "emit.bash", "zsh": "_emit", "fish": "emit.fish"}
# The virtualenv's emit first on PATH: the scripts call ``emit`` by name.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
TIMEOUT = 60
TREE = typer.main.get_command(app)


def commands():
    return {name for name, command in TREE.commands.items() if not command.hidden}


def long_options(command_name):
    """Every ``--name`` of a command, its help option included."""
    command = TREE.commands[command_name]
    context = command.make_context(command_name, [], resilient_parsing=True)
    params = command.get_params(context)
    return {opt for param in params if not param.hidden for opt in param.opts if opt[:2] == "--"}


def bash_complete(*words):
    """Install the bash script in a fresh bash and complete ``words`` (the last may be "")."""
    script = f"""
        source {shlex.quote(str(COMPLETIONS / SCRIPTS["bash"]))}
        registered=$(complete -p emit) || exit 3
        function=$(sed -E 's/.* -F ([^ ]+) .*/\\1/' <<< "$registered")
        COMP_WORDS=({" ".join(shlex.quote(word) for word in words)})
        COMP_CWORD={len(words) - 1}
        "$function" emit
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    return {line for line in result.stdout.splitlines() if line}


def ask(shell, line, **extra):
    """Ask emit for candidates as the zsh or fish script does, with its variable and value."""
    script = (COMPLETIONS / SCRIPTS[shell]).read_text()
    variable, instruction = re.search(rf"(\w+)=(complete_{shell})\b", script).groups()
    env = {**ENV, variable: instruction, "_TYPER_COMPLETE_ARGS": line, **extra}
    result = subprocess.run(
        ["emit"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# The scripts -------------------------------------------------------------------


@pytest.mark.parametrize("shell", list(Shell))
def test_the_committed_script_is_what_emit_completion_prints(shell):
    printed = CliRunner().invoke(app, ["completion", shell])
    committed = COMPLETIONS / SCRIPTS[shell]

    assert printed.exit_code == 0, printed.output
    assert committed.read_text() == printed.stdout, (
        f"{committed.relative_to(ROOT)} is stale; "
        f"regenerate it: emit completion {shell} > {committed.relative_to(ROOT)}"
    )


def test_completions_holds_one_script_per_shell_and_nothing_else():
    assert sorted(path.name for path in COMPLETIONS.iterdir()) == sorted(SCRIPTS.values())
    assert set(SCRIPTS) == set(Shell)


def test_a_shell_emit_has_no_script_for_is_a_usage_error():
    result = CliRunner().invoke(app, ["completion", "powershell"])

    assert result.exit_code == 2
    assert "powershell" in result.output


# bash, for real ------------------------------------------------------------------


def test_bash_offers_the_commands_after_emit():
    assert bash_complete("emit", "") == commands()


def test_bash_completes_a_command_from_its_first_letters():
    assert bash_complete("emit", "dig") == {"digraph"}


@pytest.mark.parametrize("command", ["run", "digraph"])
def test_bash_offers_the_options_of_a_command_after_two_dashes(command):
    assert bash_complete("emit", command, "--") == long_options(command)


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("emit", "completion", ""), {shell.value for shell in Shell}),
        (("emit", "digraph", "--rankdir", ""), {"TB", "LR", "BT", "RL"}),
        (("emit", "digraph", "--format", "sv"), {"svg", "svg_inline", "svgz"}),
    ],
)
def test_bash_offers_the_values_an_option_or_argument_takes(words, expected):
    assert bash_complete(*words) == expected


# zsh and fish, as their scripts ask ----------------------------------------------


def test_zsh_is_answered_with_the_options_of_run():
    answer = ask("zsh", "emit run --")

    assert answer.startswith("_arguments")
    offered = set(re.findall(r'"(--[\w-]+)"', answer))
    assert offered == long_options("run")


def test_fish_is_answered_with_the_commands_and_their_help():
    answer = ask("fish", "emit ", _TYPER_COMPLETE_FISH_ACTION="get-args")

    offered = {line.split("\t")[0] for line in answer.splitlines() if line}
    assert offered == commands()
    assert all("\t" in line for line in answer.splitlines() if line)
