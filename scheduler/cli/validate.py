"""``skyfeast validate`` and ``skyfeast schema``: check a config file, print its JSON Schema."""

from __future__ import annotations

import argparse

from skyfeast.scheduler.cli.common import add_config, print_json


def register(sub) -> None:
    p = sub.add_parser("validate", help="check a config file (and the Feast repo it names)")
    add_config(p)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("schema", help="print the JSON Schema of skyfeast.yaml")
    p.set_defaults(func=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.config import json_schema

    print_json(json_schema())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.config import load_config

    # model groups are checked against the registry in the ledger (group_problems below, whose open is
    # bounded too): reach its server while the jobs' imports and Feast's repo load, as `run` does
    cfg = load_config(args.config, meanwhile=_reach_for_groups)
    from skyfeast.scheduler.errors import ConfigError
    from skyfeast.scheduler.run.preflight import group_problems

    problems = group_problems(cfg)  # model groups against the registry and their artifacts
    if problems:
        raise ConfigError(problems)
    from skyfeast.scheduler.cli.console import out

    out.print(f"{args.config}: ok ({len(cfg.providers)} provider(s), {len(cfg.jobs)} job(s), "
              f"Feast repo {cfg.feast_repo})")
    return 0


def _reach_for_groups(cfg):
    """:func:`~skyfeast.scheduler.ledger.reach_ledger` when a model-group job needs the ledger; else nothing."""
    if not any(j.kind == "model" and j.group is not None for j in cfg.jobs):
        return lambda: None
    from skyfeast.scheduler.ledger import reach_ledger

    return reach_ledger(cfg)
