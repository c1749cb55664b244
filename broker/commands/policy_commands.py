"""``broker policy ...``: check, test, explain, diff, replay and schema, for people and for CI.

Exit status: 0 when all is well, 1 when a check has errors, a test fails or the diff/replay
finds nothing to load, 2 for a usage problem. ``--format json`` is for machines.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from broker.commands.storage_access import with_audit
from broker.errors import ConfigError
from broker.manifest import CommandTool, HttpTool
from broker.policy.check import FileSet, check_files, check_folders
from broker.policy.diff import diff_sets, markdown
from broker.policy.evaluate import PolicySet, outside_values
from broker.policy.model import Policy
from broker.policy.replay import replay
from broker.policy.testfile import PolicyTestFile, run_test_file
from broker.settings import BrokerSettings, load_settings
from broker.units import parse_duration

SCHEMAS: dict[str, Any] = {
    "policy": Policy,
    "policy-test": PolicyTestFile,
    "tool": Annotated[HttpTool | CommandTool, Field(discriminator="kind")],
    "broker-config": BrokerSettings,
}


def add_policy_commands(commands: Any) -> None:
    """Register ``broker policy`` and its subcommands on the top-level parser."""
    policy = commands.add_parser("policy", help="check, test, explain and diff policy files")
    sub = policy.add_subparsers(dest="policy_command", required=True)

    check = sub.add_parser("check", help="policies and tool manifests together")
    check.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="folders or files (default: policies/ and tools/, or those of --config)",
    )
    _location(check)
    check.add_argument("--format", choices=("text", "json", "github"), default="text")
    check.set_defaults(handler=_check)

    test = sub.add_parser("test", help="run the *_test.yaml files beside the policies")
    test.add_argument("paths", nargs="*", type=Path, help="test files or folders")
    _location(test)
    test.add_argument("--format", choices=("text", "json"), default="text")
    test.set_defaults(handler=_test)

    explain = sub.add_parser("explain", help="the decision for one call, and the rule behind it")
    explain.add_argument("--agent", required=True)
    explain.add_argument("tool")
    explain.add_argument("arguments", nargs="?", default="{}")
    explain.add_argument(
        "--tainted",
        action="append",
        default=[],
        help="text the agent read from outside (any shape; repeat for more)",
    )
    _location(explain)
    explain.add_argument("--format", choices=("text", "json"), default="text")
    explain.set_defaults(handler=_explain)

    diff = sub.add_parser("diff", help="what a change does to each agent, as Markdown")
    diff.add_argument("base", help="a git ref, or a folder holding policies/ and tools/")
    diff.add_argument("head", nargs="?", help="a folder (default: the working tree)")
    _location(diff)
    diff.add_argument("--format", choices=("markdown", "json"), default="markdown")
    diff.set_defaults(handler=_diff)

    replay_cmd = sub.add_parser("replay", help="re-decide recorded calls under these policies")
    replay_cmd.add_argument("--since", default="24h", help="how far back, e.g. 24h or 30m")
    replay_cmd.add_argument(
        "--audit", type=Path, help="the broker's database (default: the data_dir of --config)"
    )
    _location(replay_cmd)
    replay_cmd.add_argument("--format", choices=("text", "json"), default="text")
    replay_cmd.set_defaults(handler=_replay)

    schema = sub.add_parser("schema", help="JSON Schemas of the files, for editors")
    schema.add_argument("--kind", choices=sorted(SCHEMAS), help="one schema (default: all)")
    schema.add_argument("--write", type=Path, help="write <kind>.schema.json files here")
    schema.set_defaults(handler=_schema)


def _location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="take policies/ and tools/ from this config")
    parser.add_argument("--policies", type=Path, help="policies folder (default: policies)")
    parser.add_argument("--tools", type=Path, help="tools folder (default: tools)")


def _folders(args: argparse.Namespace) -> tuple[Path, Path]:
    policies, tools = Path("policies"), Path("tools")
    if args.config:
        settings = load_settings(args.config)
        policies, tools = settings.policies, settings.tools
    return args.policies or policies, args.tools or tools


def _load(args: argparse.Namespace) -> PolicySet:
    policies, tools = _folders(args)
    return check_folders(policies, tools).policy_set()


def _check(args: argparse.Namespace) -> int:
    files = _check_paths(args)
    if args.format == "json":
        print(json.dumps([p.as_dict() for p in files.problems], indent=2))
    else:
        for problem in files.problems:
            print(problem.github() if args.format == "github" else problem.text())
        if args.format == "text":
            errors = len(files.errors)
            print(
                f"{len(files.policies)} policies, {len(files.tools)} tools: {errors} error(s), "
                f"{len(files.problems) - errors} warning(s)",
                file=sys.stderr,
            )
    return 1 if files.errors else 0


def _check_paths(args: argparse.Namespace) -> FileSet:
    if not args.paths:
        return check_folders(*_folders(args))
    policy_paths: list[Path] = []
    tool_paths: list[Path] = []
    for path in args.paths:
        for file in sorted(path.glob("*.yaml")) if path.is_dir() else [path]:
            if file.stem.endswith("_test"):
                continue
            (tool_paths if _looks_like_tool(file) else policy_paths).append(file)
    return check_files(policy_paths, tool_paths)


def _looks_like_tool(path: Path) -> bool:
    try:
        head = path.read_text(encoding="utf-8")
    except OSError:
        return False
    return any(line.startswith("kind:") for line in head.splitlines())


def _test(args: argparse.Namespace) -> int:
    policies = _load(args)
    folder = _folders(args)[0]
    files: list[Path] = []
    for path in args.paths or [folder]:
        files += sorted(path.glob("*_test.yaml")) if path.is_dir() else [path]
    results = [run_test_file(path, policies) for path in files]
    failed = sum(1 for r in results for c in r.results if not c.passed)
    if args.format == "json":
        print(
            json.dumps(
                [
                    {
                        "file": str(r.path),
                        "agent": r.agent,
                        "unexercised": r.unexercised,
                        "cases": [
                            {
                                "name": c.case.name,
                                "passed": c.passed,
                                "expected": c.case.expected,
                                "got": c.decision.describe(),
                            }
                            for c in r.results
                        ],
                    }
                    for r in results
                ],
                indent=2,
            )
        )
        return 1 if failed else 0
    for result in results:
        print(result.path)
        for case in result.results:
            mark = "ok  " if case.passed else "FAIL"
            got = (
                ""
                if case.passed
                else f": expected {case.case.expected}, got {case.decision.describe()}"
            )
            print(f"  {mark} {case.case.name}{got}")
        for grant in result.unexercised:
            print(f"  not exercised: {grant}")
    total = sum(len(r.results) for r in results)
    unexercised = sum(len(r.unexercised) for r in results)
    print(
        f"{total - failed} passed, {failed} failed, {len(results)} file(s); "
        f"{unexercised} grant(s) no case exercises",
        file=sys.stderr,
    )
    return 1 if failed or not results else 0


def _explain(args: argparse.Namespace) -> int:
    decision = _load(args).decide(
        args.agent, args.tool, args.arguments, *outside_values(args.tainted)
    )
    if args.format == "json":
        print(
            json.dumps(
                {
                    "outcome": decision.outcome,
                    "reason": decision.reason,
                    "rule": decision.rule,
                    "message": decision.message,
                },
                indent=2,
            )
        )
    else:
        print(decision.describe())
    return 0


def _diff(args: argparse.Namespace) -> int:
    policies, tools = _folders(args)
    with _side(args.base, policies, tools) as old_side:
        old = check_folders(*old_side).policy_set()
    new = check_folders(*_head(args.head, policies, tools)).policy_set()
    changes = diff_sets(old, new)
    if args.format == "json":
        print(
            json.dumps(
                [{"risk": c.tag, "agent": c.agent, "change": c.text} for c in changes], indent=2
            )
        )
    else:
        print(markdown(changes, f"Policy changes against {args.base}"))
    return 0


def _head(head: str | None, policies: Path, tools: Path) -> tuple[Path, Path]:
    if head is None:
        return policies, tools
    return Path(head) / policies.name, Path(head) / tools.name


@contextmanager
def _side(base: str, policies: Path, tools: Path) -> Iterator[tuple[Path, Path]]:
    """A folder holding the base side: the folder itself, or the git ref unpacked."""
    if Path(base).is_dir():
        yield Path(base) / policies.name, Path(base) / tools.name
        return
    root = Path(_git("rev-parse", "--show-toplevel").strip())
    relative = [str(p.resolve().relative_to(root)) for p in (policies, tools)]
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", "--format=tar", base, "--", *relative],
            capture_output=True,
            check=False,
        )
        if archive.returncode != 0:
            message = archive.stderr.decode(errors="replace").strip()
            raise ConfigError(base, f"not a folder, and git cannot read it: {message}")
        tar_path = Path(tmp) / "base.tar"
        tar_path.write_bytes(archive.stdout)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp) / relative[0], Path(tmp) / relative[1]


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ConfigError("git", result.stderr.strip() or "git failed")
    return result.stdout


def _replay(args: argparse.Namespace) -> int:
    policies = _load(args)
    if args.audit is None and not args.config:
        raise ConfigError("--audit", "give --audit DB or --config FILE")
    source = args.audit if args.audit is not None else load_settings(args.config)
    since_ms = int((time.time() - parse_duration(args.since)) * 1000)
    report = with_audit(source, lambda audit: replay(audit, policies, since_ms))
    if args.format == "json":
        print(
            json.dumps(
                {
                    "decided": report.decided,
                    "skipped": report.skipped,
                    "changed": [
                        {
                            "call_id": r.row.call_id,
                            "agent": r.row.agent,
                            "tool": r.row.tool,
                            "was": r.was,
                            "now": r.now.describe(),
                        }
                        for r in report.changed
                    ],
                },
                indent=2,
            )
        )
        return 0
    for item in report.changed:
        print(
            f"{item.row.call_id} {item.row.agent} {item.row.tool}: {item.was} -> "
            f"{item.now.describe()}"
        )
    print(
        f"{report.decided} call(s) re-decided since {args.since}, {len(report.changed)} "
        f"would change, {report.skipped} skipped (arguments too large to record)",
        file=sys.stderr,
    )
    return 0


def _schema(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else sorted(SCHEMAS)
    schemas = {kind: json_schema(kind) for kind in kinds}
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        for kind, schema in schemas.items():
            (args.write / f"{kind}.schema.json").write_text(schema)
        return 0
    print(
        schemas[kinds[0]]
        if args.kind
        else json.dumps({kind: json.loads(text) for kind, text in schemas.items()}, indent=2)
    )
    return 0


def json_schema(kind: str) -> str:
    """The JSON Schema of one file kind, as text."""
    schema = TypeAdapter(SCHEMAS[kind]).json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
