"""The README and docs/ as a newcomer uses them: the front door is short and points at every
page, every config key is documented (and every documented key exists), every YAML example
loads with the broker's own loaders, and every command in them runs against a real broker
(the README's tour in its order, then each page's), with the exit status it should have."""

from __future__ import annotations

import io
import re
import shlex
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.cli import build_parser, main
from broker.client import ApprovalPending, BrokerClient
from broker.devmode import dev_key_path
from broker.pipeline import CALL_STAGES
from broker.policy.check import check_files
from broker.settings import (
    BrokerSettings,
    ConsoleOperator,
    ConsoleSettings,
    OidcSettings,
    SlackSettings,
    WitnessSettings,
    load_settings,
)
from broker.signing import AgentCredentials
from broker.testing import FakeWitness, RunningBroker
from tests.conftest import unavailable
from tests.test_examples import _run_dev, _start_upstream

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# Commands that cannot run inside a test: they are checked against the command line's parser.
# mcp serves until stopped; migrate needs a PostgreSQL database (tests/test_migrate.py runs it)
PARSE_ONLY = ("broker run ", "broker policy diff ", "broker mcp ", "broker migrate ")
# The exit status a command shows in the docs' own story, where it is not 0.
EXPECTED = {
    "broker reconcile": 1,  # nothing here lost its outcome: "has no lost outcome to reconcile"
    "broker report daily --config broker.yaml --post": 2,  # no slack section to post to
}
SLOW_FOLLOW = ("broker audit tail -f", ["--for", "1s"])  # a follow that ends by itself
DOCS_WITNESS = "https://witness.example.com/checkpoints"  # a FakeWitness stands in for it


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def commands(page: Path) -> list[str]:
    return [
        line.split("  #", 1)[0].strip()
        for block in blocks(page.read_text(), "sh")
        for line in block.splitlines()
        if line.strip()
    ]


# ---- the front door -----------------------------------------------------------------------


def test_the_readme_is_a_short_front_door() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 10_000
    first = blocks(readme, "sh")[0].splitlines()
    assert [line.split()[:2] for line in first] == [["make", "run"], ["make", "test"]]
    assert readme.index("make run") < 200
    diagram = blocks(readme, "mermaid")[0]
    positions = [diagram.index(f"    {stage}[") for stage in CALL_STAGES]
    assert positions == sorted(positions), "the diagram shows the stages out of order"
    for page in PAGES:
        assert f"(docs/{page.name})" in readme, f"{page.name} is not linked from the README"


def test_every_config_key_is_documented_and_every_documented_key_exists() -> None:
    page = (DOCS / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", page, re.M))
    keys = (
        set(BrokerSettings.model_fields)
        | set(SlackSettings.model_fields)
        | set(WitnessSettings.model_fields)
        | set(ConsoleSettings.model_fields)
        | set(ConsoleOperator.model_fields)
        | set(OidcSettings.model_fields)
    )
    assert keys - documented == set(), "keys the docs do not describe"
    assert documented - keys == set(), "documented keys the config does not have"


def test_every_picture_the_docs_show_exists() -> None:
    for page in PAGES:
        for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
            assert (page.parent / picture).is_file(), f"{page.name} shows {picture}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_yaml_example_loads(page: Path, tmp_path: Path) -> None:
    for n, block in enumerate(blocks(page.read_text(), "yaml")):
        kind = block.splitlines()[0]
        if kind == "# broker config":
            path = tmp_path / f"config-{n}.yaml"
            path.write_text(block)
            load_settings(path)
        elif kind in ("# tool manifest", "# policy"):
            folder = tmp_path / f"example-{n}"
            folder.mkdir()
            data = yaml.safe_load(block)
            path = folder / f"{data.get('agent') or data.get('name')}.yaml"  # as a file is named
            path.write_text(block)
            if kind == "# tool manifest":
                files = check_files([], [path])
            else:  # a policy, against the repository's tools
                files = check_files([path], sorted((ROOT / "tools").glob("*.yaml")))
            errors = [p.text() for p in files.problems if p.severity == "error"]
            assert errors == [], f"{page.name}, block {n}"
        else:
            pytest.fail(f"{page.name}: a yaml block must say what it is on its first line: {kind}")


def test_every_command_in_the_docs_is_one_the_command_line_has() -> None:
    parser = build_parser()
    makefile = (ROOT / "Makefile").read_text()
    seen = set()
    for page in [ROOT / "README.md", *PAGES]:
        for command in commands(page):
            words = shlex.split(command.split(" < ")[0].split(" > ")[0])
            if words[0] == "make":
                assert re.search(rf"^{words[1]}:", makefile, re.M), command
                continue
            assert words[0] == "broker", command
            parser.parse_args(words[1:])  # SystemExit (argparse's usage error) otherwise
            seen.add(words[1])
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert set(choices) - seen == set(), "commands of the CLI the docs never show"


# ---- the examples, run --------------------------------------------------------------------


class Session:
    """A copy of the repository's examples with its broker running: the docs' commands run in
    its folder (`examples/broker.yaml` and `broker.yaml` both name that broker)."""

    def __init__(
        self, root: Path, broker: RunningBroker, settings: BrokerSettings, witness: FakeWitness
    ) -> None:
        self.root = root
        self.witness = witness
        self.broker = broker
        self.settings = settings
        self.last_call = ""
        self.scratch = 0

    def agent(self) -> BrokerClient:
        key = AgentCredentials.load(dev_key_path(self.settings.data_dir, "invoice-agent"))
        return BrokerClient(self.broker.target, key, broker_id=self.settings.broker_id)

    def pending_payment(self) -> str:
        """A new payment over 1,000.00: it waits for a human (the example policy)."""
        self.scratch += 1
        with self.agent() as client, pytest.raises(ApprovalPending) as asked:
            client.call(
                "invoices.pay",
                {"id": "INV-0001", "amount": f"{1200 + self.scratch}.00"},  # not a loop
                idempotency_key=f"docs-{self.scratch}",
                wait_for_approval=False,
            )
        return asked.value.call_id

    def argv(self, command: str) -> tuple[list[str], str]:
        """The command's arguments as main() takes them, and what goes to its stdin."""
        line, _, redirect = command.split(" > ")[0].partition(" < ")
        words = [self.witness.url if w == DOCS_WITNESS else w for w in shlex.split(line)[1:]]
        stdin = (self.root / redirect.strip()).read_text() if redirect else "a-value-of-the-docs\n"
        if "CALL_ID" in words:
            needs_pending = words[0] in ("approve", "deny")
            self.last_call = self.pending_payment() if needs_pending else self.last_call
            words = [self.last_call if w == "CALL_ID" else w for w in words]
        if words[0] == "keygen":  # each in a folder of its own: the docs make the same key twice
            self.scratch += 1
            folder = self.root / f"keys-{self.scratch}"
            folder.mkdir()
            out = words.index("--out") + 1
            words[out] = str(folder / words[out])
        if command.startswith(SLOW_FOLLOW[0]):
            words += SLOW_FOLLOW[1]
        return words, stdin


@pytest.fixture
def session(
    world_readable: Path, sandbox: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Session]:
    if shutil.which("pdftotext") is None:
        unavailable("pdftotext is not installed (Debian: poppler-utils); the demo reads a PDF")
    root = world_readable
    for folder in ("policies", "tools", "examples"):
        shutil.copytree(ROOT / folder, root / folder)
    listen = "127.0.0.1:0"  # the broker binds a free port; the configs then name it
    operator = AgentCredentials.generate("ops-alice")
    operator.save(root / "ops-alice.key")  # the operator key of docs/approvals.md
    admin = [{"name": "ops-alice", "id": operator.key_id, "ed25519": operator.public_key_b64}]
    extra: dict[str, Any] = {"listen": listen, "admin_keys": admin}
    extra["audit_checkpoint_interval"] = "1s"
    extra["http_listen"] = "127.0.0.1:0"  # the example's console port may be in use here
    witness = FakeWitness().start()
    extra["audit_witnesses"] = [{"kind": "http", "url": witness.url}]
    config = yaml.safe_load((ROOT / "examples/broker.yaml").read_text())
    (root / "examples/broker.yaml").write_text(yaml.safe_dump({**config, **extra}))
    here = {"data_dir": ".broker", "policies": "policies", "tools": "tools"}
    here["master_key_file"] = ".broker/master.key"
    (root / "broker.yaml").write_text(yaml.safe_dump({**config, **extra, **here}))
    (root / "suspected-token.txt").write_text("not-a-token-anyone-used\n")
    (root / "invoices-prod-key.txt").write_text("a-prod-key-for-the-docs\n")
    settings = load_settings(root / "broker.yaml")
    api_key = _run_dev().prepare(settings)
    monkeypatch.chdir(root)
    monkeypatch.delenv("BROKER_MASTER_KEY", raising=False)
    upstream, port = _start_upstream(api_key)
    try:
        manifest = yaml.safe_load((root / "tools/invoices.yaml").read_text())
        manifest["base_url"] = f"http://127.0.0.1:{port}"
        (root / "tools/invoices.yaml").write_text(yaml.safe_dump(manifest))
        with RunningBroker(settings) as broker:
            for path in (root / "broker.yaml", root / "examples/broker.yaml"):
                written = yaml.safe_load(path.read_text())
                path.write_text(yaml.safe_dump({**written, "listen": broker.target}))
            yield Session(root, broker, settings, witness)
    finally:
        witness.stop()
        upstream.terminate()
        upstream.wait(10)


def run(session: Session, command: str, monkeypatch: pytest.MonkeyPatch) -> int:
    if command.startswith(PARSE_ONLY):
        build_parser().parse_args(shlex.split(command)[1:])
        return 0
    argv, stdin = session.argv(command)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(argv)


def expected(command: str) -> int:
    return next((code for prefix, code in EXPECTED.items() if command.startswith(prefix)), 0)


def test_the_readme_tour_and_every_page_run(
    session: Session, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tour = [c for c in commands(ROOT / "README.md") if c.startswith("broker ")]
    frozen = tour.index(next(c for c in tour if c.startswith("broker freeze")))
    thawed = tour.index(next(c for c in tour if c.startswith("broker unfreeze")))
    session.last_call = session.pending_payment()  # the demo's payment, waiting
    for n, command in enumerate(tour):
        code = run(session, command, monkeypatch)
        # between the freeze and the unfreeze, the agent's call is refused: AGENT_FROZEN
        want = 1 if frozen < n < thawed else 0
        out = capsys.readouterr()
        assert code == want, f"{command}\n{out.out}\n{out.err}"
        if want == 1:
            assert "AGENT_FROZEN" in out.err
    for page in PAGES:
        if page.name == "audit.md":  # its checkpoint command needs one signed
            _wait_for_checkpoint(capsys)
        for command in commands(page):
            if command.startswith("make "):
                continue  # the make targets are what CI itself runs
            code = run(session, command, monkeypatch)
            out = capsys.readouterr()
            assert code == expected(command), f"{page.name}: {command}\n{out.out}\n{out.err}"
            if command.startswith("broker audit checkpoint"):
                (session.root / "kept.json").write_text(out.out)
            if " > " in command:  # the docs keep what it printed
                (session.root / command.split(" > ")[1].strip()).write_text(out.out)


def _wait_for_checkpoint(capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(100):  # audit_checkpoint_interval is 1s here; bounded
        if main(["audit", "checkpoint", "--config", "broker.yaml"]) == 0:
            capsys.readouterr()
            return
        capsys.readouterr()
        time.sleep(0.2)  # the broker signs one within a second or so
    pytest.fail("no audit checkpoint was signed")
