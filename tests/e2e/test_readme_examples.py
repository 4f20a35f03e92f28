"""Every curl example in README.md runs as written against `upscale-relay sim` + `serve`."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.simrelay import EXE, sim_and_serve

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
README = Path(__file__).resolve().parents[2] / "README.md"
STARTS = re.compile(r"^(?:[A-Z_]+=\$\()?curl\s")
# The quick start's client commands run too (sim and serve are what the test starts).
CLI = re.compile(r"^upscale-relay (?!sim|serve)\w")
HEREDOC = re.compile(r"<<-?'?(\w+)'?")
INLINE = re.compile(r"`(curl [^`]+)`")
# Each curl reports its status on stderr; a stream (-N) is cut after 3 s (exit 28, or 0).
WRAPPER = r"""
curl() {
  local extra=()
  for arg in "$@"; do [[ $arg == -N ]] && extra=(--max-time 3); done
  command curl "${extra[@]}" -w '%{stderr}HTTP %{http_code}\n' "$@"
  local rc=$?
  [[ $rc == 28 && ${#extra[@]} -gt 0 ]] && return 0
  return $rc
}
"""


def _complete(text: str) -> bool:
    """True once a command's quotes are closed and it does not end with a continuation."""
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def commands(readme: str) -> list[str]:
    """The curl commands of the README in order: fenced lines (with their continuations,
    multi-line quotes and here-documents) and inline `curl …` spans; and the quick start's
    `upscale-relay` client commands."""
    out: list[str] = []
    lines = readme.splitlines()
    fence: str | None = None
    quick_start = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if fence is None and line.startswith("#"):
            quick_start = line.lstrip("#").strip().startswith("Quick start")
        if quick_start and fence is not None and CLI.match(line):
            out.append(line)
        elif line.startswith("```"):
            fence = None if fence is not None else line[3:].strip() or "text"
            i += 1
            continue
        if fence is None:
            out += INLINE.findall(line)
        elif fence != "python" and STARTS.match(line):
            command = [line]
            while not _complete("\n".join(command)):
                i += 1
                command.append(lines[i])
            heredoc = HEREDOC.search(command[-1])
            if heredoc:
                while lines[i] != heredoc.group(1):
                    i += 1
                    command.append(lines[i])
            out.append("\n".join(command))
        i += 1
    return out


def test_the_readme_has_curl_examples_to_run() -> None:
    found = commands(README.read_text())
    assert len(found) >= 30
    assert "upscale-relay jobs show $JOB" in found
    assert all("…" not in c and "<" not in c.split("<<")[0] for c in found), "a placeholder left"
    # every /v1 example carries the token the quick start exports
    assert all("$TOKEN" in c for c in found if "/v1/" in c), [
        c for c in found if "/v1/" in c and "$TOKEN" not in c
    ]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_every_curl_example_in_the_readme_answers_2xx(tmp_path: Path) -> None:
    examples = commands(README.read_text())
    with sim_and_serve(tmp_path) as live:
        port = live.url.rsplit(":", 1)[1]
        script = [WRAPPER]
        for n, example in enumerate(examples):
            # the one change: the relay listens on a free port, not the README's 8000
            script += [f"echo '@@ {n}' >&2", example.replace("localhost:8000", f"localhost:{port}")]
            script.append('echo "@@ rc $?" >&2')
        script.append('echo "@@ vars $JOB $SUB $MSG $NEXT" >&2')
        done = subprocess.run(  # noqa: S603
            ["bash", "-c", "\n".join(script)],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=200,
            # as after `. .venv/bin/activate`
            env=live.cli_env(PATH=f"{Path(EXE).parent}:{os.environ['PATH']}"),
            cwd=tmp_path,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    statuses: dict[int, list[str]] = {}
    codes: dict[int, str] = {}
    current = -1
    for line in done.stderr.splitlines():
        if line.startswith("@@ rc "):
            codes[current] = line[6:]
        elif line.startswith("@@ vars "):
            job, sub, msg, cursor = line[8:].split()
        elif line.startswith("@@ "):
            current = int(line[3:])
            statuses[current] = []
        elif line.startswith("HTTP "):
            statuses[current].append(line[5:])
    failures = [
        (examples[n], statuses.get(n), codes.get(n))
        for n in range(len(examples))
        if codes.get(n) != "0"
        or (CLI.match(examples[n]) is None and not statuses.get(n))
        or any(not s.startswith("2") for s in statuses[n])
    ]
    assert not failures, "\n\n".join(f"{c}\n-> HTTP {s}, exit {r}" for c, s, r in failures)
    # the ids the examples chain through were set by the earlier examples
    assert job.startswith("job_") and sub.startswith("sub_") and msg.startswith("msg_")
    assert cursor.isdigit()
