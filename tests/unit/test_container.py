"""The container image, without a Docker engine: the Dockerfile against the code, and the wheel.

The Dockerfile is read with a small parser (continuation lines, comments, JSON arguments)
and checked against pyproject.toml, the settings and the CLI: what it copies, who it runs
as, what it runs, which port it exposes and what its health check asks. The health check's
own command runs against a real ops server. The wheel the builder stage makes is built from
the same files, installed into a throwaway venv and run, so a module or migration that
would be missing from the image fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from zipfile import ZipFile

import pytest

from config.settings import ENV_PREFIX, Settings
from pipelines.cli import _parser
from pipelines.health import Health, serve_ops
from state.database import head_revision

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

# What a runtime stage must not be able to do: compile code or install packages.
BUILD_TOOLS = frozenset(
    {"gcc", "g++", "cc", "clang", "make", "build-essential", "apt-get", "apt", "apk", "pip"}
)
HEALTHCHECK_URL = re.compile(r"http://127\.0\.0\.1:%s(/[a-z]+)")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == keyword]

    def only(self, keyword: str) -> str:
        (arguments,) = self.arguments(keyword)
        return arguments


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuation lines joined."""
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # a comment may sit between continuation lines, too
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        keyword, _, arguments = " ".join([*pending, line]).partition(" ")
        pending = []
        yield keyword.upper(), arguments.strip()
    assert not pending, "the Dockerfile ends inside a continuation line"


def _global_arguments() -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults: what FROM lines may name."""
    defaults: dict[str, str] = {}
    for keyword, arguments in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if keyword == "FROM":
            break
        assert keyword == "ARG", f"{keyword} before the first FROM"
        name, _, default = arguments.partition("=")
        defaults[name] = default
    return defaults


def _stages() -> list[Stage]:
    """The stages, each FROM resolved with the global ARGs' defaults (what users build)."""
    defaults = _global_arguments()
    stages: list[Stage] = []
    for keyword, arguments in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if keyword == "FROM":
            base, _, name = arguments.partition(" AS ")
            resolved = re.sub(r"\$\{(\w+)\}", lambda match: defaults[match[1]], base.strip())
            stages.append(Stage(resolved, name.strip() or None))
        elif stages:
            stages[-1].instructions.append((keyword, arguments))
    return stages


def _builder() -> Stage:
    (builder,) = [stage for stage in _stages() if stage.name == "builder"]
    return builder


def _runtime() -> Stage:
    return _stages()[-1]


def _exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) argument list; the shell form is not used in this file."""
    value = json.loads(arguments)
    assert isinstance(value, list), f"not an exec-form list: {arguments}"
    return [str(item) for item in value]


def _healthcheck_command() -> list[str]:
    options, _, command = _runtime().only("HEALTHCHECK").partition(" CMD ")
    assert command, "HEALTHCHECK has no CMD"
    assert "--timeout=" in options, "a hung check must time out"
    return _exec_form(command)


def _pyproject() -> dict[str, object]:
    with PYPROJECT.open("rb") as stream:
        return tomllib.load(stream)


def _packages() -> list[str]:
    setuptools = _pyproject()["tool"]["setuptools"]  # type: ignore[index]
    packages: list[str] = setuptools["packages"]
    return packages


def _top_level_packages() -> set[str]:
    return {package.split(".")[0] for package in _packages()}


def _console_scripts() -> dict[str, str]:
    scripts: dict[str, str] = _pyproject()["project"]["scripts"]  # type: ignore[index]
    return scripts


def _copied_sources(stage: Stage) -> set[str]:
    """What the stage copies from the build context (not from other stages)."""
    sources: set[str] = set()
    for arguments in stage.arguments("COPY"):
        if arguments.startswith("--from="):
            continue
        words = [word for word in arguments.split() if not word.startswith("--")]
        sources.update(word.rstrip("/") for word in words[:-1])
    return sources


# --- the Dockerfile ----------------------------------------------------------------------


def test_the_builder_copies_every_package_and_nothing_else() -> None:
    copied = _copied_sources(_builder())
    assert copied >= _top_level_packages() | {"pyproject.toml", "README.md"}
    assert copied <= _top_level_packages() | {"pyproject.toml", "README.md"}, (
        "the builder copies something that is not part of the wheel"
    )


def test_the_build_context_lets_in_what_the_builder_copies() -> None:
    rules = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", ".dockerignore is an allow-list: everything else stays out"
    allowed = {rule[1:] for rule in rules if rule.startswith("!")}
    assert allowed == _copied_sources(_builder())


def test_builder_and_runtime_share_one_exactly_pinned_slim_base_by_default() -> None:
    # The venv's interpreter is a symlink to the base image's Python: it must be there.
    stages = {stage.name: stage for stage in _stages()}
    assert list(stages) == ["no-wheels", "wheels", "builder", None]
    bases = {stages[name].base for name in ("no-wheels", "builder", None)}
    assert len(bases) == 1
    (base,) = bases
    image, _, tag = base.partition(":")
    assert image == "python"
    assert re.fullmatch(r"3\.11\.\d+-slim-bookworm", tag), (
        "an exact Python release; slim carries no compiler"
    )


def test_by_default_the_builder_takes_its_wheels_from_pypi_not_from_a_wheels_image() -> None:
    stages = {stage.name: stage for stage in _stages()}
    assert stages["wheels"].base == "no-wheels", "the empty /wheels folder by default"
    assert stages["no-wheels"].arguments("COPY") == []
    assert "PIP_NO_INDEX=0" in _builder().arguments("ARG"), "PyPI is used unless told not to"
    assert "--from=wheels /wheels /wheels" in _builder().arguments("COPY")


def test_the_runtime_stage_copies_only_the_venv_and_installs_nothing() -> None:
    runtime = _runtime()
    assert runtime.arguments("COPY") == ["--from=builder /opt/venv /opt/venv"]
    for command in runtime.arguments("RUN"):
        words = set(re.split(r"[\s;&|]+", command))
        assert not words & BUILD_TOOLS, f"the runtime stage runs {words & BUILD_TOOLS}"


def test_the_runtime_stage_runs_as_a_numeric_non_root_user() -> None:
    user, _, group = _runtime().only("USER").partition(":")
    assert user.isdigit(), "numeric, so runAsNonRoot can verify it"
    assert int(user) != 0
    assert group.isdigit()
    assert int(group) != 0
    assert any(f"--uid {user}" in command for command in _runtime().arguments("RUN"))


def test_the_entrypoint_is_the_console_script_and_the_default_command_runs_the_worker() -> None:
    runtime = _runtime()
    assert _exec_form(runtime.only("ENTRYPOINT")) == ["payment-worker"]
    assert _console_scripts() == {"payment-worker": "pipelines.cli:main"}
    arguments = _parser().parse_args(_exec_form(runtime.only("CMD")))
    assert (arguments.group, arguments.pipeline) == ("run", "worker")


def test_the_exposed_port_is_the_default_metrics_port() -> None:
    assert _runtime().only("EXPOSE").split() == [str(Settings.model_fields["metrics_port"].default)]


def test_the_healthcheck_asks_for_liveness_on_the_default_metrics_port() -> None:
    command = _healthcheck_command()
    assert command[:2] == ["python", "-c"]
    (path,) = HEALTHCHECK_URL.findall(command[2])
    assert path == "/healthz"
    default_port = Settings.model_fields["metrics_port"].default
    assert f"os.environ.get('{ENV_PREFIX}METRICS_PORT', '{default_port}')" in command[2]


def _run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    command = _healthcheck_command()
    environment = {**os.environ, f"{ENV_PREFIX}METRICS_PORT": str(port)}
    return subprocess.run(
        [sys.executable, *command[1:]],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_the_healthcheck_passes_against_the_ops_server_on_the_configured_port() -> None:
    # Not ready (no pipeline, no database): liveness must hold all the same.
    server = serve_ops("127.0.0.1", 0, Health(lambda: False))
    try:
        result = _run_healthcheck(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr


def test_the_healthcheck_fails_when_nothing_answers() -> None:
    assert _run_healthcheck(_unused_port()).returncode != 0


# --- the wheel the image installs --------------------------------------------------------


@dataclass(frozen=True)
class InstalledWheel:
    wheel: Path
    venv: Path

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        # Run from the venv's directory: the repository's packages are not on sys.path.
        return subprocess.run(
            [str(self.venv / "bin" / command[0]), *command[1:]],
            cwd=self.venv,
            env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _pip(*arguments: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *arguments],
        check=True,
        timeout=300,
    )


def _dependency_directories() -> list[str]:
    """Where the interpreter running the tests has its packages: .venv's site-packages."""
    return sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> InstalledWheel:
    """The builder stage's wheel, made from the files it copies, in a venv of its own.

    The venv has no system site-packages and no pip: the wheel goes in with --no-deps, by
    this interpreter's pip. Its dependencies are not downloaded: a .pth file, written
    after the install, appends this interpreter's site-packages (.venv's, which
    ``make install`` filled from pyproject.toml) to the venv's sys.path, behind the wheel.
    A path line in a .pth file is not processed as a site directory, so the .pth files
    there (the checkout's editable-install finder among them) do not run: the project
    itself comes from the wheel only. What this does not prove: that the wheel's declared
    dependencies are complete (.venv holds the dev extras too), which ``make install``
    and the image build show.
    """
    work = tmp_path_factory.mktemp("image")
    context = work / "src"
    context.mkdir()
    for source in sorted(_copied_sources(_builder())):
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, context / source)
    wheels = work / "wheels"
    _pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(context))
    (wheel,) = wheels.glob("payment_worker-*.whl")
    venv = work / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    _pip("--python", str(python), "install", "--no-deps", str(wheel))
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    assert Path(site_packages).is_relative_to(venv)
    dependencies = "".join(f"{directory}\n" for directory in _dependency_directories())
    (Path(site_packages) / "test-dependencies.pth").write_text(dependencies, encoding="utf-8")
    return InstalledWheel(wheel, venv)


def test_the_wheel_holds_every_module_of_the_packages(installed_wheel: InstalledWheel) -> None:
    with ZipFile(installed_wheel.wheel) as wheel:
        shipped = {name for name in wheel.namelist() if name.endswith(".py")}
    in_repository = {
        path.relative_to(ROOT).as_posix()
        for package in _top_level_packages()
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert in_repository - shipped == set(), (
        "modules missing from the wheel: add their packages to [tool.setuptools] packages"
    )


def test_the_installed_console_script_starts(installed_wheel: InstalledWheel) -> None:
    result = installed_wheel.run("payment-worker", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("run", "db", "topics", "sandbox", "send", "dlq"):
        assert command in result.stdout


def test_the_installed_package_runs_from_the_venv_with_its_migrations(
    installed_wheel: InstalledWheel,
) -> None:
    probe = (
        "import json, sys, sysconfig, pipelines.cli, state.database as database; "
        "print(json.dumps({'cli': pipelines.cli.__file__, "
        "'database': database.__file__, 'head': database.head_revision(), "
        "'site': sysconfig.get_path('purelib'), 'path': sys.path}))"
    )
    result = installed_wheel.run("python", "-c", probe)
    assert result.returncode == 0, result.stderr
    installed = json.loads(result.stdout)
    site_packages = str(installed_wheel.venv / "lib")
    assert installed["cli"].startswith(site_packages), "the checkout was imported, not the wheel"
    assert installed["database"].startswith(site_packages)
    assert str(ROOT) not in installed["path"], "the checkout is on the venv's sys.path"
    # The venv's own packages and .venv's, nothing else: not the base interpreter's
    # site-packages, which hold none of the dependencies on a fresh machine.
    seen = {entry for entry in installed["path"] if entry.endswith("-packages")}
    assert seen - set(_dependency_directories()) == {installed["site"]}
    # Alembic walks every revision file from the head down: a missing one breaks the chain.
    assert installed["head"] == head_revision()
